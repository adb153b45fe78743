/*
 * Structures shared by the proxy's two halves: conn.c (workers, accepting,
 * the small non-blocking I/O layer, error responses) and proxy.c (the
 * request / response flow between a client and a backend connection).
 *
 * Why not bufferevents: a socket bufferevent writes only when the loop next
 * reports the socket writable, which costs two epoll_ctl calls and one more
 * loop turn per write, twice per proxied request.  struct bal_io writes at
 * once and arms EV_WRITE only when the kernel buffer is full, and reads
 * with one read(2) into reserved evbuffer space (evbuffer_read() issues a
 * FIONREAD ioctl first).  evbuffers are still used for zero-copy moves of
 * body bytes between the two sides.
 */
#ifndef BAL_PROXY_H
#define BAL_PROXY_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/queue.h>

#include "bal.h"
#include "parse.h"

/* Back-pressure: stop reading a side while the other's output exceeds it. */
#define BAL_HIGH_WM (256 * 1024)
#define BAL_LOW_WM (64 * 1024)
#define BAL_MAX_RESP_HEAD (64 * 1024)
#define BAL_MAX_TRIES 8
#define BAL_POOL_IDLE_MS 15000

struct bal_io {
	int fd;
	struct event rev, wev;
	struct evbuffer *in, *out;
	unsigned rd_on : 1, wr_on : 1;
};

/* A client connection's state; the timer it runs is named after each. */
enum {
	C_NEW,     /**< accepted, no byte yet: the head deadline runs from accept */
	C_IDLE,    /**< keep-alive, between requests: idle timeout */
	C_HEAD,    /**< a request head is arriving: head deadline */
	C_BODY,    /**< its body is arriving: head timeout per progress */
	C_WAIT,    /**< request sent, waiting for or relaying the response */
	C_FULL,    /**< answered, but the client is not reading: the next
		    *   pipelined request waits until its output drains below
		    *   BAL_LOW_WM (idle timeout) */
	C_CLOSING, /**< flushing a last answer before closing */
	C_LINGER   /**< our side shut: discarding input until the peer closes */
};
enum { B_CONNECTING, B_IDLE, B_SENT, B_BODY };
enum { BODY_NONE, BODY_CL, BODY_CHUNKED };
enum { R_NONE, R_CL, R_CHUNKED, R_CLOSE };

struct bal_bconn;

struct bal_client {
	struct bal_worker *w;
	struct bal_io io;
	struct event tmr;
	int state;
	int eof;
	struct bal_bconn *bc;
	char ip[INET6_ADDRSTRLEN];
	/* The request in progress. */
	enum bal_method method;
	int version_minor, req_ka, body_kind, body_done, resp_started;
	int can_retry, retried, close_after;
	uint64_t body_left;
	struct bal_chunk chunk;
	int tried[BAL_MAX_TRIES], ntried;
	char *fwd; /* forwarded head, kept for re-dispatch */
	size_t fwd_len, fwd_cap;
	uint64_t t0;
	TAILQ_ENTRY(bal_client) link;
};

struct bal_bconn {
	struct bal_io io;
	struct event tmr;
	struct bal_worker *w;
	struct bal_backend *be;
	struct bal_client *c;
	int state;
	int counted; /* connected: counted in be->conns */
	int resp_kind, resp_ka, status;
	uint64_t resp_left;
	struct bal_chunk chunk;
	TAILQ_ENTRY(bal_bconn) link;
};

TAILQ_HEAD(bal_bconn_list, bal_bconn);

struct bal_worker {
	struct bal_app *app;
	int idx;
	struct event_base *base;
	struct evconnlistener *lis;
	void *pstate;
	struct bal_bconn_list idle[BAL_MAX_BACKENDS];
	TAILQ_HEAD(, bal_client) clients;
	int nclients;
	const struct timeval *tv_idle, *tv_header, *tv_backend, *tv_connect,
		*tv_linger, *tv_pool;
	struct event *ev_drain, *ev_deadline;
	struct event *ev_resume; /* re-enables lis after an accept pause */
	int draining;
	unsigned char tried[BAL_MAX_BACKENDS];
	struct bal_msg msg; /* parse scratch: one parse at a time per worker */
	char *scratch;
	size_t scratch_cap;
};

/* conn.c */
void bal_io_init(struct bal_io *io, struct event_base *base, int fd,
		 event_callback_fn rcb, event_callback_fn wcb, void *arg);
void bal_io_close(struct bal_io *io);
/* > 0 bytes read, 0 EOF, -1 error, -2 nothing to read now. */
int bal_io_read(struct bal_io *io);
/* Writes what it can now, arms EV_WRITE for the rest; -1 on error. */
int bal_io_flush(struct bal_io *io);
void bal_io_rd(struct bal_io *io, int on);
void bal_client_free(struct bal_client *c);
/* Queues a JSON error response; closes after it when close_after. */
void bal_client_error(struct bal_client *c, int status, const char *why,
		      int close_after);
/* Flushes, then closes (lingering so the peer reads the last bytes). */
void bal_client_close_after_flush(struct bal_client *c);
void bal_client_timer(struct bal_client *c, const struct timeval *tv);
void bal_bconn_free(struct bal_bconn *bc);
const char *bal_reason(int status);

/* proxy.c */
void bal_client_read_cb(evutil_socket_t fd, short what, void *arg);
void bal_client_write_cb(evutil_socket_t fd, short what, void *arg);
void bal_client_timer_cb(evutil_socket_t fd, short what, void *arg);
/* Parses and dispatches what is buffered; the client is idle after a response. */
void bal_client_next(struct bal_client *c);

#endif
