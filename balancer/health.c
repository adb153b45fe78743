/*
 * Active health checks: every --health-interval-ms each backend of the
 * current set gets "GET <health-path>" on a fresh connection; a 2xx or 3xx
 * status is a success.  --fall failures in a row take an up backend out,
 * --rise successes in a row bring a down one back.  Passive checks (connect
 * errors in the proxy) mark a backend down directly; the rise count then
 * starts from zero here.  Runs on worker 0's loop only; not on the hot
 * path, so plain bufferevents are fine.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bal.h"
#include "hs_log.h"
#include "hs_util.h"

struct bal_hc {
	struct bal_app *app;
	struct bal_backend *b;
	struct event *tick;
	struct bufferevent *bev;
	int ok, fail;
	int seen_up;
};

static void
hc_result(struct bal_hc *hc, int success, const char *why)
{
	struct bal_app *app = hc->app;
	struct bal_backend *b = hc->b;
	int up = BAL_GET(&b->up);

	if (hc->bev != NULL) {
		bufferevent_free(hc->bev);
		hc->bev = NULL;
	}
	if (up != hc->seen_up) {
		/* Changed behind our back (passive check): count afresh. */
		hc->ok = hc->fail = 0;
		hc->seen_up = up;
	}
	if (success) {
		hc->fail = 0;
		if (!up && ++hc->ok >= app->cfg.rise) {
			bal_backend_set_up(b, 1, "health check passed");
			hc->seen_up = 1;
			hc->ok = 0;
		}
	} else {
		hc->ok = 0;
		if (up && ++hc->fail >= app->cfg.fall) {
			bal_backend_set_up(b, 0, why);
			hc->seen_up = 0;
			hc->fail = 0;
		}
	}
}

static void
hc_read(struct bufferevent *bev, void *arg)
{
	struct bal_hc *hc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr eol = evbuffer_search(in, "\r\n", 2, NULL);
	const char *p;

	if (eol.pos < 0) {
		if (evbuffer_get_length(in) > 1024)
			hc_result(hc, 0, "health check: bad status line");
		return;
	}
	p = (const char *)evbuffer_pullup(in, eol.pos);
	if (eol.pos >= 12 && strncmp(p, "HTTP/1.", 7) == 0 && p[8] == ' ' &&
	    (p[9] == '2' || p[9] == '3'))
		hc_result(hc, 1, "");
	else
		hc_result(hc, 0, "health check: bad status");
}

static void
hc_event(struct bufferevent *bev, short what, void *arg)
{
	struct bal_hc *hc = arg;

	if (what & BEV_EVENT_CONNECTED)
		return;
	hc_result(hc, 0,
		  (what & BEV_EVENT_TIMEOUT) ? "health check timed out"
					     : "health check failed");
}

static void
hc_tick(evutil_socket_t fd, short what, void *arg)
{
	struct bal_hc *hc = arg;
	struct bal_app *app = hc->app;
	int ms = app->cfg.health_interval_ms;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	if (hc->bev != NULL)
		hc_result(hc, 0, "health check timed out");
	hc->bev = bufferevent_socket_new(app->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (hc->bev == NULL)
		return;
	bufferevent_setcb(hc->bev, hc_read, NULL, hc_event, hc);
	bufferevent_set_timeouts(hc->bev, &tv, &tv);
	bufferevent_enable(hc->bev, EV_READ | EV_WRITE);
	evbuffer_add_printf(bufferevent_get_output(hc->bev),
			    "GET %s HTTP/1.1\r\nHost: %s\r\n"
			    "User-Agent: hs-balancer-health\r\n"
			    "Connection: close\r\n\r\n",
			    app->cfg.health_path, hc->b->name);
	if (bufferevent_socket_connect(hc->bev, (struct sockaddr *)&hc->b->addr,
				       (int)hc->b->addrlen) < 0) {
		if (bal_err_local(errno)) {
			/* No socket to check with says nothing of the backend. */
			log_warn_rl("health check of %s skipped", hc->b->name);
			bufferevent_free(hc->bev);
			hc->bev = NULL;
			return;
		}
		hc_result(hc, 0, "health check: connect failed");
	}
}

static void
hc_free(struct bal_hc *hc)
{
	if (hc->bev)
		bufferevent_free(hc->bev);
	event_free(hc->tick);
	hc->b->hc = NULL;
	free(hc);
}

void
bal_health_sync(struct bal_app *app)
{
	struct bal_backend *b;
	int ms = app->cfg.health_interval_ms;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	TAILQ_FOREACH(b, &app->backends, all)
	{
		int removed = BAL_GET(&b->removed);
		if (removed && b->hc != NULL) {
			hc_free(b->hc);
		} else if (!removed && b->hc == NULL) {
			struct bal_hc *hc = hs_xcalloc(1, sizeof(*hc));
			hc->app = app;
			hc->b = b;
			hc->seen_up = BAL_GET(&b->up);
			hc->tick = event_new(app->base, -1, EV_PERSIST, hc_tick,
					     hc);
			b->hc = hc;
			event_add(hc->tick, &tv);
		}
	}
}

void
bal_health_stop(struct bal_app *app)
{
	struct bal_backend *b;

	TAILQ_FOREACH(b, &app->backends, all)
	if (b->hc != NULL)
		hc_free(b->hc);
}
