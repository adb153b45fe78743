/*
 * Per-thread worker state: each thread that queries (an event loop, or a
 * database thread with --db-threads) gets its own database connection
 * (struct db is not thread-safe, and one connection per thread keeps its
 * prepared statements hot) and its own PRNG.  Workers are created lazily
 * on a thread's first request and freed by srv_free() once every thread
 * has stopped.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hs_log.h"
#include "hs_rng.h"
#include "hs_util.h"
#include "db.h"
#include "srv_core.h"
#include "srv_worker.h"

/* A thread serves one server, so one pointer per thread suffices. */
static __thread struct srv_worker *tls_worker;

struct srv_worker *
srv_worker_get(struct srv *s)
{
	struct srv_worker *w = tls_worker;

	if (w != NULL && w->srv == s)
		return w;
	w = hs_xcalloc(1, sizeof(*w));
	w->srv = s;
	/* Distinct seeds per thread and process. */
	w->rng = hs_now_ns() ^ ((uint64_t)syscall(SYS_gettid) << 32) ^
		 (uint64_t)(uintptr_t)w;
	pthread_mutex_lock(&s->wlock);
	w->next = s->workers;
	s->workers = w;
	pthread_mutex_unlock(&s->wlock);
	tls_worker = w;
	return w;
}

struct db *
srv_worker_db(struct srv_worker *w)
{
	char err[256];

	if (w->db != NULL)
		return w->db;
	/* A PostgreSQL server that did not answer is asked again a second
	   later, not by every request (each would wait a connect timeout). */
	if (hs_now_ns() < w->db_retry_ns)
		return NULL;
	/* Never DB_OPEN_CREATE: a deleted file stays an error until one is
	   put back, rather than an empty database taking writes. */
	w->db = db_open(w->srv->cfg.db_path,
			w->srv->cfg.durability_full ? DB_OPEN_SYNC_FULL : 0,
			w->srv->cfg.busy_timeout_ms, err, sizeof(err));
	if (w->db == NULL) {
		log_error_rl("cannot open database %s: %s", w->srv->cfg.db_path,
			     err);
		if (db_is_url(w->srv->cfg.db_path))
			w->db_retry_ns = hs_now_ns() + 1000000000ull;
	}
	return w->db;
}

void
srv_worker_db_reset(struct srv_worker *w)
{
	if (w->db == NULL)
		return;
	w->closed_queries += db_queries(w->db);
	w->closed_time_ns += db_time_ns(w->db);
	db_close(w->db);
	w->db = NULL;
}

uint64_t
srv_worker_db_ns(struct srv_worker *w)
{
	uint64_t t = w->closed_time_ns + (w->db ? db_time_ns(w->db) : 0);

	for (int i = 0; i < SRV_READ_MAX; i++)
		if (w->rdb[i] != NULL)
			t += db_time_ns(w->rdb[i]);
	return t;
}

void
srv_worker_publish(struct srv_worker *w)
{
	uint64_t q = w->closed_queries + (w->db ? db_queries(w->db) : 0);

	for (int i = 0; i < SRV_READ_MAX; i++)
		if (w->rdb[i] != NULL)
			q += db_queries(w->rdb[i]);

	__atomic_store_n(&w->pub_queries, q, __ATOMIC_RELAXED);
	__atomic_store_n(&w->pub_time_ns, srv_worker_db_ns(w),
			 __ATOMIC_RELAXED);
}

int32_t
srv_rand_range(struct srv_worker *w, int32_t lo, int32_t hi)
{
	return lo + (int32_t)hs_rng_below(&w->rng, (uint32_t)(hi - lo + 1));
}

void
srv_db_totals(struct srv *s, uint64_t *queries, uint64_t *time_ns,
	      int *nworkers)
{
	uint64_t q = 0, t = 0;
	int n = 0;

	pthread_mutex_lock(&s->wlock);
	for (struct srv_worker *w = s->workers; w != NULL; w = w->next) {
		q += __atomic_load_n(&w->pub_queries, __ATOMIC_RELAXED);
		t += __atomic_load_n(&w->pub_time_ns, __ATOMIC_RELAXED);
		n++;
	}
	pthread_mutex_unlock(&s->wlock);
	*queries = q;
	*time_ns = t;
	if (nworkers != NULL)
		*nworkers = n;
}

void
srv_workers_free(struct srv *s)
{
	struct srv_worker *w, *next;

	pthread_mutex_lock(&s->wlock);
	for (w = s->workers; w != NULL; w = next) {
		next = w->next;
		db_close(w->db);
		srv_worker_rdb_close(w);
		free(w);
	}
	s->workers = NULL;
	pthread_mutex_unlock(&s->wlock);
}
