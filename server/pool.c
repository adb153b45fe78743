/*
 * The database threads (--db-threads N > 0).  The event loops then never
 * touch SQLite: a request that needs the database (an uncached read, a
 * cache miss, a write, /healthz, the TechEmpower database tests) has its
 * connection suspended and is queued here.  A database thread calls the
 * pool's run callback (the router's: the route's handler, with the
 * thread's own database connection and memcached handle, the response left
 * in the request), resumes the connection and wakes the request's loop,
 * which sends the response on its next pass.
 *
 * So a loop's cache hits never wait behind a database query or a lease
 * wait, and loops and database threads are sized apart: hits want few
 * loops (bigger multi-gets, fewer threads on the cores), database threads
 * also wait (leases, SQLite's write lock).  The hand-off costs about 6.5
 * system calls per request; README, "Database threads", has when it wins.
 *
 * The queue is a mutex and a condition variable, FIFO.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hs_log.h"
#include "hs_util.h"
#include "srv_core.h"
#include "srv_pool.h"
#include "srv_req.h"

struct srv_pool {
	struct srv *srv;
	srv_pool_run_fn run; /* what a database thread does with rq */
	void *run_arg;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct srv_req *head, *tail; /* FIFO, guarded by lock */
	int stopping;                /* guarded by lock */
	int nthreads;                /* started */
	pthread_t *threads;
};

/* Wakes the loop that owns rq's connection (see srv_loop.resume_fd). */
static void
wake_loop(struct srv_loop *l)
{
	uint64_t one = 1;

	if (write(l->resume_fd, &one, sizeof(one)) < 0)
		log_warn_rl("cannot wake a loop");
}

static void *
pool_main(void *arg)
{
	struct srv_pool *p = arg;
	struct srv *s = p->srv;

	for (;;) {
		struct srv_req *rq;
		struct MHD_Connection *conn;
		struct srv_loop *loop;

		pthread_mutex_lock(&p->lock);
		while (p->head == NULL && !p->stopping)
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->stopping) {
			pthread_mutex_unlock(&p->lock);
			return NULL;
		}
		rq = p->head;
		p->head = rq->pool_next;
		if (p->head == NULL)
			p->tail = NULL;
		pthread_mutex_unlock(&p->lock);

		__atomic_fetch_add(&s->stats.db_queue_ns,
				   hs_now_ns() - rq->pool_t0_ns,
				   __ATOMIC_RELAXED);
		__atomic_fetch_add(&s->stats.db_jobs, 1, __ATOMIC_RELAXED);
		p->run(p->run_arg, rq);
		/*
		 * rq belongs to the loop again from here on: once resumed,
		 * the connection may be served and rq freed at any moment.
		 */
		conn = rq->conn;
		loop = rq->loop;
		MHD_resume_connection(conn);
		wake_loop(loop);
	}
}

struct srv_pool *
srv_pool_new(struct srv *s, int n, srv_pool_run_fn run, void *arg, char *err,
	     size_t errlen)
{
	struct srv_pool *p = hs_xcalloc(1, sizeof(*p));

	p->srv = s;
	p->run = run;
	p->run_arg = arg;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->threads = hs_xcalloc((size_t)n, sizeof(*p->threads));
	for (int i = 0; i < n; i++) {
		int rc = pthread_create(&p->threads[i], NULL, pool_main, p);

		if (rc != 0) {
			snprintf(err, errlen,
				 "cannot start a database thread: %s",
				 strerror(rc));
			srv_pool_free(p);
			return NULL;
		}
		p->nthreads++;
	}
	return p;
}

void
srv_pool_submit(struct srv_pool *p, struct srv_req *rq)
{
	rq->pool_next = NULL;
	rq->pool_t0_ns = hs_now_ns();
	pthread_mutex_lock(&p->lock);
	if (p->tail != NULL)
		p->tail->pool_next = rq;
	else
		p->head = rq;
	p->tail = rq;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

void
srv_pool_free(struct srv_pool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p->threads);
	free(p);
}
