/*
 * The per-thread worker (worker.c): a database connection opened on first
 * use, a PRNG, and the database totals /stats sums.
 */
#ifndef HS_SRV_WORKER_H
#define HS_SRV_WORKER_H

#include <stdint.h>

#include "srv_replica.h"

struct db;
struct srv;

/*
 * One per thread that serves requests, created on its first request.
 * Only its own thread touches db and rng; the pub_* fields are read by
 * /stats.
 */
struct srv_worker {
	struct srv *srv;
	struct db *db;        /* NULL until opened (or after a failed open) */
	uint64_t db_retry_ns; /* a PostgreSQL open failed: none before then */
	struct db *rdb[SRV_READ_MAX]; /* replicas (--db-read), likewise */
	unsigned rr;                  /* round robin over the replicas */
	uint64_t rng;                 /* hs_rng.h state */
	uint64_t pub_queries; /* db_queries(db), published with relaxed stores */
	uint64_t pub_time_ns;    /* db_time_ns(db), likewise */
	uint64_t closed_queries; /* totals of connections already closed */
	uint64_t closed_time_ns;
	struct srv_worker *next; /* srv->workers list, guarded by srv->wlock */
};

/* The calling thread's worker (created on first use). */
struct srv_worker *srv_worker_get(struct srv *s);
/*
 * The worker's database connection, opened on first use.  NULL when the
 * database cannot be opened (logged; the caller answers 503).
 */
struct db *srv_worker_db(struct srv_worker *w);
/* After a DB_ERR: closes the connection so the next request reopens it. */
void srv_worker_db_reset(struct srv_worker *w);
/* Database time spent by this worker so far, across reopened connections. */
uint64_t srv_worker_db_ns(struct srv_worker *w);
/* Publishes the worker's database totals for /stats. */
void srv_worker_publish(struct srv_worker *w);
/* Uniform random integer in [lo, hi]. */
int32_t srv_rand_range(struct srv_worker *w, int32_t lo, int32_t hi);
/*
 * Sum of every worker's database query count and time; *nworkers (if not
 * NULL) gets how many workers (database connections) there are.
 */
void srv_db_totals(struct srv *s, uint64_t *queries, uint64_t *time_ns,
		   int *nworkers);
/* Closes every worker's database (after the MHD threads have stopped). */
void srv_workers_free(struct srv *s);

#endif
