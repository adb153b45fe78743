/*
 * Internals shared by the server's source files: the server handle, the
 * per-thread worker (database connection, PRNG), the per-request state, the
 * response under construction, and the statistics block.
 *
 * Hot-path rule: nothing here takes a lock per request.  Counters are
 * relaxed atomic adds; each worker publishes its database totals with
 * relaxed stores, and /stats sums them.
 */
#ifndef HS_SRV_INT_H
#define HS_SRV_INT_H

#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>

#include <microhttpd.h>

#include "cache.h"
#include "db.h"
#include "hs_buf.h"
#include "hs_hist.h"
#include "srv.h"
#include "srv_metrics.h"

/* Every route the server knows; stats are kept per route. */
enum srv_route {
	SRV_R_PLAINTEXT,
	SRV_R_JSON,
	SRV_R_DB,
	SRV_R_QUERIES,
	SRV_R_UPDATES,
	SRV_R_HEALTHZ,
	SRV_R_STATS,
	SRV_R_CATALOG,
	SRV_R_METRICS,
	SRV_R_PRODUCT_GET,
	SRV_R_PRODUCT_PUT,
	SRV_R_PRODUCT_DELETE,
	SRV_R_REVIEW_POST,
	SRV_R_CATEGORY_TOP,
	SRV_R_CACHED_QUERIES,
	SRV_R_OTHER,             /* 404, 405 and anything unrouted */
	SRV_R_COUNT
};

/* "GET /products/{id}" etc.; used as stats keys and metric labels. */
const char *srv_route_name(enum srv_route r);

struct srv_stats {
	uint64_t by_class[SRV_R_COUNT][6];  /* [route][status / 100] */
	uint64_t by_status[600];
	/* db_errors, inflight, cache_ns, ...: see srv_metrics.h (atomic) */
#define SRV_STATS_FIELD(f, ...) uint64_t f;
#define SRV_STATS_NOFIELD(...)
	SRV_METRICS(SRV_STATS_FIELD, SRV_STATS_NOFIELD)
#undef SRV_STATS_FIELD
#undef SRV_STATS_NOFIELD
	struct hs_hist latency[SRV_R_COUNT];
};

/*
 * One per MHD worker thread, created on its first request.  Only its own
 * thread touches db and rng; the pub_* fields are read by /stats.
 */
struct srv_worker {
	struct srv *srv;
	struct db *db;               /* NULL until opened (or after a failed open) */
	uint64_t rng;                /* hs_rng.h state */
	uint64_t pub_queries;        /* db_queries(db), published with relaxed stores */
	uint64_t pub_time_ns;        /* db_time_ns(db), likewise */
	uint64_t closed_queries;     /* totals of connections already closed */
	uint64_t closed_time_ns;
	struct srv_worker *next;     /* srv->workers list, guarded by srv->wlock */
};

/* Where a client connection is, for the connection guard (conns.c). */
enum srv_conn_state {
	SRV_CONN_HEAD_FIRST,         /**< new: its first head is due */
	SRV_CONN_HEAD_NEXT,          /**< keep-alive: the next head is due */
	SRV_CONN_BODY,               /**< head received, body arriving */
	SRV_CONN_ANSWER,             /**< request complete, being answered */
	SRV_CONN_CLOSING,            /**< shut down; MHD closes it next pass */
};

/* One per client connection (MHD's socket context), owned by its loop. */
struct srv_conn {
	enum srv_conn_state state;
	uint64_t deadline_ns;        /* the head's deadline (HEAD_* states) */
	struct srv_loop *loop;       /* NULL: not guarded */
	int fd;                      /* MHD's socket (borrowed) */
	int counted;                 /* holds a slot (srv->admitted, per IP) */
	int peer_closed;             /* the client shut its side */
	int rearmed;                 /* ... and its bytes were not all read */
	unsigned char addr[16];      /* client address, v4-mapped */
	TAILQ_ENTRY(srv_conn) link;  /* its loop's list for the HEAD_* wait */
};
TAILQ_HEAD(srv_conn_list, srv_conn);

