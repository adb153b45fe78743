/*
 * hs-balancer's internal interface: configuration, backends and the backend
 * set, workers (one event loop per thread) and the entry points of the
 * proxy, health-check and admin modules.  The balancing policies' table is
 * in policy.h.
 *
 * Ownership: struct bal_app owns everything.  Backends are created by
 * bal_set_load() and live until bal_backends_free() at exit; a reload
 * publishes a new immutable struct bal_set (atomically) and keeps the old
 * ones until exit, so a worker may use the set it loaded for as long as it
 * likes.
 */
#ifndef BAL_H
#define BAL_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "hs_hist.h"
#include "parse.h"
#include "policy.h"

struct event_base;
struct event;
struct evconnlistener;
struct bal_hc;

#define BAL_MAX_BACKENDS 256
#define BAL_HOST_MAX     256
#define BAL_MAX_DENY     32
/*
 * Descriptors kept out of --max-conns (listeners, loop internals, the admin
 * port and its clients, health checks), besides 8 per worker and one per
 * backend; clients get 3/4 of the rest and backend connections 1/4 (one
 * per request in flight, plus the pools).  Past that, a request that needs
 * a new backend connection is answered 503; the backend is not blamed.
 */
#define BAL_FD_RESERVE 64
/* After an accept fails for want of descriptors, the listener rests. */
#define BAL_ACCEPT_PAUSE_MS 200

enum bal_algo { BAL_ALGO_RR = 0, BAL_ALGO_LEASTCONN };

/* Statuses the balancer answers itself, counted in bal_app.errors. */
#define BAL_NERR 11
extern const int bal_err_status[BAL_NERR];
int bal_err_index(int status);

struct bal_spec {
	char host[BAL_HOST_MAX];
	int port;
	int weight;
};

struct bal_config {
	char listen_host[BAL_HOST_MAX];
	int listen_port;
	char admin_host[BAL_HOST_MAX];
	int admin_port;
	enum bal_algo algo;
	const char *backends_file; /* NULL if none */
	char health_path[1024];
	int health_interval_ms, rise, fall;
	int connect_timeout_ms, header_timeout_ms, idle_timeout_ms;
	int backend_timeout_ms, drain_timeout_ms;
	int max_conns, max_conns_given;
	int64_t max_body;
	/* Path prefixes answered 404 to clients (--deny-path); argv strings. */
	const char *deny[BAL_MAX_DENY];
	int ndeny, deny_given;
	int workers;
	struct bal_limits lim;
	int nspecs;
	struct bal_spec specs[BAL_MAX_BACKENDS]; /* from --backend */
};

/*
 * The counters, one line each and in export order, for the process
 * (BAL_COUNTERS) and per backend (BAL_BACKEND_COUNTERS):
 *   X(field, C type, JSON key, Prometheus name after "hs_balancer_"
 *     (backend_...), type, unit, help)
 * Each list is the fields of its struct and the rows of /stats and
 * /metrics (admin.c): a new counter is one line plus its BAL_INC.  A NULL
 * JSON key or Prometheus name leaves the row out of that export; type and
 * unit are hs_metrics.h's without the HS_ / HS_UNIT_ prefix.
 */
#define BAL_COUNTERS(X)                                                    \
	X(conns, int64_t, "connections", "connections", GAUGE, COUNT,      \
	  "Client connections open.")                                      \
	X(accepted, int64_t, "accepted", "accepted_total", COUNTER, COUNT, \
	  "Client connections accepted.")                                  \
	X(rejected, int64_t, "rejected", "rejected_total", COUNTER, COUNT, \
	  "Client connections answered 503 at --max-conns.")               \
	X(draining, int, "draining", NULL, GAUGE, BOOL, NULL)

#define BAL_BACKEND_COUNTERS(X)                                               \
	X(up, int, "up", "backend_up", GAUGE, BOOL,                           \
	  "1 while the backend passes its health checks.")                    \
	X(removed, int, "removed", NULL, GAUGE, BOOL, NULL)                   \
	X(weight, int, "weight", NULL, GAUGE, COUNT, NULL)                    \
	X(active, int64_t, "active", "backend_active_requests", GAUGE, COUNT, \
	  "Requests in flight to the backend.")                               \
	X(conns, int64_t, "connections", "backend_connections", GAUGE, COUNT, \
	  "Connections open to the backend.")                                 \
	X(requests, int64_t, "requests", "backend_requests_total", COUNTER,   \
	  COUNT, "Requests sent to the backend.")                             \
	X(failures, int64_t, "failures", "backend_failures_total", COUNTER,   \
	  COUNT,                                                              \
	  "Attempts on the backend that failed (connect, I/O, "               \
	  "timeout).")                                                        \
	X(retries, int64_t, "retries", "backend_retries_total", COUNTER,      \
	  COUNT, "Requests retried after a failure on the backend.")
