/*
 * The server handle: binds the listener, runs the event loops and the
 * database threads, and shuts down gracefully: quiesce (stop accepting),
 * drain the requests already received, stop, close databases.
 *
 * Each loop is a libmicrohttpd daemon in external epoll mode over its own
 * descriptor of the shared listening socket: what MHD's thread pool does,
 * plus one thing the pool cannot do.  After every pass over its ready
 * connections the loop runs its read batcher, so the cacheable reads that
 * pass parked share one memcached multi-get, asked for and answered on the
 * same thread, with no thread hand-off.  With --db-threads, whatever
 * needs the database goes to a database thread (pool.c) with its
 * connection suspended; without, the loop runs it.  With --io blocking,
 * blocking.c's workers serve instead of the loops.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "hs_log.h"
#include "hs_util.h"
#include "srv_blocking.h"
#include "srv_conns.h"
#include "srv_core.h"
#include "srv_pool.h"
#include "srv_route.h"
#include "srv_worker.h"

/* Clients over --max-conns that one loop may hold while it answers them
   503 (main.c keeps that many descriptors in reserve). */
#define SRV_REFUSE_ROOM 32

void
srv_config_defaults(struct srv_config *c)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	memset(c, 0, sizeof(*c));
	snprintf(c->host, sizeof(c->host), "127.0.0.1");
	c->port = 8081;
	/* Database work runs on the loops unless --db-threads asks
	   otherwise (README, "Database threads": which wins depends on how
	   many processes share the cores). */
	c->threads = n > 0 ? (int)n : 1;
	c->db_threads = 0;
	c->max_body = 65536;
	c->busy_timeout_ms = 5000;
	c->durability_full = 1;  /* README, "Durability" */
	c->read_your_writes = 1; /* srv_replica.h */
	c->marker_ttl_s = 5;
	c->conn_limit = 8192;
	/* Half the table: one address cannot lock the others out, and a
	   proxy in front (every request from one address) still gets 4096. */
	c->conn_limit_per_ip = 4096;
	c->header_timeout_ms = 10000;
	/* Twice the balancer's 15 s pool expiry, so a pooled connection is
	   always retired by the balancer, never closed under it by us. */
	c->idle_timeout_ms = 30000;
	c->drain_timeout_ms = 10000;
	c->cache_batch = 64;
	c->listen_fd = -1;
}

/* MHD's own diagnostics, into our log. */
static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_warnx_rl("libmicrohttpd: %s", msg);
}

/*
 * A loop thread: one MHD pass (blocking in MHD's own epoll_wait until
 * there is work), then one multi-get for the cacheable reads that pass
 * parked.  A parked read stays on MHD's ready list without a response, so
 * the next pass does not block, and calls the handler again, which serves
 * the answer.  Last, the connection guard closes the connections whose
 * head is overdue or whose client has gone (conns.c); the wait ends at
 * the earliest head deadline.
 */
static void *
loop_main(void *arg)
{
	struct srv_loop *l = arg;
	struct srv *s = l->srv;

	while (!__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE)) {
		int64_t ms = srv_conns_wait_ms(l);

		MHD_run_wait(l->mhd, ms > INT32_MAX ? INT32_MAX : (int32_t)ms);
		if (l->batcher != NULL)
			cache_batcher_run(l->batcher);
		srv_conns_sweep(l);
	}
	return NULL;
}

/*
 * Stops accepting.  Each daemon hands its descriptor back, and shutdown(2)
 * makes the socket refuse new connections at once; the descriptors are
 * closed only once the loops are gone (a loop may be in accept(2) on its
 * own right now).  Idempotent.
 */
static void
quiesce_loops(struct srv *s)
{
	for (int i = 0; i < s->cfg.threads; i++) {
		struct srv_loop *l = &s->loops[i];

		if (l->mhd != NULL && l->quiesced_fd < 0)
			l->quiesced_fd = MHD_quiesce_daemon(l->mhd);
	}
	if (s->listen_fd >= 0)
		shutdown(s->listen_fd, SHUT_RD);
}

/*
 * Joins the loop threads and stops every daemon.  Each loop ran its batch
 * after its last pass, so nothing is queued; a read answered but not yet
 * served (only when the drain timed out) goes with its connection.
 */
static void
stop_loops(struct srv *s)
{
	uint64_t one = 1;

	quiesce_loops(s);
	__atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
	if (s->wake_fd >= 0 && write(s->wake_fd, &one, sizeof(one)) < 0)
		fatal("cannot wake the worker threads");
	srv_blocking_free(s->blocking);
	s->blocking = NULL;
	for (int i = 0; i < s->cfg.threads; i++)
		if (s->loops[i].started) {
			pthread_join(s->loops[i].thread, NULL);
			s->loops[i].started = 0;
		}
	/* Before MHD_stop_daemon: a database thread may still resume a
	   connection, and the daemon frees its requests. */
	srv_pool_free(s->pool);
	s->pool = NULL;
	for (int i = 0; i < s->cfg.threads; i++) {
		struct srv_loop *l = &s->loops[i];

		cache_batcher_free(l->batcher);
		l->batcher = NULL;
		if (l->mhd != NULL)
			MHD_stop_daemon(l->mhd);
		l->mhd = NULL;
		hs_close(&l->quiesced_fd);
		hs_close(&l->resume_fd);
		hs_close(&l->watch_fd);
	}
	hs_close(&s->wake_fd);
	hs_close(&s->listen_fd);
}

