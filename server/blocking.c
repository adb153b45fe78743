/*
 * The blocking worker pool (--io blocking): the model of a pre-fork
 * synchronous server (gunicorn sync workers, Apache prefork).  N worker
 * threads each block in accept(2) on the shared listening socket, serve
 * the ONE connection they got until it closes (its keep-alive requests in
 * turn), and only then accept the next.  Every other connection waits in
 * the kernel's listen backlog: at most N clients are served at a time, and
 * an idle keep-alive client holds a worker until it leaves or the idle
 * timeout closes it.
 *
 * HTTP stays libmicrohttpd's: each worker owns a daemon without a listening
 * socket (external epoll mode) and hands it the accepted socket with
 * MHD_add_connection, then runs that daemon on its own thread until the
 * daemon has no connection left.  So the routes, errors and headers are
 * those of the event loops, and srv_worker_get() gives each worker thread
 * its own database connection as it does each loop.  There is no read
 * batcher (one connection has at most one read to batch) and no database
 * threads (a worker waits on SQLite itself: that is the model).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hs_log.h"
#include "hs_util.h"
#include "srv_blocking.h"
#include "srv_core.h"
#include "srv_route.h"

/* A worker's life: waits in accept(2), serves one connection, ends. */
enum blk_state {
	BLK_ACCEPTING, /**< blocked in accept(2), or about to be */
	BLK_SERVING,   /**< one connection handed to its daemon */
	BLK_DONE       /**< the listener is shut down or the server stops */
};

struct blk_worker {
	struct srv_blocking *pool;
	struct MHD_Daemon *mhd; /* no listening socket; one connection */
	enum blk_state state;   /* only its own thread writes it */
	pthread_t thread;
	int started; /* the thread runs (join it) */
};

struct srv_blocking {
	struct srv *srv;
	struct blk_worker *workers; /* srv->cfg.threads of them */
	int n;
};

static const char *const blk_state_names[] = {
	[BLK_ACCEPTING] = "accepting",
	[BLK_SERVING] = "serving",
	[BLK_DONE] = "done",
};

/* The one place a worker's state changes; keeps the busy count. */
static void
blk_set_state(struct blk_worker *w, enum blk_state to)
{
	struct srv_blocking *p = w->pool;

	if (w->state == to)
		return;
	if (to == BLK_SERVING)
		__atomic_fetch_add(&p->srv->blocking_busy, 1, __ATOMIC_RELAXED);
	else if (w->state == BLK_SERVING)
		__atomic_fetch_sub(&p->srv->blocking_busy, 1, __ATOMIC_RELAXED);
	log_debug("blocking worker %d: %s -> %s", (int)(w - p->workers),
		  blk_state_names[w->state], blk_state_names[to]);
	w->state = to;
}

/* MHD's own diagnostics, into our log (as the event loops do). */
static void
blk_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_warnx_rl("libmicrohttpd: %s", msg);
}

/* Open connections, for /stats (as the event loops count them). */
static void
blk_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
		  enum MHD_ConnectionNotificationCode code)
{
	struct srv *s = cls;

	(void)conn;
	(void)socket_context;
	if (code == MHD_CONNECTION_NOTIFY_STARTED)
		__atomic_fetch_add(&s->open_conns, 1, __ATOMIC_RELAXED);
	else if (code == MHD_CONNECTION_NOTIFY_CLOSED)
		__atomic_fetch_sub(&s->open_conns, 1, __ATOMIC_RELAXED);
}

static int
stopping(const struct srv *s)
{
	return __atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE);
}

/* Connections the worker's daemon still holds (closed ones cleaned up). */
static unsigned
blk_connections(struct blk_worker *w)
{
	const union MHD_DaemonInfo *info =
		MHD_get_daemon_info(w->mhd,
				    MHD_DAEMON_INFO_CURRENT_CONNECTIONS);

	return info != NULL ? info->num_connections : 0;
}

/*
 * One accepted socket, or -1 once the listener is shut down (srv_shutdown
 * quiesces with shutdown(2), which wakes every blocked accept(2) with
 * EINVAL) or the server stops.  Transient failures are retried.
 */
static int
blk_accept(struct blk_worker *w, struct sockaddr_storage *addr,
	   socklen_t *addrlen)
{
	struct srv *s = w->pool->srv;

	while (!stopping(s)) {
		int fd;

		*addrlen = sizeof(*addr);
		fd = accept4(s->listen_fd, (struct sockaddr *)addr, addrlen,
			     SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd >= 0)
			return fd;
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EINVAL || errno == EBADF)
			return -1;
		/* EMFILE, ENFILE, ENOBUFS, ENOMEM: the backlog keeps the
		   client until a descriptor or some memory is free. */
		log_warn_rl("accept");
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	}
	return -1;
}

