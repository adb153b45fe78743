/*
 * Workers: one event loop per worker with its own listener, client list
 * and idle backend-connection pools; accepting (with --max-conns, resting
 * after an accept error) and draining on SIGTERM.  The flow of each
 * request is proxy.c's; the life of each connection client.c's.
 */
#include <errno.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "hs_buf.h"
#include "hs_log.h"
#include "hs_util.h"
#include "proxy.h"

/* Answers 503 on a fresh socket and closes it: past --max-conns. */
static void
reject(struct bal_app *app, int fd)
{
	struct hs_buf b = HS_BUF_INIT;

	bal_error_response(app, &b, 503, "too many connections", 1);
	/* Best effort: a fresh socket has room for a small answer. */
	if (write(fd, b.data, b.len) < 0)
		log_debug("reject write: %s", strerror(errno));
	hs_buf_free(&b);
	shutdown(fd, SHUT_WR);
	close(fd);
	BAL_INC(&app->rejected, 1);
	log_warnx_rl("%d clients connected (--max-conns): answering new ones "
		     "503",
		     app->cfg.max_conns);
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
	  int slen, void *arg)
{
	struct bal_worker *w = arg;
	struct bal_app *app = w->app;

	BAL_INC(&app->accepted, 1);
	if (app->cfg.max_conns > 0 &&
	    BAL_GET(&app->conns) >= app->cfg.max_conns) {
		reject(app, fd);
		return;
	}
	bal_client_new(w, fd, sa, bal_proxy_client_read_cb,
		       bal_proxy_client_write_cb, bal_proxy_client_timer_cb);
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
close_pools(struct bal_worker *w)
{
	struct bal_bconn *bc;

	for (int i = 0; i < BAL_MAX_BACKENDS; i++)
		while ((bc = TAILQ_FIRST(&w->idle[i])) != NULL)
			bal_bconn_close(bc);
}

/* The drain is over (or its deadline passed): leave the loop. */
static void
finish(struct bal_worker *w)
{
	if (w->finished)
		return;
	w->finished = 1;
	close_pools(w);
	bal_worker_reap(w);
	if (w->ev_deadline)
		event_del(w->ev_deadline);
	event_base_loopexit(w->base, NULL);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bal_worker *w = arg;

	log_warnx("worker %d: drain deadline passed with %d connections",
		  w->idx, w->nclients);
	finish(w);
}

/* Stops accepting; idle keep-alive connections go now. */
static void
drain_start(struct bal_worker *w)
{
	struct bal_client *c, *tmp;
	int ms = w->app->cfg.drain_timeout_ms;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	w->draining = 1;
	if (w->lis != NULL) {
		evconnlistener_free(w->lis);
		w->lis = NULL;
	}
	event_del(w->ev_resume);
	/* The others close after their response. */
	for (c = TAILQ_FIRST(&w->clients); c != NULL; c = tmp) {
		tmp = TAILQ_NEXT(c, link);
		if ((c->state == BAL_CS_NEW || c->state == BAL_CS_IDLE) &&
		    evbuffer_get_length(c->io.in) == 0)
			bal_client_close(c);
	}
	bal_worker_reap(w);
	if (w->nclients > 0) {
		w->ev_deadline = evtimer_new(w->base, deadline_cb, w);
		event_add(w->ev_deadline, &tv);
	}
}

/*
 * Activated by bal_worker_drain() to start, and by bal_client_close() when
 * the last client of a draining worker is gone.
 */
static void
drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bal_worker *w = arg;

	if (!w->draining)
		drain_start(w);
	if (w->nclients == 0)
		finish(w);
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
	TAILQ_INIT(&w->closed_clients);
	TAILQ_INIT(&w->closed_bconns);
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

	if (w == NULL)
		return;
	w->draining = 0; /* no drain event from bal_client_close */
	while ((c = TAILQ_FIRST(&w->clients)) != NULL)
		bal_client_close(c);
	close_pools(w);
	bal_worker_reap(w);
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