/* One event loop per worker thread: its own MHD daemon and read batcher. */
struct srv_loop {
	struct srv *srv;
	struct MHD_Daemon *mhd;
	struct cache_batcher *batcher; /* NULL unless cfg.cache_batch > 0 */
	int resume_fd;               /* with database threads: an eventfd in
					MHD's epoll set (edge triggered) that
					a database thread writes after
					resuming a connection; else -1 */
	int quiesced_fd;             /* MHD's listening descriptor, handed back
					by MHD_quiesce_daemon (-1: not yet) */
	int watch_fd;                /* epoll set: its connections' EPOLLRDHUP,
					nested in MHD's */
	struct srv_conn_list head_first; /* HEAD_FIRST, in deadline order */
	struct srv_conn_list head_next;  /* HEAD_NEXT, likewise */
	pthread_t thread;
	int started;                 /* the thread runs (join it) */
};

struct srv {
	struct srv_config cfg;
	struct srv_loop *loops;      /* cfg.threads of them */
	int stopping;                /* atomic: loops exit */
	int wake_fd;                 /* eventfd: written once to stop the loops */
	int listen_fd;
	int port;
	uint64_t started_ns;
	int stopped;
	pthread_mutex_t wlock;       /* guards workers (taken once per thread) */
	struct srv_worker *workers;
	struct srv_pool *pool;       /* the database threads */
	struct srv_blocking *blocking; /* --io blocking's workers, else NULL */
	struct srv_stats stats;
	unsigned open_conns;         /* client connections open now (atomic) */
	unsigned admitted;           /* ... of which hold a slot (atomic) */
	struct srv_ip_table *ips;    /* slots per client address */
	uint64_t refused;            /* clients refused at a cap (atomic) */
	uint64_t head_timeouts;      /* connections closed with a 408 (atomic) */
	uint64_t refused_log_ns;     /* rate limits of their log lines */
	uint64_t head_timeout_log_ns;
	char idbuf[64];              /* the default id */
};

/* Request state kept by MHD between calls of the access handler. */
struct srv_req {
	enum srv_route route;
	int64_t id;                  /* {id} from the path, when the route has one */
	int err_status;              /* an error found in the headers (415, 400, ...) */
	const char *err_msg;
	const char *allow;           /* for 405 */
	int wants_body;              /* PUT / POST: keep the body */
	int answered;                /* a response has been queued */
	uint64_t t0_ns;
	size_t seen;                 /* body bytes received so far */
	struct hs_buf body;
	int batched;                 /* queued on the loop's read batcher */
	int batch_ready;             /* ... and answered: the answer is in batch */
	int batch_counted;           /* its waits are in the stats */
	struct cache_batcher *batcher; /* the batcher it is queued on */
	struct cache_batch_req batch;
	/* Handed to a database thread (the connection is suspended). */
	struct MHD_Connection *conn;
	struct srv_loop *loop;       /* the loop to wake when it is done */
	struct srv_req *pool_next;   /* the pool's queue */
	uint64_t pool_t0_ns;         /* when it was queued */
	uint64_t pool_db_ns;         /* database time of the pool's run */
	struct srv_conn *sconn;      /* its connection's guard state, or NULL */
	struct srv_resp *pool_resp;  /* the response it builds; MHD calls the
					handler again only once it is done */
};

/* The response a handler builds; the router turns it into an MHD response. */
struct srv_resp {
	int status;
	struct hs_buf body;
	const char *ctype;           /* default application/json */
	const char *allow;           /* Allow header, for 405 */
	const char *xcache;          /* X-Cache header on cacheable routes */
	int retry_after;             /* seconds; 0 = no header */
	uint64_t cache_ns;           /* Server-Timing cache;dur (memcached + lease wait) */
	int parked;                  /* no response yet: MHD calls again after
					the loop's multi-get */
	int offload;                 /* run the handler again on a database
					thread */
};

/* What a handler gets: its worker, the request, the connection. */
struct srv_ctx {
	struct srv *srv;
	struct srv_worker *w;
	struct srv_req *rq;
	struct MHD_Connection *conn;
};

/* --- server.c --- */
/* The calling thread's loop: NULL off the loop threads (database threads). */
struct srv_loop *srv_current_loop(void);
/* The calling thread's read batcher: NULL off the loop threads or with
   --cache-batch 0. */
struct cache_batcher *srv_loop_batcher(void);

/* --- conns.c: the connection guard --- */
struct srv_ip_table *srv_ip_table_new(void);
void srv_ip_table_free(struct srv_ip_table *t);
/* MHD_OPTION_NOTIFY_CONNECTION: slots, deadlines, the watch set. */
void srv_on_connection(void *cls, struct MHD_Connection *conn,
		       void **socket_context,
		       enum MHD_ConnectionNotificationCode code);
