/*
 * Workers and connections: one event loop per worker with its own
 * listener, client list and idle backend-connection pools; accepting (with
 * --max-conns, resting after an accept error), the non-blocking I/O layer
 * described in proxy.h, JSON error responses, lingering close, and
 * draining on SIGTERM.
 */
#include <errno.h>
#include <event2/listener.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hs_buf.h"
#include "hs_log.h"
#include "hs_util.h"
#include "proxy.h"

#define READ_CHUNK 16384

void
bal_io_init(struct bal_io *io, struct event_base *base, int fd,
	    event_callback_fn rcb, event_callback_fn wcb, void *arg)
{
	io->fd = fd;
	io->in = evbuffer_new();
	io->out = evbuffer_new();
	if (io->in == NULL || io->out == NULL)
		fatalx("out of memory");
	event_assign(&io->rev, base, fd, EV_READ | EV_PERSIST, rcb, arg);
	event_assign(&io->wev, base, fd, EV_WRITE | EV_PERSIST, wcb, arg);
	io->rd_on = io->wr_on = 0;
}

void
bal_io_close(struct bal_io *io)
{
	if (io->rd_on)
		event_del(&io->rev);
	if (io->wr_on)
		event_del(&io->wev);
	io->rd_on = io->wr_on = 0;
	hs_close(&io->fd);
	if (io->in)
		evbuffer_free(io->in);
	if (io->out)
		evbuffer_free(io->out);
	io->in = io->out = NULL;
}

int
bal_io_read(struct bal_io *io)
{
	struct evbuffer_iovec v;
	ssize_t r;

	if (evbuffer_reserve_space(io->in, READ_CHUNK, &v, 1) < 1)
		return -1;
	r = read(io->fd, v.iov_base, v.iov_len);
	if (r > 0) {
		v.iov_len = (size_t)r;
		evbuffer_commit_space(io->in, &v, 1);
		return (int)r;
	}
	if (r == 0)
		return 0;
	return (errno == EAGAIN || errno == EINTR) ? -2 : -1;
}

int
bal_io_flush(struct bal_io *io)
{
	if (evbuffer_get_length(io->out) > 0) {
		int n = evbuffer_write(io->out, io->fd);
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
	}
	if (evbuffer_get_length(io->out) > 0) {
		if (!io->wr_on) {
			event_add(&io->wev, NULL);
			io->wr_on = 1;
		}
	} else if (io->wr_on) {
		event_del(&io->wev);
		io->wr_on = 0;
	}
	return 0;
}

void
bal_io_rd(struct bal_io *io, int on)
{
	if (on && !io->rd_on)
		event_add(&io->rev, NULL);
	else if (!on && io->rd_on)
		event_del(&io->rev);
	io->rd_on = on ? 1 : 0;
}

