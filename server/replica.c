/*
 * Reads from streaming replicas, and read-your-writes marks (see
 * srv_replica.h).
 */
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include "hs_buf.h"
#include "hs_log.h"
#include "hs_util.h"
#include "db.h"
#include "srv_core.h"
#include "srv_replica.h"
#include "srv_worker.h"

/* How long a replica that failed is left alone by a worker. */
#define REPLICA_RETRY_NS 1000000000ull
#define MARK_UNKNOWN     UINT64_MAX

static uint64_t
key_slot(uint64_t kind, int64_t id)
{
	/* Fibonacci hashing: ids next to each other land far apart. */
	return (((uint64_t)id << 1 | kind) * 0x9e3779b97f4a7c15ull) >> 52;
}

uint64_t
srv_key_product(int64_t id)
{
	return key_slot(0, id);
}

uint64_t
srv_key_category(int64_t id)
{
	return key_slot(1, id);
}

static uint64_t
ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void
inc(uint64_t *p)
{
	__atomic_fetch_add(p, 1, __ATOMIC_RELAXED);
}

static void
store_max(uint64_t *p, uint64_t v)
{
	uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);

	while (cur < v &&
	       !__atomic_compare_exchange_n(p, &cur, v, 0, __ATOMIC_RELEASE,
					    __ATOMIC_RELAXED))
		;
}

/* The worker's connection to replica i, opened on first use; NULL (and
   the replica skipped for a while) when it cannot be opened. */
static struct db *
replica_db(struct srv_worker *w, int i)
{
	struct srv_replica *rep = &w->srv->reps->r[i];
	char err[256];

	if (w->rdb[i] != NULL)
		return w->rdb[i];
	w->rdb[i] = db_open(rep->url, 0, w->srv->cfg.busy_timeout_ms, err,
			    sizeof(err));
	if (w->rdb[i] == NULL) {
		log_warnx_rl("cannot open replica %s: %s; reading from the "
			     "primary meanwhile",
			     rep->url, err);
		w->rdown_ns[i] = hs_now_ns() + REPLICA_RETRY_NS;
	}
	return w->rdb[i];
}

static void
replica_reset(struct srv_worker *w, int i)
{
	if (w->rdb[i] == NULL)
		return;
	w->closed_queries += db_queries(w->rdb[i]);
	w->closed_time_ns += db_time_ns(w->rdb[i]);
	db_close(w->rdb[i]);
	w->rdb[i] = NULL;
}

/* 1 when replica i has replayed mark (asking it when not known yet). */
static int
replayed(struct srv_worker *w, int i, struct db *db, uint64_t mark)
{
	struct srv_replica *rep = &w->srv->reps->r[i];
	struct db_repl st;

	if (mark == 0 ||
	    __atomic_load_n(&rep->replayed_lsn, __ATOMIC_ACQUIRE) >= mark)
		return 1;
	if (mark == MARK_UNKNOWN || db_repl_status(db, &st) != DB_OK)
		return 0;
	store_max(&rep->replayed_lsn, st.lsn);
	return st.lsn >= mark;
}

struct db *
srv_read_db(struct srv_worker *w, uint64_t key, int *ri)
{
	struct srv_replicas *reps = w->srv->reps;
	uint64_t now, mark;
	int behind = -1;

	*ri = -1;
	if (reps == NULL)
		return srv_worker_db(w);
	now = hs_now_ns();
	mark = reps->ryw ? __atomic_load_n(&reps->marks[key % SRV_MARKS],
					   __ATOMIC_ACQUIRE)
			 : 0;
	for (int k = 0; k < reps->n; k++) {
		int i = (int)(w->rr++ % (unsigned)reps->n);
		struct db *db;

		if (w->rdown_ns[i] > now || (db = replica_db(w, i)) == NULL)
			continue;
		if (!replayed(w, i, db, mark)) {
			behind = i;
			continue;
		}
		*ri = i;
		return db;
	}
	if (behind >= 0)
		inc(&reps->r[behind].behind);
	inc(&reps->primary_reads);
	return srv_worker_db(w);
}

