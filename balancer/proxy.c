/*
 * The request / response flow.  A client connection handles one request at
 * a time (pipelined requests wait in its input buffer, so responses leave
 * in order, and none is taken while the client leaves more than
 * BAL_HIGH_WM of answers unread): parse the head strictly, refuse the
 * paths of --deny-path, pick a backend, take a pooled keep-alive
 * connection to it or open one, send the rewritten head, stream the body
 * with back-pressure, then stream the response back, following its
 * framing (Content-Length, chunked, or until close) to know when the
 * backend connection can go back to the pool.
 *
 * Failures: a connect error marks the backend down and the request goes to
 * the next one (nothing reached the first), unless the error is ours (no
 * descriptor left: 503); a backend that fails before
 * answering gets an idempotent body-less request retried once elsewhere,
 * anything else a 502; a backend silent for --backend-timeout-ms a 504.
 *
 * A function here may close the client or the backend connection
 * (client.h): the object stays readable until the callback that called it
 * ends with bal_worker_reap(), so callers test the state (CLOSED) or a
 * return value and stop; they never touch freed memory.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "rewrite.h"
#include "hs_log.h"
#include "hs_util.h"
#include "proxy.h"

static void dispatch(struct bal_client *c);
static void bconn_process(struct bal_bconn *bc);
static void client_next(struct bal_client *c);

/*
 * Answers the client with an error of ours, then closes after it or goes
 * on with the next pipelined request.
 */
static void
answer_error(struct bal_client *c, int status, const char *why, int close_after)
{
	if (bal_client_queue_error(c, status, why, close_after)) {
		bal_client_close_after_flush(c);
		return;
	}
	if (bal_io_flush(&c->io) < 0) {
		bal_client_close(c);
		return;
	}
	client_next(c);
}

/* Ends a request whose body went wrong: an error if we may still answer. */
static void
abort_request(struct bal_client *c, int status, const char *why)
{
	if (c->resp_started)
		bal_client_close(c);
	else
		answer_error(c, status, why, 1);
}

/* Moves what is buffered of the request body to bc; -1 on bad framing. */
static int
move_body(struct bal_client *c, struct bal_bconn *bc)
{
	size_t len = evbuffer_get_length(c->io.in);
	const char *why = "bad chunked framing";
	ssize_t r;

	if (len == 0)
		return 0;
	if (c->body_kind == BAL_BODY_CL) {
		size_t k = len < c->body_left ? len : (size_t)c->body_left;
		evbuffer_remove_buffer(c->io.in, bc->io.out, k);
		c->body_left -= k;
		c->body_done = c->body_left == 0;
		return 0;
	}
	r = bal_scan_chunks(c->io.in, &c->chunk, c->w->app->cfg.max_body, &why);
	if (r < 0) {
		abort_request(c, r == -2 ? 413 : 400, why);
		return -1;
	}
	evbuffer_remove_buffer(c->io.in, bc->io.out, (size_t)r);
	c->body_done = bal_chunk_done(&c->chunk);
	return 0;
}

/*
 * Moves buffered request body bytes to the connected backend.  Returns 0,
 * or -1 if the client was closed.
 */
static int
forward_body(struct bal_client *c)
{
	struct bal_bconn *bc = c->bc;
	struct bal_worker *w = c->w;

	if (bc == NULL || bc->state == BAL_BS_CONNECTING)
		return 0;
	if (move_body(c, bc) < 0)
		return -1;
	if (c->body_done) {
		bal_client_set_state(c, BAL_CS_WAIT);
		bal_client_timer(c, NULL);
	} else if (c->eof) {
		bal_client_close(c);
		return -1;
	}
	if (bal_io_flush(&bc->io) < 0) {
		/* The backend will answer or fail on read; nothing to do here. */
		log_debug("write to %s failed", bc->be->name);
	}
	/* Upload progress counts as backend activity. */
	event_add(&bc->tmr, w->tv_backend);
	if (c->state == BAL_CS_BODY) {
		/*
		 * While the backend is slow to take the body we wait on it,
		 * not on the client: the client's body timeout pauses.
		 */
		int room = evbuffer_get_length(bc->io.out) < BAL_HIGH_WM;
		bal_io_rd(&c->io, room);
		bal_client_timer(c, room ? w->tv_header : NULL);
	}
	return 0;
}