/* A request's connection state; NULL when the connection is not guarded. */
struct srv_conn *srv_conn_of(struct MHD_Connection *conn);
/* The request's head is in (the access handler's first call). */
void srv_conn_head_done(struct srv_conn *sc);
/* The request is complete and is being answered. */
void srv_conn_answering(struct srv_conn *sc);
/* Its response is sent (MHD's completion callback). */
void srv_conn_request_done(struct srv_conn *sc);
/* After each MHD pass: closes expired heads and peers that left. */
void srv_conns_sweep(struct srv_loop *l);
/* How long the loop may wait for events, in ms; -1: no deadline. */
int64_t srv_conns_wait_ms(struct srv_loop *l);

/* --- pool.c: the database threads --- */
/* Starts n threads; returns NULL with a message in err on failure. */
struct srv_pool *srv_pool_new(struct srv *s, int n, char *err, size_t errlen);
/* Queues a request whose connection the caller has suspended. */
void srv_pool_submit(struct srv_pool *p, struct srv_req *rq);
/*
 * Lets the running requests finish, joins the threads and frees p; queued
 * requests are dropped (their connections go with MHD_stop_daemon).
 */
void srv_pool_free(struct srv_pool *p);

/* --- blocking.c: --io blocking --- */
/*
 * Starts cfg.threads blocking workers on s->listen_fd (made blocking) and
 * sets s->blocking.  On failure returns -1 with a message in err; the
 * caller's stop then frees what was started.
 */
int srv_blocking_start(struct srv *s, char *err, size_t errlen);
/* Workers serving a connection now (0 for NULL). */
unsigned srv_blocking_busy(const struct srv_blocking *p);
/*
 * Joins the workers (after s->stopping, the wake-up and the listener's
 * shutdown) and stops their daemons, closing the connections they held.
 * NULL is a no-op.
 */
void srv_blocking_free(struct srv_blocking *p);

/* --- worker.c --- */
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

/* --- resp.c: response helpers --- */
/* Sets r to the JSON error {"error": msg, "status": status}. */
void srv_error(struct srv_resp *r, int status, const char *msg);
/* Appends a JSON error body to out; returns status (for body builders). */
int srv_error_body(struct hs_buf *out, int status, const char *msg);
/*
 * Maps a failed db_* result to a response: DB_BUSY / DB_MOVED / DB_ERR ->
 * 503 with Retry-After (logged, counted; after DB_MOVED and DB_ERR the
 * thread's connection is closed and reopened on its next request),
 * DB_NOTFOUND -> 404 with notfound_msg.  Returns the status.
 */
int srv_db_fail_body(struct srv_worker *w, int res, const char *what,
		     const char *notfound_msg, struct hs_buf *out);
void srv_db_fail(struct srv_worker *w, struct srv_resp *r, int res,
		 const char *what, const char *notfound_msg);
/* Appends a number rounded to 2 decimals, shortest form. */
void srv_json_avg(struct hs_buf *b, double v);
/*
 * Checks the request's Content-Type is application/json and parses body
 * as a JSON object.  On failure fills r (415 / 400 / 422) and returns NULL.
 * The caller json_decref()s the result.
 */
struct json_t;
struct json_t *srv_parse_json_object(struct srv_ctx *c, struct srv_resp *r);

/*
 * A cacheable GET: key -> (status, body).  The builder writes the whole
 * response body (a JSON error for non-200 statuses) and returns the HTTP
 * status; 503 means a database failure (never to be cached).  A cache
 * layer calls the builder on a miss and stores the body.
 */
typedef int (*srv_build_fn)(struct srv_worker *w, int64_t key,
			    struct hs_buf *out);
/* Writes the memcached key of id (cache_key_product etc.); returns its length. */
typedef int (*srv_key_fn)(char *buf, int64_t id);

/* --- cached.c: the cache step (hs_cache) --- */
/*
 * Serves a cacheable GET: through cache_fetch when the cache is on (X-Cache
 * HIT / MISS / BYPASS), else straight from build (BYPASS).  With the read
 * batcher on, the first call only parks the request (r->parked) until its
 * loop's batcher runs; the next call serves the batcher's hit as it is, or
 * goes through cache_fetch.
 */
void srv_serve_cacheable(struct srv_ctx *c, struct srv_resp *r,
			 srv_build_fn build, srv_key_fn keyfn, int64_t key);
