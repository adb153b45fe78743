/*
 * A blocking HTTP/1.1 client over libevent's evhttp: each connection owns
 * an event base, and a request runs the loop until its callback fires.
 * evhttp does the framing (Content-Length, chunked, keep-alive, reconnects),
 * so the checker measures the server, not a hand-written parser.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "checker.h"
#include "hs_util.h"

struct chk_conn {
	struct event_base *base;
	struct evhttp_connection *evcon;
	char host[256];
	int port;
	struct timeval timeout;
	char hosthdr[300];
};

/* What a request's callback hands back to chk_conn_request(). */
struct chk_call {
	struct chk_conn *c;
	struct hs_buf *body;
	int status;
	int done;
};

/* (Re)creates the evhttp connection; a pending request dies with it. */
static int
chk_conn_open(struct chk_conn *c)
{
	if (c->evcon != NULL)
		evhttp_connection_free(c->evcon);
	c->evcon = evhttp_connection_base_new(c->base, NULL, c->host,
					      (unsigned short)c->port);
	if (c->evcon == NULL)
		return -1;
	evhttp_connection_set_timeout_tv(c->evcon, &c->timeout);
	/* One attempt per request: a failure is counted, the next request
	 * reconnects. */
	evhttp_connection_set_retries(c->evcon, 0);
	return 0;
}

struct chk_conn *
chk_conn_new(const char *host, int port, int timeout_ms)
{
	struct chk_conn *c = hs_xcalloc(1, sizeof(*c));

	snprintf(c->host, sizeof(c->host), "%s", host);
	c->port = port;
	c->timeout.tv_sec = timeout_ms / 1000;
	c->timeout.tv_usec = (timeout_ms % 1000) * 1000;
	c->base = event_base_new();
	if (c->base == NULL || chk_conn_open(c) != 0)
		goto fail;
	if (strchr(host, ':') != NULL)
		snprintf(c->hosthdr, sizeof(c->hosthdr), "[%s]:%d", host, port);
	else
		snprintf(c->hosthdr, sizeof(c->hosthdr), "%s:%d", host, port);
	return c;
fail:
	chk_conn_free(c);
	return NULL;
}

void
chk_conn_free(struct chk_conn *c)
{
	if (c == NULL)
		return;
	if (c->evcon != NULL)
		evhttp_connection_free(c->evcon);
	if (c->base != NULL)
		event_base_free(c->base);
	free(c);
}

static void
chk_on_response(struct evhttp_request *req, void *arg)
{
	struct chk_call *call = arg;

	call->done = 1;
	/* libevent 2.1 passes NULL (or a status of 0) when the connection
	 * failed or timed out. */
	if (req == NULL || evhttp_request_get_response_code(req) == 0) {
		call->status = -1;
	} else {
		struct evbuffer *in = evhttp_request_get_input_buffer(req);
		size_t n = evbuffer_get_length(in);

		call->status = evhttp_request_get_response_code(req);
		hs_buf_reserve(call->body, n + 1);
		evbuffer_remove(in, call->body->data, n);
		call->body->len = n;
		call->body->data[n] = '\0';
	}
	event_base_loopbreak(call->c->base);
}

int
chk_conn_request(struct chk_conn *c, const char *method, const char *path,
		 const char *json_body, struct hs_buf *body)
{
	struct chk_call call = { c, body, -1, 0 };
	struct evhttp_request *req;
	struct evkeyvalq *h;
	enum evhttp_cmd_type cmd;

	if (strcmp(method, "GET") == 0)
		cmd = EVHTTP_REQ_GET;
	else if (strcmp(method, "PUT") == 0)
		cmd = EVHTTP_REQ_PUT;
	else if (strcmp(method, "POST") == 0)
		cmd = EVHTTP_REQ_POST;
	else
		return -1;
	hs_buf_reset(body);
	if (c->evcon == NULL && chk_conn_open(c) != 0)
		return -1;
	req = evhttp_request_new(chk_on_response, &call);
	if (req == NULL)
		return -1;
	h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", c->hosthdr);
	if (json_body != NULL) {
		evhttp_add_header(h, "Content-Type", "application/json");
		evbuffer_add(evhttp_request_get_output_buffer(req), json_body,
			     strlen(json_body));
	}
	/* evhttp owns req from here on, and frees it after the callback. */
	if (evhttp_make_request(c->evcon, req, cmd, path) != 0)
		return -1;
	event_base_dispatch(c->base);
	if (!call.done) {
		/* The loop ran dry without an answer (should not happen: the
		 * timeout keeps an event pending).  The request still points at
		 * this stack frame, so drop it with its connection. */
		(void)chk_conn_open(c);
		return -1;
	}
	return call.status;
}