const char *
bal_reason(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 408: return "Request Timeout";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 431: return "Request Header Fields Too Large";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

const int bal_err_status[BAL_NERR] = { 400, 404, 408, 413, 414, 431,
				       501, 502, 503, 504, 505 };

int
bal_err_index(int status)
{
	for (int i = 0; i < BAL_NERR; i++)
		if (bal_err_status[i] == status)
			return i;
	return 0;
}

/*
 * Builds a complete error response of the balancer's own, and counts it in
 * /stats by status; returns its length in out.
 */
static size_t
error_response(struct bal_app *app, struct hs_buf *out, int status,
	       const char *why, int close)
{
	struct hs_buf body = HS_BUF_INIT;
	char date[30];

	BAL_INC(&app->errors[bal_err_index(status)], 1);
	hs_http_date(date);
	hs_buf_puts(&body, "{\"error\":");
	hs_buf_json_str(&body, why);
	hs_buf_printf(&body, ",\"status\":%d}\n", status);
	hs_buf_printf(out,
		      "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: hs-balancer\r\n"
		      "Content-Type: application/json\r\n"
		      "Content-Length: %zu\r\n%s%s\r\n",
		      status, bal_reason(status), date, body.len,
		      status == 503 ? "Retry-After: 1\r\n" : "",
		      close ? "Connection: close\r\n" : "");
	hs_buf_append(out, body.data, body.len);
	hs_buf_free(&body);
	return out->len;
}

void
bal_client_timer(struct bal_client *c, const struct timeval *tv)
{
	if (tv == NULL)
		event_del(&c->tmr);
	else
		event_add(&c->tmr, tv);
}

void
bal_bconn_free(struct bal_bconn *bc)
{
	if (bc == NULL)
		return;
	if (bc->c != NULL) {
		BAL_INC(&bc->be->active, -1);
		bc->c->bc = NULL;
	}
	if (bc->state == B_IDLE)
		TAILQ_REMOVE(&bc->w->idle[bc->be->id], bc, link);
	if (bc->counted)
		BAL_INC(&bc->be->conns, -1);
	event_del(&bc->tmr);
	bal_io_close(&bc->io);
	free(bc);
}

static void worker_check_drained(struct bal_worker *w);

void
bal_client_free(struct bal_client *c)
{
	struct bal_worker *w = c->w;

	bal_bconn_free(c->bc);
	event_del(&c->tmr);
	bal_io_close(&c->io);
	TAILQ_REMOVE(&w->clients, c, link);
	w->nclients--;
	BAL_INC(&w->app->conns, -1);
	free(c->fwd);
	free(c);
	if (w->draining)
		worker_check_drained(w);
}

void
bal_client_close_after_flush(struct bal_client *c)
{
	c->state = C_CLOSING;
	bal_io_rd(&c->io, 0);
	if (bal_io_flush(&c->io) < 0) {
		bal_client_free(c);
		return;
	}
	/*
	 * A slow reader gets the idle timeout for the rest of its answer;
	 * once it is all out, the linger timeout.
	 */
	bal_client_timer(c, evbuffer_get_length(c->io.out) ? c->w->tv_idle
							 : c->w->tv_linger);
	if (evbuffer_get_length(c->io.out) == 0) {
		/*
		 * Lingering close: shut our side, then read and discard until
		 * the peer closes, so that unread request bytes do not turn
		 * close(2) into a reset that destroys the response.
		 */
		shutdown(c->io.fd, SHUT_WR);
		c->state = C_LINGER;
		evbuffer_drain(c->io.in, evbuffer_get_length(c->io.in));
		bal_io_rd(&c->io, 1);
	}
}

void
bal_client_error(struct bal_client *c, int status, const char *why,
		 int close_after)
{
	struct hs_buf b = HS_BUF_INIT;

	if (c->bc != NULL)
		bal_bconn_free(c->bc);
	close_after |= c->w->draining || !c->req_ka;
	log_debug("client %s: %d %s", c->ip, status, why);
	error_response(c->w->app, &b, status, why, close_after);
	evbuffer_add(c->io.out, b.data, b.len);
	hs_buf_free(&b);
	c->resp_started = 1;
	if (close_after) {
		bal_client_close_after_flush(c);
		return;
	}
	if (bal_io_flush(&c->io) < 0) {
		bal_client_free(c);
		return;
	}
	bal_client_next(c);
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
	  int slen, void *arg)
{
	struct bal_worker *w = arg;
	struct bal_app *app = w->app;
	struct bal_client *c;
	int one = 1;

	BAL_INC(&app->accepted, 1);
	if (app->cfg.max_conns > 0 &&
	    BAL_GET(&app->conns) >= app->cfg.max_conns) {
		struct hs_buf b = HS_BUF_INIT;
		error_response(app, &b, 503, "too many connections", 1);
		/* Best effort: a fresh socket has room for a small answer. */
		if (write(fd, b.data, b.len) < 0)
			log_debug("reject write: %s", strerror(errno));
		hs_buf_free(&b);
		shutdown(fd, SHUT_WR);
		close(fd);
		BAL_INC(&app->rejected, 1);
		log_warnx_rl("%d clients connected (--max-conns): answering "
			     "new ones 503", app->cfg.max_conns);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = hs_xcalloc(1, sizeof(*c));
	c->w = w;
	bal_io_init(&c->io, w->base, fd, bal_client_read_cb,
		    bal_client_write_cb, c);
	evtimer_assign(&c->tmr, w->base, bal_client_timer_cb, c);
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr,
			  c->ip, sizeof(c->ip));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr,
			  c->ip, sizeof(c->ip));
	else
		strcpy(c->ip, "unknown");
	c->req_ka = 1;
	TAILQ_INSERT_TAIL(&w->clients, c, link);
	w->nclients++;
	BAL_INC(&app->conns, 1);
	c->state = C_NEW;
	bal_io_rd(&c->io, 1);
	/* A connection that sends nothing gets the head deadline, not idle. */
	bal_client_timer(c, w->tv_header);
}

/*
 * accept(2) failed (EMFILE, ENFILE, ENOBUFS...; libevent handles the
 * retriable errors itself).  Retrying at once would fail again and spin
 * the loop while the descriptor table stays full, so the listener rests
 * for BAL_ACCEPT_PAUSE_MS and the connections wait in the backlog.
 */
static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct bal_worker *w = arg;
	struct timeval tv = { 0, BAL_ACCEPT_PAUSE_MS * 1000 };

	log_warnx_rl("accept: %s; pausing accepts for %d ms",
		     strerror(EVUTIL_SOCKET_ERROR()), BAL_ACCEPT_PAUSE_MS);
	evconnlistener_disable(l);
	event_add(w->ev_resume, &tv);
}

