/*
 * The hammerstack app server as a library: an HTTP/1.1 JSON API over the
 * SQLite data layer, served by libmicrohttpd event loops (one epoll loop,
 * one read batcher and one database connection each), or, with database
 * threads, loops for HTTP and cache hits and database threads (one
 * database connection each) for everything that queries SQLite.
 *
 * main.c parses options into a struct srv_config, calls srv_new(), waits for
 * a signal, then srv_shutdown() and srv_free().
 */
#ifndef HS_SRV_H
#define HS_SRV_H

#include <stddef.h>
#include <stdint.h>

struct srv;
struct cache_shared;

/* How connections are served (--io). */
enum srv_io {
	SRV_IO_EVENT,   /* event loops: any number of connections
				    per thread (the default) */
	SRV_IO_BLOCKING /* a pool of cfg.threads workers, each
				    serving one connection until it closes */
};

struct srv_config {
	char host[256];             /* listen address, default 127.0.0.1 */
	int port;                   /* 0 picks a free port */
	const char *db_path;        /* borrowed; must exist (main seeds it) */
	const char *const *db_read; /* replicas' URLs (borrowed): product
				       and category reads go there */
	int ndb_read;               /* 0..SRV_READ_MAX (srv_replica.h) */
	int read_your_writes;       /* with replicas: reads of a key written
				    here wait for its replay (default 1) */
	unsigned marker_ttl_s;      /* with replicas and a cache: lifetime of
				       the remote markers (default 5) */
	int threads;                /* event loop threads (or blocking
				    workers), >= 1 */
	enum srv_io io;             /* SRV_IO_BLOCKING refuses db_threads > 0 */
	int db_threads;             /* database threads; 0: the loops query */
	const char *id;             /* X-Served-By value; borrowed; NULL means
				    "hs-server-PORT" with the bound port */
	size_t max_body;            /* largest request body accepted */
	int busy_timeout_ms;        /* SQLite busy timeout per connection */
	int durability_full;        /* synchronous=FULL (--durability full) */
	unsigned conn_limit;        /* concurrent connections */
	unsigned conn_limit_per_ip; /* ... from one client address; 0: no cap */
	unsigned header_timeout_ms; /* a new connection's first head is due
				       within this (absolute) */
	unsigned idle_timeout_ms;   /* a keep-alive connection's next head is
				     due this long after a response; also
				     MHD's inactivity timer (bodies, writes) */
	int drain_timeout_ms; /* how long srv_shutdown waits for in-flight requests */
	struct cache_shared *cache;   /* borrowed; NULL means --cache off.  The
				       caller frees it after srv_free() */
	struct cache_shared *markers; /* borrowed; the remote markers of read
					 your writes (srv_replica.h): the
					 cache's, or memcached with --cache
					 off; NULL: none */
	const char *cache_mode; /* "lease", "naive" or "off" (for /stats) */
	unsigned cache_batch;   /* largest multi-get of the read batcher;
				    0 = every read asks memcached alone */
	int64_t products;       /* rows at start, for /stats "data": the */
	int64_t categories;     /* id ranges of the load scripts */
	int listen_fd;          /* -1: srv_new binds host:port; else a
				    listening socket bound to port, which
				    srv_new takes over (and closes, even when
				    it fails) */
};

/* Fills c with the defaults (everything but db_path and id). */
void srv_config_defaults(struct srv_config *c);

/*
 * Binds the listener and starts the worker threads; requests are served
 * from the moment this returns.  c and the strings it points to must
 * outlive the server.  Returns NULL with a message in err on failure.
 */
struct srv *srv_new(const struct srv_config *c, char *err, size_t errlen);

/* The port actually bound (useful when the configured port was 0). */
int srv_port(const struct srv *s);
/* The instance id (X-Served-By); borrowed from s. */
const char *srv_id(const struct srv *s);

/*
 * Stops accepting connections, waits (up to drain_timeout_ms) for requests
 * already received to be answered, then stops the worker threads.
 * Idempotent.
 */
void srv_shutdown(struct srv *s);

/* srv_shutdown() if needed, then closes every database connection and frees s.
 * srv_free(NULL) is a no-op. */
void srv_free(struct srv *s);

#endif