/* Loop i's daemon over its own descriptor of the listening socket. */
static int
start_loop(struct srv *s, int i, char *err, size_t errlen)
{
	struct srv_loop *l = &s->loops[i];
	/* Database threads suspend and resume connections. */
	unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
			 (s->cfg.db_threads > 0 ? MHD_ALLOW_SUSPEND_RESUME : 0);
	/* Any loop may hold every connection: the guard (conns.c) counts
	   them across loops and answers 503 over the cap, so MHD's own cap
	   (past which it stops accepting) leaves room for those answers. */
	unsigned limit = s->cfg.conn_limit + SRV_REFUSE_ROOM;
	/* MHD's inactivity timer (seconds, reset by every byte): for stalled
	   bodies and unread responses; the guard times the heads. */
	unsigned idle_s = (s->cfg.idle_timeout_ms + 999) / 1000;
	struct epoll_event wake = { .events = EPOLLIN, .data.ptr = NULL };
	struct epoll_event resume = { .events = EPOLLIN | EPOLLET,
				      .data.ptr = NULL };
	struct epoll_event watch = { .events = EPOLLIN, .data.ptr = NULL };
	const union MHD_DaemonInfo *info;
	int fd;

	l->srv = s;
	TAILQ_INIT(&l->head_first);
	TAILQ_INIT(&l->head_next);
	l->watch_fd = epoll_create1(EPOLL_CLOEXEC);
	if (l->watch_fd < 0) {
		snprintf(err, errlen, "epoll_create1: %s", strerror(errno));
		return -1;
	}
	if (s->cfg.cache != NULL && s->cfg.cache_batch > 0) {
		l->batcher = cache_batcher_new(s->cfg.cache, s->cfg.cache_batch,
					       err, errlen);
		if (l->batcher == NULL)
			return -1;
	}
	fd = dup(s->listen_fd);
	if (fd < 0) {
		snprintf(err, errlen, "cannot dup the listening socket: %s",
			 strerror(errno));
		return -1;
	}
	/*
	 * MHD_OPTION_STRICT_FOR_CLIENT stays at its default: in 0.9.75 level 1
	 * only turns a missing Host and a space in the URL into MHD's HTML
	 * 400 (hs-server answers the first in JSON, router.c), and the check
	 * for whitespace before a colon sits at level -1.  router.c checks
	 * the head instead, where MHD hands it over.
	 */
	l->mhd = MHD_start_daemon(
		flags, 0, NULL, NULL, srv_on_access, s,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
		MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
		limit > 0 ? limit : 1u, MHD_OPTION_CONNECTION_TIMEOUT,
		idle_s > 0 ? idle_s : 1u, MHD_OPTION_NOTIFY_COMPLETED,
		srv_on_completed, s,
		/* each connection's guard state keeps l (router.c) */
		MHD_OPTION_NOTIFY_CONNECTION, srv_on_connection, l,
		MHD_OPTION_UNESCAPE_CALLBACK, srv_unescape, s, MHD_OPTION_END);
	if (l->mhd == NULL) {
		close(fd);
		snprintf(err, errlen, "cannot start libmicrohttpd on %s:%d",
			 s->cfg.host, s->port);
		return -1;
	}
	/*
	 * The stop signal goes into MHD's own epoll set, so that the loop
	 * waits in MHD alone: one epoll_wait per pass.  MHD skips an event
	 * whose data pointer is NULL (its own shutdown signal); it only wakes
	 * MHD_run_wait, after which the loop sees s->stopping.  The guard's
	 * watch set goes in the same way (level triggered: it stays ready
	 * until the sweep after the pass has read it).
	 */
	info = MHD_get_daemon_info(l->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (info == NULL ||
	    epoll_ctl(info->epoll_fd, EPOLL_CTL_ADD, s->wake_fd, &wake) < 0 ||
	    epoll_ctl(info->epoll_fd, EPOLL_CTL_ADD, l->watch_fd, &watch) < 0) {
		snprintf(err, errlen, "cannot watch the stop signal: %s",
			 strerror(errno));
		return -1;
	}
	/*
	 * Likewise the database threads' "resumed" signal.  It is edge
	 * triggered, so it is never read: each write is one wake-up, and
	 * MHD picks the resumed connections up at the start of its next
	 * pass.  (The counter would take 2^64 writes to fill.)
	 */
	if (s->cfg.db_threads == 0)
		return 0;
	l->resume_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->resume_fd < 0 || epoll_ctl(info->epoll_fd, EPOLL_CTL_ADD,
					  l->resume_fd, &resume) < 0) {
		snprintf(err, errlen, "cannot watch the resume signal: %s",
			 strerror(errno));
		return -1;
	}
	return 0;
}

