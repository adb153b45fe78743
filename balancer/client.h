/*
 * Connections of the proxy path and their life cycles: the client
 * connection (struct bal_client), the backend connection (struct
 * bal_bconn) and the worker that holds both (struct bal_worker).  client.c
 * implements their life: creation, the one state setter of each (checked
 * against a table), timers, the balancer's own error answers, closing and
 * the freeing of closed objects.  The request / response flow is proxy.c's
 * (proxy.h); accepting and draining are worker.c's.
 *
 * Closing and freeing: bal_client_close() and bal_bconn_close() release
 * the socket, the events and the counters at once, set the state CLOSED
 * and move the object to its worker's closed list; the memory stays valid
 * until bal_worker_reap(), which every event callback of the proxy path
 * calls last.  So a function deep in a callback may close either side and
 * its callers only need to look at the state, never at freed memory (the
 * way redis ae.c keeps a deleted timer while a callback runs it).
 */
#ifndef BAL_CLIENT_H
#define BAL_CLIENT_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/queue.h>

#include "bal.h"
#include "io.h"
#include "parse.h"

/* Back-pressure: stop reading a side while the other's output exceeds it. */
#define BAL_HIGH_WM       (256 * 1024)
#define BAL_LOW_WM        (64 * 1024)
#define BAL_MAX_RESP_HEAD (64 * 1024)
#define BAL_MAX_TRIES     8
#define BAL_POOL_IDLE_MS  15000

/*
 * A client connection's states, X(name, what it means); the timer that
 * runs in each is named after it.  The legal transitions are the table in
 * client.c.
 */
#define BAL_CLIENT_STATES(X)                                                \
	X(NEW, "accepted, no byte yet: the head deadline runs from accept") \
	X(IDLE, "keep-alive, between requests: idle timeout")               \
	X(HEAD, "a request head is arriving: head deadline")                \
	X(BODY, "its body is arriving: head timeout per progress")          \
	X(WAIT, "request sent, waiting for or relaying the response")       \
	X(FULL, "answered, but the client is not reading: the next "        \
		"pipelined request waits until its output drains below "    \
		"BAL_LOW_WM (idle timeout)")                                \
	X(CLOSING, "flushing a last answer before closing")                 \
	X(LINGER, "our side shut: discarding input until the peer closes")  \
	X(CLOSED, "closed: freed by bal_worker_reap()")
#define BAL_CS_ENUM(name, doc) BAL_CS_##name,
enum bal_client_state { BAL_CLIENT_STATES(BAL_CS_ENUM) BAL_CS_COUNT };

/* A backend connection's states. */
#define BAL_BCONN_STATES(X)                                            \
	X(CONNECTING, "connect(2) in progress: connect timeout")       \
	X(IDLE, "in its worker's pool, no request: pool idle timeout") \
	X(SENT, "carrying a request, no final response head yet")      \
	X(BODY, "relaying the response body to the client")            \
	X(CLOSED, "closed: freed by bal_worker_reap()")
#define BAL_BS_ENUM(name, doc) BAL_BS_##name,
enum bal_bconn_state { BAL_BCONN_STATES(BAL_BS_ENUM) BAL_BS_COUNT };

/* How a request body is framed. */
enum bal_body {
	BAL_BODY_NONE,   /**< no body */
	BAL_BODY_CL,     /**< Content-Length bytes */
	BAL_BODY_CHUNKED /**< chunked framing, walked to find its end */
};

/* How a response body ends. */
enum bal_resp_end {
	BAL_RESP_NONE,    /**< no body (HEAD, 204, 304, Content-Length: 0) */
	BAL_RESP_CL,      /**< after Content-Length bytes */
	BAL_RESP_CHUNKED, /**< at the end of the chunked framing */
	BAL_RESP_CLOSE    /**< when the backend closes */
};

struct bal_bconn;

struct bal_client {
	struct bal_worker *w;
	struct bal_io io;
	struct event tmr;
	enum bal_client_state state; /* only through bal_client_set_state */
	int eof;                     /* the client half-closed */
	struct bal_bconn *bc;        /* the backend carrying its request */
	char ip[INET6_ADDRSTRLEN];
	/* The request in progress. */
	enum bal_method method;
	int version_minor;
	int req_ka; /* the client wants keep-alive */
	enum bal_body body_kind;
	int body_done;    /* the whole body went to the backend */
	int resp_started; /* a byte of the answer is queued to the client */
	int can_retry;    /* idempotent and body-less: may go to another */
	int retried;      /* and it did, once */
	int close_after;  /* close once this answer is out */
	uint64_t body_left;
	struct bal_chunk chunk;
	int tried[BAL_MAX_TRIES], ntried;
	char *fwd; /* forwarded head, kept for re-dispatch */
	size_t fwd_len, fwd_cap;
	uint64_t t0;
	TAILQ_ENTRY(bal_client) link; /* clients, then closed_clients */
};