/*
 * After a committed product write: deletes the product's body and its
 * category's top list (category_id <= 0: the product key only).
 */
void srv_cache_invalidate_product(struct srv_ctx *c, struct srv_resp *r,
				  int64_t id, int64_t category_id);
/* After a committed /updates: deletes the world rows' bodies. */
void srv_cache_invalidate_world(struct srv_ctx *c, struct srv_resp *r,
				const int32_t *ids, int n);
/* GET /cached-queries?count=N (TechEmpower): world rows via one multi-get. */
void srv_h_cached_queries(struct srv_ctx *c, struct srv_resp *r);
/* "off", "lease" or "naive". */
const char *srv_cache_mode(const struct srv *s);
/* "off", "ok" or "degraded" (for /healthz). */
const char *srv_cache_health(const struct srv *s);

/* --- products.c --- */
int srv_product_body(struct srv_worker *w, int64_t id, struct hs_buf *out);
int srv_category_top_body(struct srv_worker *w, int64_t id,
			  struct hs_buf *out);
void srv_h_product_get(struct srv_ctx *c, struct srv_resp *r);
void srv_h_product_put(struct srv_ctx *c, struct srv_resp *r);
void srv_h_product_delete(struct srv_ctx *c, struct srv_resp *r);
void srv_h_review_post(struct srv_ctx *c, struct srv_resp *r);
void srv_h_category_top(struct srv_ctx *c, struct srv_resp *r);

/* --- tfb.c: TechEmpower test types --- */
void srv_h_json(struct srv_ctx *c, struct srv_resp *r);
void srv_h_db(struct srv_ctx *c, struct srv_resp *r);
void srv_h_queries(struct srv_ctx *c, struct srv_resp *r);
void srv_h_updates(struct srv_ctx *c, struct srv_resp *r);
/* The N of ?queries=N: clamped to 1..500, missing or not a number -> 1. */
int srv_tfb_count(const char *arg);
/* One world row as the spec writes it: {"id":N,"randomNumber":N}. */
void srv_world_json(struct hs_buf *b, int32_t id, int32_t n);

/* --- stats.c --- */
void srv_stats_record(struct srv *s, enum srv_route route, int status,
		      uint64_t us);
void srv_h_healthz(struct srv_ctx *c, struct srv_resp *r);
void srv_h_stats(struct srv_ctx *c, struct srv_resp *r);
void srv_h_catalog(struct srv_ctx *c, struct srv_resp *r);
void srv_h_metrics(struct srv_ctx *c, struct srv_resp *r);

/* --- router.c --- */
/* What the head checks saw (srv_head_field), then their verdict. */
struct srv_head {
	int content_length;          /* Content-Length fields */
	int transfer_encoding;       /* Transfer-Encoding fields */
	int te_other;                /* one that is not exactly "chunked" */
	int host;                    /* Host fields */
	int err_status;              /* 0, or the status to answer */
	const char *err_msg;
};
/* Checks one header field (name a token, no control bytes in the value)
   and counts the framing fields. */
void srv_head_field(struct srv_head *h, const char *name, size_t nlen,
		    const char *value, size_t vlen);
/* After every field: sets h->err_status (400, 501, 505) or leaves 0. */
void srv_head_verdict(struct srv_head *h, const char *version);
/*
 * MHD_OPTION_UNESCAPE_CALLBACK: decodes %HH in place, except %00, which
 * stays as it is: a decoded NUL would end the path early
 * (/products/1%00abc served as product 1).  Returns the new length.
 */
size_t srv_unescape(void *cls, struct MHD_Connection *conn, char *s);
/*
 * Resolves method + path to a route.  Fills rq->route and rq->id, or
 * rq->err_status (404 unknown path, 405 + rq->allow, 400 bad id).
 */
void srv_route_resolve(const char *method, const char *url,
		       struct srv_req *rq);
/*
 * On a database thread: runs rq's handler into rq->pool_resp and records
 * its database time.
 */
void srv_run_on_pool(struct srv *s, struct srv_req *rq);
/* The MHD callbacks (router.c). */
enum MHD_Result srv_on_access(void *cls, struct MHD_Connection *conn,
			      const char *url, const char *method,
			      const char *version, const char *upload_data,
			      size_t *upload_data_size, void **con_cls);
void srv_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
		      enum MHD_RequestTerminationCode toe);

#endif