struct srv *
srv_new(const struct srv_config *c, char *err, size_t errlen)
{
	struct srv *s = hs_xcalloc(1, sizeof(*s));
	int bound = 0;

	s->cfg = *c;
	s->listen_fd = c->listen_fd;
	s->wake_fd = -1;
	s->started_ns = hs_now_ns();
	pthread_mutex_init(&s->wlock, NULL);
	if (s->cfg.threads < 1)
		s->cfg.threads = 1;
	s->loops = hs_xcalloc((size_t)s->cfg.threads, sizeof(*s->loops));
	for (int i = 0; i < s->cfg.threads; i++) {
		s->loops[i].quiesced_fd = -1;
		s->loops[i].resume_fd = -1;
		s->loops[i].watch_fd = -1;
	}
	s->ips = srv_ip_table_new();
	if (s->cfg.ndb_read > 0) {
		s->reps = hs_xcalloc(1, sizeof(*s->reps));
		s->reps->n = s->cfg.ndb_read < SRV_READ_MAX ? s->cfg.ndb_read
							    : SRV_READ_MAX;
		s->reps->ryw = s->cfg.read_your_writes;
		for (int i = 0; i < s->reps->n; i++)
			s->reps->r[i].url = s->cfg.db_read[i];
	}
	if (s->cfg.db_threads < 0)
		s->cfg.db_threads = 0;
	s->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (s->wake_fd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto fail;
	}
	if (s->listen_fd >= 0)
		bound = c->port;
	else
		s->listen_fd = hs_listen_tcp(c->host, c->port, 1024, 1, &bound);
	if (s->listen_fd < 0) {
		snprintf(err, errlen, "cannot listen on %s:%d: %s", c->host,
			 c->port, strerror(errno));
		goto fail;
	}
	s->port = bound;
	if (s->cfg.id == NULL) {
		snprintf(s->idbuf, sizeof(s->idbuf), "hs-server-%d", bound);
		s->cfg.id = s->idbuf;
	}
	if (s->cfg.io == SRV_IO_BLOCKING) {
		/* Workers that wait on SQLite themselves: no database threads. */
		if (s->cfg.db_threads > 0) {
			snprintf(err, errlen,
				 "blocking workers take no "
				 "database threads");
			goto fail;
		}
		if (srv_blocking_start(s, err, errlen) < 0)
			goto fail;
		return s;
	}
	for (int i = 0; i < s->cfg.threads; i++)
		if (start_loop(s, i, err, errlen) < 0)
			goto fail;
	if (s->cfg.db_threads > 0) {
		s->pool = srv_pool_new(s, s->cfg.db_threads, srv_run_on_pool, s,
				       err, errlen);
		if (s->pool == NULL)
			goto fail;
	}
	for (int i = 0; i < s->cfg.threads; i++) {
		int rc = pthread_create(&s->loops[i].thread, NULL, loop_main,
					&s->loops[i]);

		if (rc != 0) {
			snprintf(err, errlen, "cannot start a thread: %s",
				 strerror(rc));
			goto fail;
		}
		s->loops[i].started = 1;
	}
	return s;
fail:
	stop_loops(s);
	srv_ip_table_free(s->ips);
	pthread_mutex_destroy(&s->wlock);
	free(s->loops);
	free(s->reps);
	free(s);
	return NULL;
}

int
srv_port(const struct srv *s)
{
	return s->port;
}

const char *
srv_id(const struct srv *s)
{
	return s->cfg.id;
}

void
srv_shutdown(struct srv *s)
{
	uint64_t deadline;

	if (s == NULL || s->stopped)
		return;
	s->stopped = 1;
	quiesce_loops(s);
	/* Requests already received are answered before the threads stop. */
	deadline = hs_now_ns() + (uint64_t)s->cfg.drain_timeout_ms * 1000000;
	while (__atomic_load_n(&s->stats.inflight, __ATOMIC_RELAXED) > 0) {
		struct timespec ts = { 0, 5 * 1000 * 1000 };

		if (hs_now_ns() > deadline) {
			log_warnx("shutdown: %llu requests still in flight, "
				  "stopping anyway",
				  (unsigned long long)
					  __atomic_load_n(&s->stats.inflight,
							  __ATOMIC_RELAXED));
			break;
		}
		nanosleep(&ts, NULL);
	}
	stop_loops(s);
}

void
srv_free(struct srv *s)
{
	if (s == NULL)
		return;
	srv_shutdown(s);
	srv_workers_free(s);
	srv_ip_table_free(s->ips);
	free(s->loops);
	free(s->reps);
	pthread_mutex_destroy(&s->wlock);
	free(s);
}