struct bal_bconn {
	struct bal_io io;
	struct event tmr;
	struct bal_worker *w;
	struct bal_backend *be;
	struct bal_client *c; /* NULL while pooled (or closing) */
	enum bal_bconn_state state;
	int counted; /* connected: counted in be->conns */
	enum bal_resp_end resp_kind;
	int resp_ka, status;
	uint64_t resp_left;
	struct bal_chunk chunk;
	TAILQ_ENTRY(bal_bconn) link; /* idle[be->id], then closed_bconns */
};

TAILQ_HEAD(bal_bconn_list, bal_bconn);
TAILQ_HEAD(bal_client_list, bal_client);

struct bal_worker {
	struct bal_app *app;
	int idx;
	struct event_base *base;
	struct evconnlistener *lis;
	void *pstate;
	struct bal_bconn_list idle[BAL_MAX_BACKENDS];
	struct bal_client_list clients;
	int nclients;
	/* Closed this callback, freed by bal_worker_reap(). */
	struct bal_client_list closed_clients;
	struct bal_bconn_list closed_bconns;
	const struct timeval *tv_idle, *tv_header, *tv_backend, *tv_connect,
		*tv_linger, *tv_pool;
	struct event *ev_drain, *ev_deadline;
	struct event *ev_resume; /* re-enables lis after an accept pause */
	int draining, finished;
	unsigned char tried[BAL_MAX_BACKENDS];
	struct bal_msg msg; /* parse scratch: one parse at a time per worker */
	char *scratch;
	size_t scratch_cap;
};

/*
 * The state tables (client.c): bit t of [f] is set when f may go to t.
 * The checks below are inline because they run several times a request.
 */
extern const unsigned bal_client_next[BAL_CS_COUNT];
extern const unsigned bal_bconn_next[BAL_BS_COUNT];

/* May a connection go from one state to the other?  Staying is allowed. */
static inline int
bal_client_state_ok(enum bal_client_state from, enum bal_client_state to)
{
	return (unsigned)from < BAL_CS_COUNT && (unsigned)to < BAL_CS_COUNT &&
	       (from == to || (bal_client_next[from] & (1u << to)) != 0);
}

static inline int
bal_bconn_state_ok(enum bal_bconn_state from, enum bal_bconn_state to)
{
	return (unsigned)from < BAL_BS_COUNT && (unsigned)to < BAL_BS_COUNT &&
	       (from == to || (bal_bconn_next[from] & (1u << to)) != 0);
}

const char *bal_client_state_name(enum bal_client_state s);
const char *bal_bconn_state_name(enum bal_bconn_state s);
/* Logs a refused change (rate-limited) and returns -1. */
int bal_client_state_refused(const struct bal_client *c,
			     enum bal_client_state to);
int bal_bconn_state_refused(const struct bal_bconn *bc,
			    enum bal_bconn_state to);

/*
 * The one way to change a state: returns 0, or -1 (logged, rate-limited,
 * state unchanged) for a transition the table does not allow.
 */
static inline int
bal_client_set_state(struct bal_client *c, enum bal_client_state to)
{
	if (__builtin_expect(!bal_client_state_ok(c->state, to), 0))
		return bal_client_state_refused(c, to);
	c->state = to;
	return 0;
}

static inline int
bal_bconn_set_state(struct bal_bconn *bc, enum bal_bconn_state to)
{
	if (__builtin_expect(!bal_bconn_state_ok(bc->state, to), 0))
		return bal_bconn_state_refused(bc, to);
	bc->state = to;
	return 0;
}

/*
 * A client for an accepted socket (takes fd), reading, with the head
 * deadline running; rcb, wcb and tcb are its read, write and timer
 * callbacks (arg: the client).
 */
struct bal_client *bal_client_new(struct bal_worker *w, int fd,
				  const struct sockaddr *sa,
				  event_callback_fn rcb, event_callback_fn wcb,
				  event_callback_fn tcb);
/* Arms the client's timer, or stops it when tv is NULL. */
void bal_client_timer(struct bal_client *c, const struct timeval *tv);
/* Closes the client and its backend connection, if any (see above). */
void bal_client_close(struct bal_client *c);
/* Flushes, then closes (lingering so the peer reads the last bytes). */
void bal_client_close_after_flush(struct bal_client *c);
/*
 * Queues a JSON error answer of the balancer's own (with Connection: close
 * when close_after), closing the backend connection first.  Returns
 * whether the connection closes after it: close_after, or draining, or a
 * client that did not ask for keep-alive.
 */
int bal_client_queue_error(struct bal_client *c, int status, const char *why,
			   int close_after);

/* A new backend connection object for fd; the caller sets its state. */
struct bal_bconn *bal_bconn_new(struct bal_worker *w, struct bal_backend *be,
				int fd, event_callback_fn rcb,
				event_callback_fn wcb, event_callback_fn tcb);
/* Detaches it from its client, if any, and closes it (see above). */
void bal_bconn_close(struct bal_bconn *bc);

/* Frees what was closed since the last call; every callback ends with it. */
void bal_worker_reap(struct bal_worker *w);

/* The balancer's own answers: reason phrase, complete JSON response. */
const char *bal_reason(int status);
/* Appends the response to out, counts it in /stats; returns out->len. */
struct hs_buf;
size_t bal_error_response(struct bal_app *app, struct hs_buf *out, int status,
			  const char *why, int close);

#endif