static void *
blk_main(void *arg)
{
	struct blk_worker *w = arg;
	struct srv *s = w->pool->srv;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int fd;

	while ((fd = blk_accept(w, &addr, &addrlen)) >= 0) {
		/* MHD closes the socket when it fails, too. */
		if (MHD_add_connection(w->mhd, fd, (struct sockaddr *)&addr,
				       addrlen) != MHD_YES) {
			log_warn_rl("cannot hand a connection to "
				    "libmicrohttpd");
			continue;
		}
		blk_set_state(w, BLK_SERVING);
		/* Keep-alive requests are served in turn until the client
		   closes, the idle timeout fires or the server stops. */
		while (!stopping(s) && blk_connections(w) > 0)
			MHD_run_wait(w->mhd, -1);
		blk_set_state(w, BLK_ACCEPTING);
	}
	blk_set_state(w, BLK_DONE);
	return NULL;
}

/* Worker i's daemon; s->wake_fd in its epoll set ends its waits at stop. */
static int
blk_start_daemon(struct srv_blocking *p, int i, char *err, size_t errlen)
{
	struct srv *s = p->srv;
	struct blk_worker *w = &p->workers[i];
	struct epoll_event wake = { .events = EPOLLIN, .data.ptr = NULL };
	const union MHD_DaemonInfo *info;
	/*
	 * A worker is held by its connection until the peer closes or goes
	 * idle for --idle-timeout-ms: that is the model.  The event loops'
	 * head deadline and caps (conns.c) are not applied here.
	 */
	unsigned idle_s = (s->cfg.idle_timeout_ms + 999) / 1000;

	w->pool = p;
	w->state = BLK_ACCEPTING;
	w->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
					  MHD_USE_NO_LISTEN_SOCKET,
				  0, NULL, NULL, srv_on_access, s,
				  MHD_OPTION_EXTERNAL_LOGGER, blk_mhd_log, s,
				  MHD_OPTION_CONNECTION_LIMIT, 1u,
				  MHD_OPTION_CONNECTION_TIMEOUT,
				  idle_s > 0 ? idle_s : 1u,
				  MHD_OPTION_NOTIFY_COMPLETED, srv_on_completed,
				  s, MHD_OPTION_NOTIFY_CONNECTION,
				  blk_on_connection, s,
				  MHD_OPTION_UNESCAPE_CALLBACK, srv_unescape, s,
				  MHD_OPTION_END);
	if (w->mhd == NULL) {
		snprintf(err, errlen,
			 "cannot start libmicrohttpd for "
			 "blocking worker %d",
			 i);
		return -1;
	}
	/* As the event loops: MHD skips an event whose data is NULL. */
	info = MHD_get_daemon_info(w->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (info == NULL ||
	    epoll_ctl(info->epoll_fd, EPOLL_CTL_ADD, s->wake_fd, &wake) < 0) {
		snprintf(err, errlen, "cannot watch the stop signal: %s",
			 strerror(errno));
		return -1;
	}
	return 0;
}

int
srv_blocking_start(struct srv *s, char *err, size_t errlen)
{
	struct srv_blocking *p = hs_xcalloc(1, sizeof(*p));
	int fl;

	s->blocking = p;
	p->srv = s;
	p->n = s->cfg.threads;
	p->workers = hs_xcalloc((size_t)p->n, sizeof(*p->workers));
	/*
	 * Workers block in accept(2), so that the kernel wakes one of them
	 * per connection and the rest of the clients wait in the backlog.
	 */
	fl = fcntl(s->listen_fd, F_GETFL);
	if (fl < 0 || fcntl(s->listen_fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		snprintf(err, errlen, "cannot make the listener blocking: %s",
			 strerror(errno));
		return -1;
	}
	for (int i = 0; i < p->n; i++)
		if (blk_start_daemon(p, i, err, errlen) < 0)
			return -1;
	for (int i = 0; i < p->n; i++) {
		int rc = pthread_create(&p->workers[i].thread, NULL, blk_main,
					&p->workers[i]);

		if (rc != 0) {
			snprintf(err, errlen, "cannot start a thread: %s",
				 strerror(rc));
			return -1;
		}
		p->workers[i].started = 1;
	}
	return 0;
}

void
srv_blocking_free(struct srv_blocking *p)
{
	if (p == NULL)
		return;
	for (int i = 0; i < p->n; i++)
		if (p->workers[i].started)
			pthread_join(p->workers[i].thread, NULL);
	for (int i = 0; i < p->n; i++)
		if (p->workers[i].mhd != NULL)
			MHD_stop_daemon(p->workers[i].mhd);
	free(p->workers);
	free(p);
}