static void
accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bal_worker *w = arg;

	if (w->lis != NULL)
		evconnlistener_enable(w->lis);
}

static const struct timeval *
common_tv(struct event_base *base, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	const struct timeval *r = event_base_init_common_timeout(base, &tv);

	if (r == NULL)
		fatalx("event_base_init_common_timeout failed");
	return r;
}

static void
finish(struct bal_worker *w)
{
	struct bal_bconn *bc;

	for (int i = 0; i < BAL_MAX_BACKENDS; i++)
		while ((bc = TAILQ_FIRST(&w->idle[i])) != NULL)
			bal_bconn_free(bc);
	if (w->ev_deadline)
		event_del(w->ev_deadline);
	event_base_loopexit(w->base, NULL);
}

static void
worker_check_drained(struct bal_worker *w)
{
	if (w->nclients == 0)
		finish(w);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bal_worker *w = arg;

	log_warnx("worker %d: drain deadline passed with %d connections",
		  w->idx, w->nclients);
	finish(w);
}

static void
drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bal_worker *w = arg;
	struct bal_client *c, *tmp;
	int ms = w->app->cfg.drain_timeout_ms;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	if (w->draining)
		return;
	w->draining = 1;
	if (w->lis != NULL) {
		evconnlistener_free(w->lis);
		w->lis = NULL;
	}
	event_del(w->ev_resume);
	/* Idle keep-alive connections go now; the others after their response. */
	for (c = TAILQ_FIRST(&w->clients); c != NULL; c = tmp) {
		tmp = TAILQ_NEXT(c, link);
		if ((c->state == C_NEW || c->state == C_IDLE) &&
		    evbuffer_get_length(c->io.in) == 0)
			bal_client_free(c);
	}
	if (w->nclients == 0) {
		finish(w);
		return;
	}
	w->ev_deadline = evtimer_new(w->base, deadline_cb, w);
	event_add(w->ev_deadline, &tv);
}

void
bal_worker_drain(struct bal_worker *w)
{
	event_active(w->ev_drain, EV_READ, 0);
}

struct bal_worker *
bal_worker_new(struct bal_app *app, int idx, struct event_base *base,
	       int listen_fd)
{
	struct bal_worker *w = hs_xcalloc(1, sizeof(*w));
	const struct bal_config *cfg = &app->cfg;

	w->app = app;
	w->idx = idx;
	w->base = base;
	w->pstate = app->policy->state_new();
	for (int i = 0; i < BAL_MAX_BACKENDS; i++)
		TAILQ_INIT(&w->idle[i]);
	TAILQ_INIT(&w->clients);
	w->tv_idle = common_tv(base, cfg->idle_timeout_ms);
	w->tv_header = common_tv(base, cfg->header_timeout_ms);
	w->tv_backend = common_tv(base, cfg->backend_timeout_ms);
	w->tv_connect = common_tv(base, cfg->connect_timeout_ms);
	w->tv_linger = common_tv(base, 2000);
	w->tv_pool = common_tv(base, BAL_POOL_IDLE_MS);
	w->ev_drain = event_new(base, -1, 0, drain_cb, w);
	w->ev_resume = evtimer_new(base, accept_resume_cb, w);
	w->scratch_cap = 4096;
	w->scratch = hs_xmalloc(w->scratch_cap);
	w->lis = evconnlistener_new(base, accept_cb, w, LEV_OPT_CLOSE_ON_FREE,
				    0, listen_fd);
	if (w->lis == NULL) {
		log_warn("evconnlistener_new");
		bal_worker_free(w);
		return NULL;
	}
	evconnlistener_set_error_cb(w->lis, accept_error_cb);
	return w;
}

void
bal_worker_free(struct bal_worker *w)
{
	struct bal_client *c;
	struct bal_bconn *bc;

	if (w == NULL)
		return;
	w->draining = 0; /* no finish() from bal_client_free */
	while ((c = TAILQ_FIRST(&w->clients)) != NULL)
		bal_client_free(c);
	for (int i = 0; i < BAL_MAX_BACKENDS; i++)
		while ((bc = TAILQ_FIRST(&w->idle[i])) != NULL)
			bal_bconn_free(bc);
	if (w->lis)
		evconnlistener_free(w->lis);
	if (w->ev_drain)
		event_free(w->ev_drain);
	if (w->ev_resume)
		event_free(w->ev_resume);
	if (w->ev_deadline)
		event_free(w->ev_deadline);
	if (w->pstate)
		w->app->policy->state_free(w->pstate);
	free(w->scratch);
	free(w);
}