#define BAL_FIELD(f, ctype, ...) ctype f;

/* Counters are updated with relaxed atomics from any worker. */
struct bal_backend {
	int id; /* index into per-worker tables, unique for the run */
	char host[BAL_HOST_MAX];
	int port;
	char name[BAL_HOST_MAX + 8]; /* "host:port" */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	/* up, removed (by a reload), weight, active, ...: atomic, above */
	BAL_BACKEND_COUNTERS(BAL_FIELD)
	int64_t resp[6]; /* by class: [1]=1xx .. [5]=5xx, [0]=no answer */
	struct hs_hist lat;
	/* Health-check state, touched only by the health module's thread. */
	struct bal_hc *hc;
	TAILQ_ENTRY(bal_backend) all;
};

struct bal_set {
	int n;
	struct bal_backend **b;
	struct bal_set *older; /* kept until exit */
};

struct bal_worker;
struct bal_admin;

struct bal_app {
	struct bal_config cfg;
	const struct bal_policy_ops *policy;
	struct bal_set *set; /* current; read with __atomic_load_n */
	pthread_mutex_t reload_lock;
	TAILQ_HEAD(, bal_backend) backends;
	int next_id;
	BAL_COUNTERS(BAL_FIELD)   /* global, atomic */
	int64_t errors[BAL_NERR]; /* our own error answers */
	int nworkers;
	struct bal_worker **workers;
	struct event_base *base; /* worker 0's: signals, health, admin */
	struct bal_admin *admin;
	struct event *ev_term, *ev_int, *ev_hup;
	int bound_port, admin_bound_port;
};

/* Backend list and reload (backend.c). */
int bal_spec_parse(const char *s, struct bal_spec *out);
/*
 * Builds a set from cfg->specs plus cfg->backends_file (if any), reusing
 * backends of the current set with the same host:port, and publishes it.
 * Returns 0, or -1 with a message in err (the current set is kept).
 */
int bal_set_load(struct bal_app *app, char *err, size_t errlen);
static inline struct bal_set *
bal_set_current(struct bal_app *app)
{
	return __atomic_load_n(&app->set, __ATOMIC_ACQUIRE);
}
void bal_backends_free(struct bal_app *app);

#define BAL_INC(p, n) __atomic_fetch_add((p), (n), __ATOMIC_RELAXED)
#define BAL_GET(p)    __atomic_load_n((p), __ATOMIC_RELAXED)

/* May a policy pick b: up, still in the set, and not already tried? */
static inline int
bal_backend_usable(const struct bal_backend *b, const unsigned char *tried)
{
	return BAL_GET(&b->up) && !BAL_GET(&b->removed) &&
	       (tried == NULL || !tried[b->id]);
}

/* A failure of ours (descriptors, memory), not of the peer we talked to. */
static inline int
bal_err_local(int e)
{
	return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

/* Marks a backend down or up and logs the change (any thread). */
void bal_backend_set_up(struct bal_backend *b, int up, const char *why);

/* Workers (worker.c; the proxy path is described in client.h). */
struct bal_worker *bal_worker_new(struct bal_app *app, int idx,
				  struct event_base *base, int listen_fd);
void bal_worker_free(struct bal_worker *w);
/* Starts draining: stop accepting, finish in-flight requests (thread-safe). */
void bal_worker_drain(struct bal_worker *w);

/* Health checks on app->base (health.c). */
void bal_health_sync(struct bal_app *app);
void bal_health_stop(struct bal_app *app);

/* Admin listener (admin.c).  Returns NULL and logs on failure. */
struct bal_admin *bal_admin_new(struct bal_app *app, const char *host, int port,
				int *bound);
void bal_admin_free(struct bal_admin *a);
/* Renders /stats or /metrics into out. */
struct hs_buf;
void bal_stats_json(struct bal_app *app, struct hs_buf *out);
void bal_stats_prom(struct bal_app *app, struct hs_buf *out);

#endif
