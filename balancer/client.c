/*
 * The life of the proxy path's connections (client.h): the state tables
 * and their setters, creating a client, its timer, the balancer's own
 * error answers, lingering close, and closing then freeing clients and
 * backend connections in one place, bal_worker_reap().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "hs_buf.h"
#include "hs_log.h"
#include "hs_util.h"

#define BIT(s) (1u << (s))
#define CS(s)  BIT(BAL_CS_##s)
#define BS(s)  BIT(BAL_BS_##s)

/*
 * Where each client state may go (besides staying).  A request runs
 * IDLE (or NEW) -> HEAD -> [BODY ->] WAIT -> IDLE; an answer the client
 * does not read parks it in FULL; CLOSING -> LINGER ends it politely.  An
 * error answer may come in HEAD, BODY or WAIT, and is followed by IDLE
 * (keep-alive) or CLOSING.  Anything but CLOSED may be closed at once.
 */
const unsigned bal_client_next[BAL_CS_COUNT] = {
	[BAL_CS_NEW] = CS(HEAD) | CS(CLOSED),
	[BAL_CS_IDLE] = CS(HEAD) | CS(FULL) | CS(CLOSING) | CS(CLOSED),
	[BAL_CS_HEAD] =
		CS(BODY) | CS(WAIT) | CS(IDLE) | CS(CLOSING) | CS(CLOSED),
	[BAL_CS_BODY] = CS(WAIT) | CS(CLOSING) | CS(CLOSED),
	[BAL_CS_WAIT] = CS(IDLE) | CS(CLOSING) | CS(CLOSED),
	[BAL_CS_FULL] = CS(IDLE) | CS(CLOSED),
	[BAL_CS_CLOSING] = CS(LINGER) | CS(CLOSED),
	[BAL_CS_LINGER] = CS(CLOSED),
	[BAL_CS_CLOSED] = 0,
};

/*
 * A backend connection: connect, carry requests (SENT -> BODY -> back to
 * the pool or closed), wait in the pool.  A pooled one is taken as SENT.
 */
const unsigned bal_bconn_next[BAL_BS_COUNT] = {
	[BAL_BS_CONNECTING] = BS(SENT) | BS(CLOSED),
	[BAL_BS_IDLE] = BS(SENT) | BS(CLOSED),
	[BAL_BS_SENT] = BS(BODY) | BS(CLOSED),
	[BAL_BS_BODY] = BS(IDLE) | BS(CLOSED),
	[BAL_BS_CLOSED] = 0,
};

#define STATE_NAME(name, doc) #name,
static const char *const client_names[] = { BAL_CLIENT_STATES(STATE_NAME) };
static const char *const bconn_names[] = { BAL_BCONN_STATES(STATE_NAME) };

const char *
bal_client_state_name(enum bal_client_state s)
{
	return (unsigned)s < BAL_CS_COUNT ? client_names[s] : "?";
}

const char *
bal_bconn_state_name(enum bal_bconn_state s)
{
	return (unsigned)s < BAL_BS_COUNT ? bconn_names[s] : "?";
}

int
bal_client_state_refused(const struct bal_client *c, enum bal_client_state to)
{
	log_warnx_rl("client %s: illegal state change %s -> %s", c->ip,
		     bal_client_state_name(c->state),
		     bal_client_state_name(to));
	return -1;
}

int
bal_bconn_state_refused(const struct bal_bconn *bc, enum bal_bconn_state to)
{
	log_warnx_rl("backend %s: illegal connection state change %s -> %s",
		     bc->be->name, bal_bconn_state_name(bc->state),
		     bal_bconn_state_name(to));
	return -1;
}

