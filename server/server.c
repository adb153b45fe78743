/*
 * The server handle: binds the listener, starts libmicrohttpd in
 * thread-pool mode (each worker thread runs its own epoll loop over the
 * shared listening socket), and shuts it down gracefully: quiesce (stop
 * accepting), drain the requests already received, stop, close databases.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hs_log.h"
#include "hs_util.h"
#include "srv_int.h"

void
srv_config_defaults(struct srv_config *c)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	memset(c, 0, sizeof(*c));
	snprintf(c->host, sizeof(c->host), "127.0.0.1");
	c->port = 8081;
	c->threads = n > 0 ? (int)n : 1;
	c->max_body = 65536;
	c->busy_timeout_ms = 5000;
	c->conn_limit = 8192;
	c->conn_timeout_s = 60;
	c->drain_timeout_ms = 10000;
	c->cache_batch = 64;
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
	log_warnx("libmicrohttpd: %s", msg);
}

/* Open connections, for the batcher's choice (see srv_cache_batch_begin). */
static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
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

struct srv *
srv_new(const struct srv_config *c, char *err, size_t errlen)
{
	struct srv *s = hs_xcalloc(1, sizeof(*s));
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
			 MHD_USE_ITC | MHD_USE_ERROR_LOG;
	int bound = 0;

	s->cfg = *c;
	s->listen_fd = -1;
	s->started_ns = hs_now_ns();
	pthread_mutex_init(&s->wlock, NULL);
	if (s->cfg.threads < 1)
		s->cfg.threads = 1;
	s->listen_fd = hs_listen_tcp(c->host, c->port, 1024, 1, &bound);
	if (s->listen_fd < 0) {
		snprintf(err, errlen, "cannot listen on %s:%d: %s", c->host,
			 c->port, strerror(errno));
		goto fail;
	}
	s->port = bound;
	if (c->cache != NULL && c->cache_batch > 0) {
		s->batcher = cache_batcher_new(c->cache, c->cache_batch, err,
					       errlen);
		if (s->batcher == NULL)
			goto fail;
		flags |= MHD_ALLOW_SUSPEND_RESUME;
	}
	if (s->cfg.id == NULL) {
		snprintf(s->idbuf, sizeof(s->idbuf), "hs-server-%d", bound);
		s->cfg.id = s->idbuf;
	}
	s->mhd = MHD_start_daemon(
		flags, 0, NULL, NULL, srv_on_access, s,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
		MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->cfg.threads,
		MHD_OPTION_CONNECTION_LIMIT, s->cfg.conn_limit,
		MHD_OPTION_CONNECTION_TIMEOUT, s->cfg.conn_timeout_s,
		MHD_OPTION_NOTIFY_COMPLETED, srv_on_completed, s,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
		MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
		MHD_OPTION_END);
	if (s->mhd == NULL) {
		snprintf(err, errlen, "cannot start libmicrohttpd on %s:%d",
			 c->host, bound);
		goto fail;
	}
	return s;
fail:
	cache_batcher_free(s->batcher);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	pthread_mutex_destroy(&s->wlock);
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
	MHD_socket fd;

	if (s == NULL || s->stopped)
		return;
	s->stopped = 1;
	/* Stop accepting; the listening socket is ours to close. */
	fd = MHD_quiesce_daemon(s->mhd);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	s->listen_fd = -1;
	/* Requests already received are answered before the threads stop. */
	deadline = hs_now_ns() + (uint64_t)s->cfg.drain_timeout_ms * 1000000;
	while (__atomic_load_n(&s->stats.inflight, __ATOMIC_RELAXED) > 0) {
		struct timespec ts = { 0, 5 * 1000 * 1000 };

		if (hs_now_ns() > deadline) {
			log_warnx("shutdown: %llu requests still in flight, "
				  "stopping anyway",
				  (unsigned long long)__atomic_load_n(
					  &s->stats.inflight, __ATOMIC_RELAXED));
			break;
		}
		nanosleep(&ts, NULL);
	}
	/*
	 * MHD must not stop with a suspended connection: the batcher answers
	 * (and resumes) everything queued, and from now on requests read on
	 * their own.
	 */
	cache_batcher_stop(s->batcher);
	MHD_stop_daemon(s->mhd);
	s->mhd = NULL;
}

void
srv_free(struct srv *s)
{
	if (s == NULL)
		return;
	srv_shutdown(s);
	cache_batcher_free(s->batcher);
	srv_workers_free(s);
	pthread_mutex_destroy(&s->wlock);
	free(s);
}