static void bconn_read_cb(evutil_socket_t fd, short what, void *arg);
static void bconn_write_cb(evutil_socket_t fd, short what, void *arg);
static void bconn_timer_cb(evutil_socket_t fd, short what, void *arg);

static struct bal_bconn *
bconn_connect(struct bal_worker *w, struct bal_backend *be)
{
	struct bal_bconn *bc;
	int fd, one = 1, rc;

	fd = socket(be->addr.ss_family,
		    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	rc = connect(fd, (struct sockaddr *)&be->addr, be->addrlen);
	if (rc < 0 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	bc = bal_bconn_new(w, be, fd, bconn_read_cb, bconn_write_cb,
			   bconn_timer_cb);
	if (rc == 0) {
		bal_bconn_set_state(bc, BAL_BS_SENT);
		bc->counted = 1;
		BAL_INC(&be->conns, 1);
		bal_io_rd(&bc->io, 1);
	} else {
		bal_bconn_set_state(bc, BAL_BS_CONNECTING);
		bal_io_wr(&bc->io);
	}
	return bc;
}

static void
add_tried(struct bal_client *c, const struct bal_backend *be)
{
	if (c->ntried < BAL_MAX_TRIES)
		c->tried[c->ntried++] = be->id;
}

/* A connected backend connection starts carrying the attached request. */
static void
bconn_start(struct bal_bconn *bc)
{
	struct bal_client *c = bc->c;

	bal_bconn_set_state(bc, BAL_BS_SENT);
	if (c->state == BAL_CS_BODY) {
		/* forward_body arms the backend timer. */
		forward_body(c);
		return;
	}
	event_add(&bc->tmr, bc->w->tv_backend);
	if (bal_io_flush(&bc->io) < 0)
		log_debug("write to %s failed", bc->be->name);
}

static void
connect_failed(struct bal_bconn *bc, int err)
{
	struct bal_client *c = bc->c;
	struct bal_backend *be = bc->be;
	char why[128];

	snprintf(why, sizeof(why), "connect: %s", strerror(err));
	BAL_INC(&be->failures, 1);
	bal_backend_set_up(be, 0, why);
	bal_bconn_close(bc);
	if (c != NULL) {
		add_tried(c, be);
		dispatch(c);
	}
}

/* The backend failed after the request may have reached it. */
static void
bconn_failed(struct bal_bconn *bc, const char *why)
{
	struct bal_client *c = bc->c;
	struct bal_backend *be = bc->be;

	bal_bconn_close(bc);
	if (c == NULL)
		return;
	BAL_INC(&be->failures, 1);
	log_info_rl("backend %s failed: %s", be->name, why);
	if (c->resp_started) {
		bal_client_close(c);
		return;
	}
	if (c->can_retry && !c->retried && c->ntried < BAL_MAX_TRIES) {
		c->retried = 1;
		BAL_INC(&be->retries, 1);
		add_tried(c, be);
		dispatch(c);
		return;
	}
	answer_error(c, 502, why, !c->body_done);
}

/* The policy's pick among the backends the request has not tried. */
static struct bal_backend *
pick(struct bal_client *c, struct bal_set *set)
{
	struct bal_worker *w = c->w;
	struct bal_backend *be;

	if (c->ntried >= BAL_MAX_TRIES)
		return NULL;
	for (int i = 0; i < c->ntried; i++)
		w->tried[c->tried[i]] = 1;
	be = w->app->policy->pick(w->pstate, set, w->tried);
	for (int i = 0; i < c->ntried; i++)
		w->tried[c->tried[i]] = 0;
	return be;
}

/*
 * A connection to a backend for c: from the pool, or a new one; on a
 * connect error the backend is marked down and the next one tried.
 * Returns NULL after answering the client (no backend, or our shortage).
 */
static struct bal_bconn *
get_bconn(struct bal_client *c)
{
	struct bal_worker *w = c->w;
	struct bal_set *set = bal_set_current(w->app);
	struct bal_backend *be;
	struct bal_bconn *bc;

	while ((be = pick(c, set)) != NULL) {
		if ((bc = TAILQ_FIRST(&w->idle[be->id])) != NULL) {
			TAILQ_REMOVE(&w->idle[be->id], bc, link);
			bal_bconn_set_state(bc, BAL_BS_SENT);
			return bc;
		}
		if ((bc = bconn_connect(w, be)) != NULL)
			return bc;
		if (bal_err_local(errno)) {
			/* Our shortage: the backend is not to blame. */
			log_warn_rl("connect to %s", be->name);
			answer_error(c, 503, "out of resources", !c->body_done);
			return NULL;
		}
		BAL_INC(&be->failures, 1);
		bal_backend_set_up(be, 0, strerror(errno));
		add_tried(c, be);
	}
	for (int i = 0; i < set->n; i++)
		if (BAL_GET(&set->b[i]->up) && !BAL_GET(&set->b[i]->removed)) {
			answer_error(c, 502,
				     "no backend could take the request",
				     !c->body_done);
			return NULL;
		}
	answer_error(c, 503, "no backend available", !c->body_done);
	return NULL;
}

/* Sends the request (c->fwd) to a backend connection. */
static void
dispatch(struct bal_client *c)
{
	struct bal_bconn *bc = get_bconn(c);

	if (bc == NULL)
		return;
	bc->c = c;
	c->bc = bc;
	BAL_INC(&bc->be->active, 1);
	BAL_INC(&bc->be->requests, 1);
	evbuffer_add(bc->io.out, c->fwd, c->fwd_len);
	if (bc->state == BAL_BS_CONNECTING)
		event_add(&bc->tmr, c->w->tv_connect);
	else
		bconn_start(bc);
}

/* Takes the parsed head's method, version and body framing into c. */
static void
take_request(struct bal_client *c, const struct bal_msg *m)
{
	c->method = m->method;
	c->version_minor = m->version_minor;
	c->req_ka = m->keep_alive;
	memset(&c->chunk, 0, sizeof(c->chunk));
	c->body_left = 0;
	if (m->chunked) {
		c->body_kind = BAL_BODY_CHUNKED;
	} else if (m->content_length > 0) {
		c->body_kind = BAL_BODY_CL;
		c->body_left = (uint64_t)m->content_length;
	} else {
		c->body_kind = BAL_BODY_NONE;
	}
	c->body_done = c->body_kind == BAL_BODY_NONE;
}

/*
 * Checks a parsed request before a byte of it goes out: body size, the
 * chunked framing that arrived with the head, --deny-path.  Returns 0,
 * or -1 after answering it.
 */
static int
check_request(struct bal_client *c, const char *p, const struct bal_msg *m,
	      size_t head_len)
{
	const struct bal_config *cfg = &c->w->app->cfg;
	const char *why = NULL;
	int denied;

	if (m->content_length > cfg->max_body) {
		answer_error(c, 413, "request body too large", 1);
		return -1;
	}
	denied = bal_path_denied(c, p, m);
	bal_forward_head(c, p, m);
	evbuffer_drain(c->io.in, head_len);
	if (c->body_kind == BAL_BODY_CHUNKED) {
		/* Check what is here already before a byte goes out. */
		struct bal_chunk tmp = c->chunk;
		ssize_t s =
			bal_scan_chunks(c->io.in, &tmp, cfg->max_body, &why);
		if (s < 0) {
			answer_error(c, s == -2 ? 413 : 400, why, 1);
			return -1;
		}
	}
	if (denied) {
		/* A body, if any, is not read: close after the answer. */
		answer_error(c, 404, "not found", !c->body_done);
		return -1;
	}
	return 0;
}

/* Parses the next request head in the client's buffer and dispatches it. */
static void
try_head(struct bal_client *c)
{
	struct bal_worker *w = c->w;
	const struct bal_config *cfg = &w->app->cfg;
	struct bal_msg *m = &w->msg;
	size_t len = evbuffer_get_length(c->io.in), k;
	const char *why = NULL;
	ssize_t r;
	char *p;

	if (c->state == BAL_CS_IDLE)
		bal_client_timer(c, w->tv_header);
	/* From NEW, the head deadline already runs since accept. */
	bal_client_set_state(c, BAL_CS_HEAD);
	k = len < cfg->lim.max_head ? len : cfg->lim.max_head;
	p = (char *)evbuffer_pullup(c->io.in, (ssize_t)k);
	r = bal_parse_request(p, k, &cfg->lim, m, &why);
	if (r == 0) {
		if (c->eof)
			bal_client_close(c);
		else
			bal_io_rd(&c->io, 1);
		return;
	}
	if (r < 0) {
		c->req_ka = 0;
		answer_error(c, (int)-r, why, 1);
		return;
	}
	take_request(c, m);
	if (check_request(c, p, m, (size_t)r) < 0)
		return;
	c->resp_started = 0;
	c->retried = 0;
	c->ntried = 0;
	c->close_after = 0;
	c->can_retry = bal_method_idempotent(c->method) &&
		       c->body_kind == BAL_BODY_NONE;
	c->t0 = hs_now_us();
	if (c->body_done) {
		/*
		 * Reading stays on while we wait for the response: turning it
		 * off and on costs two epoll_ctl calls per request.  Pipelined
		 * bytes just wait in the buffer (bounded by BAL_HIGH_WM).
		 */
		bal_client_set_state(c, BAL_CS_WAIT);
		bal_client_timer(c, NULL);
	} else {
		bal_client_set_state(c, BAL_CS_BODY);
	}
	dispatch(c);
}

/* Parses and dispatches what is buffered; the client is idle after a response. */
static void
client_next(struct bal_client *c)
{
	struct bal_worker *w = c->w;

	bal_client_set_state(c, BAL_CS_IDLE);
	c->resp_started = 0;
	if (w->draining) {
		bal_client_close_after_flush(c);
		return;
	}
	if (evbuffer_get_length(c->io.out) > BAL_HIGH_WM) {
		/*
		 * The client does not read its answers: take no further
		 * pipelined request until they drain, or a client that sends
		 * and never reads makes us buffer answer after answer.
		 */
		bal_client_set_state(c, BAL_CS_FULL);
		bal_io_rd(&c->io, 0);
		bal_client_timer(c, w->tv_idle);
		return;
	}
	if (evbuffer_get_length(c->io.in) > 0) {
		try_head(c);
		return;
	}
	if (c->eof) {
		bal_client_close_after_flush(c);
		return;
	}
	bal_io_rd(&c->io, 1);
	bal_client_timer(c, w->tv_idle);
}

static void
response_done(struct bal_bconn *bc)
{
	struct bal_client *c = bc->c;
	struct bal_backend *be = bc->be;
	struct bal_worker *w = bc->w;
	int reusable;

	hs_hist_record(&be->lat, hs_now_us() - c->t0);
	reusable = bc->resp_ka && evbuffer_get_length(bc->io.in) == 0 &&
		   c->body_done && !BAL_GET(&be->removed) && !w->draining;
	BAL_INC(&be->active, -1);
	bc->c = NULL;
	c->bc = NULL;
	if (reusable) {
		/*
		 * Pooled connections expire well before a typical backend
		 * keep-alive timeout, so we rarely send on one the backend is
		 * closing (a POST there would get a 502, never a retry).
		 */
		bal_bconn_set_state(bc, BAL_BS_IDLE);
		event_add(&bc->tmr, w->tv_pool);
		bal_io_rd(&bc->io, 1);
		TAILQ_INSERT_HEAD(&w->idle[be->id], bc, link);
	} else {
		bal_bconn_close(bc);
	}
	if (!c->body_done || c->close_after) {
		bal_client_close_after_flush(c);
		return;
	}
	client_next(c);
}

/* A bad answer from the backend: 502 if the client has seen nothing yet. */
static void
bconn_bad(struct bal_bconn *bc, const char *why)
{
	struct bal_client *c = bc->c;

	BAL_INC(&bc->be->failures, 1);
	log_info_rl("backend %s: %s", bc->be->name, why);
	bal_bconn_close(bc);
	if (c->resp_started)
		bal_client_close(c);
	else
		answer_error(c, 502, why, !c->body_done);
}

/* A final response head: its framing, and the head queued to the client. */
static void
head_response(struct bal_bconn *bc, const char *p, const struct bal_msg *m)
{
	struct bal_client *c = bc->c;
	int st = m->status;
	size_t n;

	bc->status = st;
	BAL_INC(&bc->be->resp[st / 100], 1);
	if (c->method == BAL_M_HEAD || st == 204 || st == 304)
		bc->resp_kind = BAL_RESP_NONE;
	else if (m->chunked)
		bc->resp_kind = BAL_RESP_CHUNKED;
	else if (m->has_te)
		bc->resp_kind = BAL_RESP_CLOSE;
	else if (m->content_length > 0)
		bc->resp_kind = BAL_RESP_CL;
	else if (m->content_length == 0)
		bc->resp_kind = BAL_RESP_NONE;
	else
		bc->resp_kind = BAL_RESP_CLOSE;
	bc->resp_left = m->content_length > 0 ? (uint64_t)m->content_length : 0;
	memset(&bc->chunk, 0, sizeof(bc->chunk));
	bc->resp_ka = m->keep_alive && bc->resp_kind != BAL_RESP_CLOSE;
	c->close_after = !c->req_ka || bc->resp_kind == BAL_RESP_CLOSE ||
			 bc->w->draining || !c->body_done;
	n = bal_response_head(c, p, m);
	evbuffer_add(c->io.out, bc->w->scratch, n);
	c->resp_started = 1;
	bal_bconn_set_state(bc, BAL_BS_BODY);
}

/*
 * Reads response heads until the final one: 1xx pass through to HTTP/1.1
 * clients.  Returns 1 once the final head is taken (bc in BODY), 0 to wait
 * for more bytes, -1 when bc or its client was closed.
 */
static int
take_heads(struct bal_bconn *bc)
{
	struct bal_client *c = bc->c;
	struct bal_msg *m = &bc->w->msg;
	const char *why = "malformed response";

	while (bc->state == BAL_BS_SENT) {
		size_t len = evbuffer_get_length(bc->io.in), k;
		ssize_t r;
		char *p;

		if (len == 0)
			return 0;
		k = len < BAL_MAX_RESP_HEAD ? len : BAL_MAX_RESP_HEAD;
		p = (char *)evbuffer_pullup(bc->io.in, (ssize_t)k);
		r = bal_parse_response(p, k, BAL_MAX_RESP_HEAD, m, &why);
		if (r == 0)
			return 0;
		if (r < 0 || m->status == 101) {
			bconn_bad(bc, r < 0 ? why : "unexpected 101 response");
			return -1;
		}
		if (m->status >= 200) {
			head_response(bc, p, m);
			evbuffer_drain(bc->io.in, (size_t)r);
		} else if (c->version_minor >= 1) {
			evbuffer_remove_buffer(bc->io.in, c->io.out, (size_t)r);
			c->resp_started = 1;
			if (bal_io_flush(&c->io) < 0) {
				bal_client_close(c);
				return -1;
			}
		} else {
			evbuffer_drain(bc->io.in, (size_t)r);
		}
	}
	return 1;
}

/*
 * Moves what is buffered of the response body to the client.  Returns 1
 * when the response is complete, 0 if more is to come, -1 on bad chunked
 * framing (the client is closed: it has seen part of the answer).
 */
static int
relay_body(struct bal_bconn *bc)
{
	struct bal_client *c = bc->c;
	size_t len = evbuffer_get_length(bc->io.in), k;
	const char *why = "malformed response";
	ssize_t r;

	switch (bc->resp_kind) {
	case BAL_RESP_NONE:
		return 1;
	case BAL_RESP_CL:
		k = len < bc->resp_left ? len : (size_t)bc->resp_left;
		if (k > 0)
			evbuffer_remove_buffer(bc->io.in, c->io.out, k);
		bc->resp_left -= k;
		return bc->resp_left == 0;
	case BAL_RESP_CHUNKED:
		r = len ? bal_scan_chunks(bc->io.in, &bc->chunk, -1, &why) : 0;
		if (r < 0) {
			log_info_rl("backend %s: %s", bc->be->name, why);
			BAL_INC(&bc->be->failures, 1);
			bal_client_close(c);
			return -1;
		}
		evbuffer_remove_buffer(bc->io.in, c->io.out, (size_t)r);
		return bal_chunk_done(&bc->chunk);
	case BAL_RESP_CLOSE:
		evbuffer_add_buffer(c->io.out, bc->io.in);
		return 0;
	}
	return 0;
}

/* Relays what the backend sent: heads, then body, with back-pressure. */
static void
bconn_process(struct bal_bconn *bc)
{
	struct bal_client *c = bc->c;
	int done;

	if (take_heads(bc) <= 0)
		return;
	done = relay_body(bc);
	if (done < 0)
		return;
	if (bal_io_flush(&c->io) < 0) {
		bal_client_close(c);
		return;
	}
	if (done) {
		response_done(bc);
		return;
	}
	if (evbuffer_get_length(c->io.out) > BAL_HIGH_WM) {
		/*
		 * Back-pressure: the backend waits for a slow client, so its
		 * timeout pauses and the client's idle timeout runs instead.
		 */
		bal_io_rd(&bc->io, 0);
		event_del(&bc->tmr);
		bal_client_timer(c, c->w->tv_idle);
	}
}

static void
bconn_on_read(struct bal_bconn *bc, evutil_socket_t fd)
{
	int r = bal_io_read(&bc->io);

	if (r == -2)
		return;
	if (bc->c == NULL) {
		/* Idle in the pool: the backend closed it (or spoke out of turn). */
		bal_bconn_close(bc);
		return;
	}
	if (r <= 0) {
		if (r == 0 && bc->state == BAL_BS_BODY &&
		    bc->resp_kind == BAL_RESP_CLOSE) {
			bc->resp_ka = 0;
			response_done(bc);
			return;
		}
		bconn_failed(bc, r == 0 ? "backend closed the connection"
					: "backend connection reset");
		return;
	}
	event_add(&bc->tmr, bc->w->tv_backend);
	bconn_process(bc);
}

/* The connect finished, or failed (EV_WRITE while CONNECTING). */
static void
bconn_connected(struct bal_bconn *bc, evutil_socket_t fd)
{
	int err = 0;
	socklen_t l = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
		err = errno;
	if (err != 0) {
		connect_failed(bc, err);
		return;
	}
	bc->counted = 1;
	BAL_INC(&bc->be->conns, 1);
	bal_io_rd(&bc->io, 1);
	if (bc->c == NULL) {
		bal_bconn_close(bc);
		return;
	}
	bconn_start(bc);
}

static void
bconn_on_write(struct bal_bconn *bc, evutil_socket_t fd)
{
	struct bal_client *c = bc->c;

	if (bc->state == BAL_BS_CONNECTING) {
		bconn_connected(bc, fd);
		return;
	}
	if (bal_io_flush(&bc->io) < 0) {
		bconn_failed(bc, "write to backend failed");
		return;
	}
	if (c == NULL)
		return;
	if (c->state == BAL_CS_BODY &&
	    evbuffer_get_length(bc->io.out) < BAL_LOW_WM)
		forward_body(c); /* arms the backend timer */
	else
		event_add(&bc->tmr, bc->w->tv_backend);
}

static void
bconn_on_timer(struct bal_bconn *bc, evutil_socket_t fd)
{
	struct bal_client *c = bc->c;

	if (bc->state == BAL_BS_CONNECTING) {
		connect_failed(bc, ETIMEDOUT);
		return;
	}
	if (c == NULL) {
		bal_bconn_close(bc);
		return;
	}
	BAL_INC(&bc->be->failures, 1);
	log_info_rl("backend %s: timeout", bc->be->name);
	bal_bconn_close(bc);
	if (c->resp_started)
		bal_client_close(c);
	else
		answer_error(c, 504, "backend timeout", !c->body_done);
}

static void
client_on_read(struct bal_client *c, evutil_socket_t fd)
{
	int r = bal_io_read(&c->io);

	if (r == -2)
		return;
	if (r == -1) {
		bal_client_close(c);
		return;
	}
	if (c->state == BAL_CS_LINGER) {
		evbuffer_drain(c->io.in, evbuffer_get_length(c->io.in));
		if (r == 0)
			bal_client_close(c);
		return;
	}
	if (r == 0) {
		/* A half-close after a complete request still gets its answer. */
		c->eof = 1;
		bal_io_rd(&c->io, 0);
		if (c->state == BAL_CS_NEW || c->state == BAL_CS_IDLE ||
		    c->state == BAL_CS_HEAD || c->state == BAL_CS_BODY)
			bal_client_close(c);
		return;
	}
	switch (c->state) {
	case BAL_CS_NEW:
	case BAL_CS_IDLE:
	case BAL_CS_HEAD:
		try_head(c);
		break;
	case BAL_CS_BODY:
		bal_client_timer(c, c->w->tv_header);
		if (c->bc != NULL && c->bc->state != BAL_BS_CONNECTING)
			forward_body(c);
		else if (evbuffer_get_length(c->io.in) > BAL_HIGH_WM)
			bal_io_rd(&c->io, 0);
		break;
	default:
		if (evbuffer_get_length(c->io.in) > BAL_HIGH_WM)
			bal_io_rd(&c->io, 0);
		break;
	}
}

static void
client_on_write(struct bal_client *c, evutil_socket_t fd)
{
	struct bal_bconn *bc = c->bc;

	if (bal_io_flush(&c->io) < 0) {
		bal_client_close(c);
		return;
	}
	if (c->state == BAL_CS_CLOSING) {
		if (evbuffer_get_length(c->io.out) == 0)
			bal_client_close_after_flush(c);
		else
			bal_client_timer(c, c->w->tv_idle);
		return;
	}
	if (c->state == BAL_CS_FULL) {
		if (evbuffer_get_length(c->io.out) < BAL_LOW_WM)
			client_next(c);
		else /* a slow reader that makes progress keeps its slot */
			bal_client_timer(c, c->w->tv_idle);
		return;
	}
	if (bc != NULL && bc->state == BAL_BS_BODY && !bc->io.rd_on &&
	    evbuffer_get_length(c->io.out) < BAL_LOW_WM) {
		bal_client_timer(c, NULL);
		event_add(&bc->tmr, c->w->tv_backend);
		bal_io_rd(&bc->io, 1);
		/* Bytes may have arrived while we were not reading. */
		if (evbuffer_get_length(bc->io.in) > 0)
			bconn_process(bc);
	}
}

static void
client_on_timer(struct bal_client *c, evutil_socket_t fd)
{
	switch (c->state) {
	case BAL_CS_HEAD:
	case BAL_CS_BODY:
		c->req_ka = 0;
		abort_request(c, 408, "request timeout");
		break;
	default:
		/*
		 * A connection that never sent a byte (NEW) is closed without
		 * an answer; in WAIT and FULL the timer is armed only while
		 * answers wait for a client not reading.
		 */
		bal_client_close(c);
		break;
	}
}

/*
 * The event callbacks: each runs its handler, then frees what the handler
 * closed, the one place where clients and backend connections are freed.
 */
#define REAPING_CB(linkage, cb, type, handler)                     \
	linkage void cb(evutil_socket_t fd, short what, void *arg) \
	{                                                          \
		type *o = arg;                                     \
		struct bal_worker *w = o->w;                       \
                                                                   \
		handler(o, fd);                                    \
		bal_worker_reap(w);                                \
	}

REAPING_CB(static, bconn_read_cb, struct bal_bconn, bconn_on_read)
REAPING_CB(static, bconn_write_cb, struct bal_bconn, bconn_on_write)
REAPING_CB(static, bconn_timer_cb, struct bal_bconn, bconn_on_timer)
REAPING_CB(, bal_proxy_client_read_cb, struct bal_client, client_on_read)
REAPING_CB(, bal_proxy_client_write_cb, struct bal_client, client_on_write)
REAPING_CB(, bal_proxy_client_timer_cb, struct bal_client, client_on_timer)