const char *
bal_reason(int status)
{
	switch (status) {
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 408:
		return "Request Timeout";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 431:
		return "Request Header Fields Too Large";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Error";
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

size_t
bal_error_response(struct bal_app *app, struct hs_buf *out, int status,
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

struct bal_client *
bal_client_new(struct bal_worker *w, int fd, const struct sockaddr *sa,
	       event_callback_fn rcb, event_callback_fn wcb,
	       event_callback_fn tcb)
{
	struct bal_client *c = hs_xcalloc(1, sizeof(*c));
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->w = w;
	bal_io_init(&c->io, w->base, fd, rcb, wcb, c);
	evtimer_assign(&c->tmr, w->base, tcb, c);
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr,
			  c->ip, sizeof(c->ip));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6,
			  &((const struct sockaddr_in6 *)sa)->sin6_addr, c->ip,
			  sizeof(c->ip));
	else
		strcpy(c->ip, "unknown");
	c->req_ka = 1;
	TAILQ_INSERT_TAIL(&w->clients, c, link);
	w->nclients++;
	BAL_INC(&w->app->conns, 1);
	c->state = BAL_CS_NEW;
	bal_io_rd(&c->io, 1);
	/* A connection that sends nothing gets the head deadline, not idle. */
	bal_client_timer(c, w->tv_header);
	return c;
}

void
bal_client_timer(struct bal_client *c, const struct timeval *tv)
{
	if (tv == NULL)
		event_del(&c->tmr);
	else
		event_add(&c->tmr, tv);
}

struct bal_bconn *
bal_bconn_new(struct bal_worker *w, struct bal_backend *be, int fd,
	      event_callback_fn rcb, event_callback_fn wcb,
	      event_callback_fn tcb)
{
	struct bal_bconn *bc = hs_xcalloc(1, sizeof(*bc));

	bc->w = w;
	bc->be = be;
	bal_io_init(&bc->io, w->base, fd, rcb, wcb, bc);
	evtimer_assign(&bc->tmr, w->base, tcb, bc);
	return bc;
}

void
bal_bconn_close(struct bal_bconn *bc)
{
	struct bal_worker *w;

	if (bc == NULL || bc->state == BAL_BS_CLOSED)
		return;
	w = bc->w;
	if (bc->c != NULL) {
		BAL_INC(&bc->be->active, -1);
		bc->c->bc = NULL;
		bc->c = NULL;
	}
	if (bc->state == BAL_BS_IDLE)
		TAILQ_REMOVE(&w->idle[bc->be->id], bc, link);
	if (bc->counted)
		BAL_INC(&bc->be->conns, -1);
	bc->counted = 0;
	event_del(&bc->tmr);
	bal_io_close(&bc->io);
	bal_bconn_set_state(bc, BAL_BS_CLOSED);
	TAILQ_INSERT_TAIL(&w->closed_bconns, bc, link);
}

void
bal_client_close(struct bal_client *c)
{
	struct bal_worker *w = c->w;

	if (c->state == BAL_CS_CLOSED)
		return;
	bal_bconn_close(c->bc);
	event_del(&c->tmr);
	bal_io_close(&c->io);
	bal_client_set_state(c, BAL_CS_CLOSED);
	TAILQ_REMOVE(&w->clients, c, link);
	TAILQ_INSERT_TAIL(&w->closed_clients, c, link);
	w->nclients--;
	BAL_INC(&w->app->conns, -1);
	/* The worker finishes its drain from its own event, not from here. */
	if (w->draining && w->nclients == 0)
		event_active(w->ev_drain, EV_READ, 0);
}

void
bal_worker_reap(struct bal_worker *w)
{
	struct bal_client *c;
	struct bal_bconn *bc;

	while ((bc = TAILQ_FIRST(&w->closed_bconns)) != NULL) {
		TAILQ_REMOVE(&w->closed_bconns, bc, link);
		free(bc);
	}
	while ((c = TAILQ_FIRST(&w->closed_clients)) != NULL) {
		TAILQ_REMOVE(&w->closed_clients, c, link);
		free(c->fwd);
		free(c);
	}
}

void
bal_client_close_after_flush(struct bal_client *c)
{
	bal_client_set_state(c, BAL_CS_CLOSING);
	bal_io_rd(&c->io, 0);
	if (bal_io_flush(&c->io) < 0) {
		bal_client_close(c);
		return;
	}
	/*
	 * A slow reader gets the idle timeout for the rest of its answer;
	 * once it is all out, the linger timeout.
	 */
	if (evbuffer_get_length(c->io.out) > 0) {
		bal_client_timer(c, c->w->tv_idle);
		return;
	}
	bal_client_timer(c, c->w->tv_linger);
	/*
	 * Lingering close: shut our side, then read and discard until the
	 * peer closes, so that unread request bytes do not turn close(2) into
	 * a reset that destroys the response.
	 */
	shutdown(c->io.fd, SHUT_WR);
	bal_client_set_state(c, BAL_CS_LINGER);
	evbuffer_drain(c->io.in, evbuffer_get_length(c->io.in));
	bal_io_rd(&c->io, 1);
}

int
bal_client_queue_error(struct bal_client *c, int status, const char *why,
		       int close_after)
{
	struct hs_buf b = HS_BUF_INIT;

	bal_bconn_close(c->bc);
	close_after |= c->w->draining || !c->req_ka;
	log_debug("client %s: %d %s", c->ip, status, why);
	bal_error_response(c->w->app, &b, status, why, close_after);
	evbuffer_add(c->io.out, b.data, b.len);
	hs_buf_free(&b);
	c->resp_started = 1;
	return close_after;
}
