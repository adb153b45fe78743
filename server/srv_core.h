/*
 * The server handle and its event loops (server.c), shared by the files
 * that serve requests.
 */
#ifndef HS_SRV_CORE_H
#define HS_SRV_CORE_H

#include <pthread.h>
#include <stdint.h>

#include <microhttpd.h>

#include "srv.h"
#include "srv_conns.h"
#include "srv_stats.h"

/* One event loop per worker thread: its own MHD daemon and read batcher. */
struct srv_loop {
	struct srv *srv;
	struct MHD_Daemon *mhd;
	struct cache_batcher *batcher; /* NULL unless cfg.cache_batch > 0 */
	int resume_fd;                 /* with database threads: an eventfd in
					MHD's epoll set (edge triggered) that
					a database thread writes after
					resuming a connection; else -1 */
	int quiesced_fd; /* MHD's listening descriptor, handed back
					by MHD_quiesce_daemon (-1: not yet) */
	int watch_fd;    /* epoll set: its connections' EPOLLRDHUP,
					nested in MHD's */
	struct srv_conn_list head_first; /* HEAD_FIRST, in deadline order */
	struct srv_conn_list head_next;  /* HEAD_NEXT, likewise */
	pthread_t thread;
	int started; /* the thread runs (join it) */
};

struct srv {
	struct srv_config cfg;
	struct srv_loop *loops; /* cfg.threads of them */
	int stopping;           /* atomic: loops exit */
	int wake_fd;            /* eventfd: written once to stop the loops */
	int listen_fd;
	int port;
	uint64_t started_ns;
	int stopped;
	pthread_mutex_t wlock; /* guards workers (taken once per thread) */
	struct srv_worker *workers;
	struct srv_replicas *reps;     /* NULL without --db-read */
	struct srv_pool *pool;         /* the database threads */
	struct srv_blocking *blocking; /* --io blocking's workers, else NULL */
	unsigned blocking_busy; /* ... serving a connection now (atomic) */
	struct srv_stats stats;
	unsigned open_conns;      /* client connections open now (atomic) */
	unsigned admitted;        /* ... of which hold a slot (atomic) */
	struct srv_ip_table *ips; /* slots per client address */
	uint64_t refused;         /* clients refused at a cap (atomic) */
	uint64_t head_timeouts;   /* connections closed with a 408 (atomic) */
	uint64_t refused_log_ns;  /* rate limits of their log lines */
	uint64_t head_timeout_log_ns;
	char idbuf[64]; /* the default id */
};

#endif
