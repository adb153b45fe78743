/*
 * The database threads (pool.c): a FIFO of requests whose connections are
 * suspended, run by a callback on n threads, each request's connection
 * resumed and its loop woken afterwards.
 */
#ifndef HS_SRV_POOL_H
#define HS_SRV_POOL_H

#include <stddef.h>

struct srv;
struct srv_req;

/* Runs one request on a database thread (arg as given to srv_pool_new). */
typedef void (*srv_pool_run_fn)(void *arg, struct srv_req *rq);

/* Starts n threads that call run(arg, rq) for each queued request;
   returns NULL with a message in err on failure. */
struct srv_pool *srv_pool_new(struct srv *s, int n, srv_pool_run_fn run,
			      void *arg, char *err, size_t errlen);
/* Queues a request whose connection the caller has suspended. */
void srv_pool_submit(struct srv_pool *p, struct srv_req *rq);
/*
 * Lets the running requests finish, joins the threads and frees p; queued
 * requests are dropped (their connections go with MHD_stop_daemon).
 */
void srv_pool_free(struct srv_pool *p);

#endif