int
srv_read_retry(struct srv_worker *w, uint64_t key, int ri, int res)
{
	struct srv_replicas *reps = w->srv->reps;
	struct db_repl st;

	if (ri < 0) {
		/* Served by the primary: a mark whose position was not known
		   can now be set from the primary's, which is past the write. */
		if (reps &&
		    __atomic_load_n(&reps->marks[key % SRV_MARKS],
				    __ATOMIC_RELAXED) == MARK_UNKNOWN &&
		    res >= 0 && w->db && db_repl_status(w->db, &st) == DB_OK) {
			uint64_t unk = MARK_UNKNOWN;

			__atomic_compare_exchange_n(
				&reps->marks[key % SRV_MARKS], &unk, st.lsn, 0,
				__ATOMIC_RELEASE, __ATOMIC_RELAXED);
		}
		return 0;
	}
	if (res >= 0) {
		inc(&reps->r[ri].reads);
		return 0;
	}
	/* DB_BUSY here is mostly a query cancelled by a replay conflict;
	   DB_ERR a lost connection.  Either way, ask elsewhere. */
	inc(&reps->r[ri].errors);
	log_warnx_rl("read on replica %s failed: %s; reading elsewhere",
		     reps->r[ri].url, db_errmsg(w->rdb[ri]));
	w->rdown_ns[ri] = hs_now_ns() + REPLICA_RETRY_NS;
	if (res == DB_ERR)
		replica_reset(w, ri);
	return 1;
}

void
srv_read_wrote(struct srv_worker *w, const uint64_t *keys, int n)
{
	struct srv_replicas *reps = w->srv->reps;
	struct db_repl st;
	uint64_t lsn = MARK_UNKNOWN;

	if (reps == NULL || !reps->ryw)
		return;
	/* The primary's written WAL now is at or past this commit's end. */
	if (w->db == NULL || db_repl_status(w->db, &st) != DB_OK)
		log_warnx_rl("WAL position after a write: %s; reads of its keys "
			     "go to the primary",
			     w->db ? db_errmsg(w->db) : "no connection");
	else
		lsn = st.lsn;
	for (int i = 0; i < n; i++)
		store_max(&reps->marks[keys[i] % SRV_MARKS], lsn);
}

void
srv_replicas_stats(struct srv_worker *w, struct hs_buf *b)
{
	struct srv_replicas *reps = w->srv->reps;
	struct db_repl prim, st;
	int have_prim;

	if (reps == NULL)
		return;
	have_prim = w->db != NULL || srv_worker_db(w) != NULL;
	have_prim = have_prim && db_repl_status(w->db, &prim) == DB_OK;
	hs_buf_printf(b,
		      ",\"replicas\":{\"read_your_writes\":%s,"
		      "\"primary_reads\":%" PRIu64 ",\"list\":[",
		      reps->ryw ? "true" : "false", ld(&reps->primary_reads));
	for (int i = 0; i < reps->n; i++) {
		struct srv_replica *rep = &reps->r[i];
		struct db *db =
			w->rdown_ns[i] > hs_now_ns() ? NULL : replica_db(w, i);
		int up = db != NULL && db_repl_status(db, &st) == DB_OK;

		if (db != NULL && !up)
			replica_reset(w, i);
		if (up)
			store_max(&rep->replayed_lsn, st.lsn);
		hs_buf_printf(b, "%s{\"url\":", i ? "," : "");
		hs_buf_json_str(b, rep->url);
		hs_buf_printf(b,
			      ",\"up\":%s,\"reads\":%" PRIu64
			      ",\"errors\":%" PRIu64 ",\"behind\":%" PRIu64,
			      up ? "true" : "false", ld(&rep->reads),
			      ld(&rep->errors), ld(&rep->behind));
		/* Sampled now: the primary's WAL written minus replayed. */
		if (up && have_prim)
			hs_buf_printf(b, ",\"lag_bytes\":%" PRIu64,
				      prim.lsn > st.lsn ? prim.lsn - st.lsn
							: 0);
		else
			hs_buf_puts(b, ",\"lag_bytes\":null");
		if (up && st.replay_age_ms >= 0)
			hs_buf_printf(b, ",\"replay_age_ms\":%" PRId64,
				      st.replay_age_ms);
		else
			hs_buf_puts(b, ",\"replay_age_ms\":null");
		hs_buf_puts(b, "}");
	}
	hs_buf_puts(b, "]}");
}

void
srv_worker_rdb_close(struct srv_worker *w)
{
	for (int i = 0; i < SRV_READ_MAX; i++)
		replica_reset(w, i);
}
