/*
 * hs-server: parses options, makes sure the database exists (seeding it
 * when missing), starts the server library and waits for SIGTERM / SIGINT
 * with sigwait(2), so that no work ever runs in a signal handler.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "db.h"
#include "hs_log.h"
#include "hs_util.h"
#include "srv.h"

struct opts {
	struct srv_config srv;
	const char *db_path;
	const char *id;
	double scale;
	int log_level;
	const char *memcached;   /* --memcached list, NULL when not given */
	const char *cache;       /* --cache value, NULL when not given */
	int cache_ttl_s;         /* 0: the library's default */
	int cache_neg_ttl_s;
	int fill_delay_ms;
};

enum { ARGS_RUN, ARGS_EXIT, ARGS_FAIL };
/* Long options without a short letter. */
enum { O_MAXC = 256, O_MAXC_IP, O_HTO, O_ITO };

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: hs-server [OPTIONS]\n"
		"The hammerstack app server: a JSON API over SQLite.\n\n"
		"  --listen HOST:PORT  address to listen on (default 127.0.0.1:8081;\n"
		"                      port 0 picks a free port, printed as\n"
		"                      \"listening on HOST:PORT\")\n"
		"  --db PATH|URL       database file (default data/hammerstack.db)\n"
		"                      or PostgreSQL postgres://USER@HOST:PORT/DB;\n"
		"                      created and seeded when missing\n"
		"  --scale S           seed scale when the database is created\n"
		"                      (default 1.0: 100 categories, 100000 products,\n"
		"                      1000000 reviews)\n"
		"  --threads N         event loop threads, or with --io blocking the\n"
		"                      workers, 1..1024 (default: CPUs)\n"
		"  --io MODE           event (the default): each event loop serves\n"
		"                      any number of connections; blocking: a pool\n"
		"                      of --threads workers, each serving one\n"
		"                      connection until it closes while the other\n"
		"                      clients wait in the listen backlog (the model\n"
		"                      of pre-fork sync workers; no --db-threads)\n"
		"  --db-threads N      database threads, 0..1024 (default 0: the\n"
		"                      event loops run the queries).  With N > 0,\n"
		"                      queries, cache misses and writes run on N\n"
		"                      threads and the loops serve HTTP and cache\n"
		"                      hits only; try --threads 1 --db-threads 8\n"
		"                      for one server alone on 2 cores\n"
		"  --id NAME           instance name sent as X-Served-By\n"
		"                      (default hs-server-PORT)\n"
		"  --memcached LIST    memcached servers HOST:PORT[,HOST:PORT...]\n"
		"                      (keys spread over them by consistent hashing)\n"
		"  --cache MODE        response cache: lease (the default with\n"
		"                      --memcached), naive (get / fill / set without\n"
		"                      leases: shows the stale-set race) or off (the\n"
		"                      default without --memcached)\n"
		"  --cache-ttl S       lifetime of a cached body, 1..86400 s (default\n"
		"                      300, minus up to 10%% jitter)\n"
		"  --cache-neg-ttl S   lifetime of a cached 404, 1..86400 s (default 5)\n"
		"  --cache-batch N     read batching: the first get of concurrent\n"
		"                      reads goes to memcached as one multi-get of up\n"
		"                      to N keys, 1..1000 (default 64), sent by each\n"
		"                      event loop after every pass; 0 sends one\n"
		"                      get per read\n"
		"  --debug-fill-delay-ms N\n"
		"                      FOR TESTS AND TALKS ONLY: sleep N ms (0..60000)\n"
		"                      between the database read and the cache store,\n"
		"                      widening the stale-set race window (default 0)\n"
		"  --max-body BYTES    largest request body, 1..67108864 (default 65536)\n"
		"  --busy-timeout MS   how long a query waits for a lock held by another\n"
		"                      connection before the request fails with 503\n"
		"                      (default 5000)\n"
		"  --max-conns N       client connections, 1..1000000 (default 8192,\n"
		"                      lowered to fit the descriptor limit); a\n"
		"                      client past it is answered 503 and closed\n"
		"  --max-conns-per-ip N\n"
		"                      connections from one client address,\n"
		"                      0..1000000 (default 4096; 0: no cap)\n"
		"  --header-timeout-ms MS\n"
		"                      a new connection's first request head must be\n"
		"                      complete within MS, 1..3600000 (default 10000;\n"
		"                      trickling does not extend it), else 408\n"
		"  --idle-timeout-ms MS\n"
		"                      a keep-alive connection's next head is due MS\n"
		"                      after a response, else it is closed; also the\n"
		"                      longest silence in a body or an unread\n"
		"                      response, 1..3600000 (default 30000)\n"
		"  --durability MODE   full (the default): a write is answered once\n"
		"                      it is on disk (fsync per commit, survives\n"
		"                      power loss); normal: once it is in the OS\n"
		"                      (survives a crash of the server, may lose\n"
		"                      the last writes with the machine; faster)\n"
		"  --log-level LEVEL   error, warn, info (default) or debug\n"
		"  -h, --help          this help\n");
}

static void
bad(const char *what, const char *val)
{
	fprintf(stderr, "hs-server: invalid %s: '%s' (see --help)\n", what,
		val);
}

static int
parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "db", required_argument, NULL, 'd' },
		{ "scale", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 't' },
		{ "db-threads", required_argument, NULL, 'D' },
		{ "io", required_argument, NULL, 'I' },
		{ "id", required_argument, NULL, 'i' },
		{ "cache", required_argument, NULL, 'c' },
		{ "memcached", required_argument, NULL, 'M' },
		{ "cache-ttl", required_argument, NULL, 'T' },
		{ "cache-neg-ttl", required_argument, NULL, 'N' },
		{ "cache-batch", required_argument, NULL, 'B' },
		{ "debug-fill-delay-ms", required_argument, NULL, 'F' },
		{ "max-body", required_argument, NULL, 'm' },
		{ "busy-timeout", required_argument, NULL, 'b' },
		{ "max-conns", required_argument, NULL, O_MAXC },
		{ "max-conns-per-ip", required_argument, NULL, O_MAXC_IP },
		{ "header-timeout-ms", required_argument, NULL, O_HTO },
		{ "idle-timeout-ms", required_argument, NULL, O_ITO },
		{ "durability", required_argument, NULL, 'Y' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int64_t v;
	int ch, v32;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'l':
			if (hs_parse_hostport(optarg, o->srv.host,
					      sizeof(o->srv.host),
					      &o->srv.port) < 0) {
				bad("--listen (want HOST:PORT)", optarg);
				return ARGS_FAIL;
			}
			break;
		case 'd':
			if (*optarg == '\0') {
				bad("--db", optarg);
				return ARGS_FAIL;
			}
			o->db_path = optarg;
			break;
		case 's':
			if (hs_parse_double(optarg, 0.0001, 100.0, &o->scale) <
			    0) {
				bad("--scale (want 0.0001..100)", optarg);
				return ARGS_FAIL;
			}
			break;
		case 't':
			if (hs_parse_int(optarg, 1, 1024, &o->srv.threads) < 0) {
				bad("--threads (want 1..1024)", optarg);
				return ARGS_FAIL;
			}
			break;
		case 'D':
			if (hs_parse_int(optarg, 0, 1024, &o->srv.db_threads) <
			    0) {
				bad("--db-threads (want 0..1024)", optarg);
				return ARGS_FAIL;
			}
			break;
		case 'I':
			if (strcmp(optarg, "event") == 0) {
				o->srv.io = SRV_IO_EVENT;
			} else if (strcmp(optarg, "blocking") == 0) {
				o->srv.io = SRV_IO_BLOCKING;
			} else {
				bad("--io (want event|blocking)", optarg);
				return ARGS_FAIL;
			}
			break;
		case 'i':
			if (*optarg == '\0' || strlen(optarg) > 200 ||
			    strpbrk(optarg, "\r\n") != NULL) {
				bad("--id", optarg);
				return ARGS_FAIL;
			}
			o->id = optarg;
			break;
		case 'c':
			if (strcmp(optarg, "off") != 0 &&
			    strcmp(optarg, "lease") != 0 &&
			    strcmp(optarg, "naive") != 0) {
				bad("--cache (want lease|naive|off)", optarg);
				return ARGS_FAIL;
			}
			o->cache = optarg;
			break;
		case 'M':
			if (*optarg == '\0') {
				bad("--memcached (want HOST:PORT[,HOST:PORT...])",
				    optarg);
				return ARGS_FAIL;
			}
			o->memcached = optarg;
			break;
		case 'T':
			if (hs_parse_int(optarg, 1, 86400, &o->cache_ttl_s) < 0) {
				bad("--cache-ttl (want 1..86400 s)", optarg);
				return ARGS_FAIL;
			}
			break;
		case 'N':
			if (hs_parse_int(optarg, 1, 86400, &o->cache_neg_ttl_s) <
			    0) {
				bad("--cache-neg-ttl (want 1..86400 s)", optarg);
				return ARGS_FAIL;
			}
			break;
		case 'B':
			if (hs_parse_int(optarg, 0, 1000, &v32) < 0) {
				bad("--cache-batch (want 0..1000)", optarg);
				return ARGS_FAIL;
			}
			o->srv.cache_batch = (unsigned)v32;
			break;
		case 'F':
			if (hs_parse_int(optarg, 0, 60000, &o->fill_delay_ms) <
			    0) {
				bad("--debug-fill-delay-ms (want 0..60000)",
				    optarg);
				return ARGS_FAIL;
			}
			break;
		case 'm':
			if (hs_parse_i64(optarg, 1, 64 << 20, &v) < 0) {
				bad("--max-body (want 1..67108864)", optarg);
				return ARGS_FAIL;
			}
			o->srv.max_body = (size_t)v;
			break;
		case 'b':
			if (hs_parse_int(optarg, 1, 600000,
					 &o->srv.busy_timeout_ms) < 0) {
				bad("--busy-timeout (want 1..600000 ms)", optarg);
				return ARGS_FAIL;
			}
			break;
		case O_MAXC:
			if (hs_parse_int(optarg, 1, 1000000, &v32) < 0) {
				bad("--max-conns (want 1..1000000)", optarg);
				return ARGS_FAIL;
			}
			o->srv.conn_limit = (unsigned)v32;
			break;
		case O_MAXC_IP:
			if (hs_parse_int(optarg, 0, 1000000, &v32) < 0) {
				bad("--max-conns-per-ip (want 0..1000000)",
				    optarg);
				return ARGS_FAIL;
			}
			o->srv.conn_limit_per_ip = (unsigned)v32;
			break;
		case O_HTO:
		case O_ITO:
			if (hs_parse_int(optarg, 1, 3600000, &v32) < 0) {
				bad(ch == O_HTO ? "--header-timeout-ms (want "
						  "1..3600000 ms)"
						: "--idle-timeout-ms (want "
						  "1..3600000 ms)",
				    optarg);
				return ARGS_FAIL;
			}
			if (ch == O_HTO)
				o->srv.header_timeout_ms = (unsigned)v32;
			else
				o->srv.idle_timeout_ms = (unsigned)v32;
			break;
		case 'Y':
			if (strcmp(optarg, "full") == 0) {
				o->srv.durability_full = 1;
			} else if (strcmp(optarg, "normal") == 0) {
				o->srv.durability_full = 0;
			} else {
				bad("--durability (want full|normal)", optarg);
				return ARGS_FAIL;
			}
			break;
		case 'L':
			if ((o->log_level = hs_log_level_parse(optarg)) < 0) {
				bad("--log-level (want error|warn|info|debug)",
				    optarg);
				return ARGS_FAIL;
			}
			break;
		case 'h':
			usage(stdout);
			return ARGS_EXIT;
		case ':':
			fprintf(stderr, "hs-server: %s needs a value (see --help)\n",
				argv[optind - 1]);
			return ARGS_FAIL;
		default:
			fprintf(stderr, "hs-server: unknown option '%s' (see --help)\n",
				argv[optind - 1]);
			return ARGS_FAIL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "hs-server: unexpected argument '%s' (see --help)\n",
			argv[optind]);
		return ARGS_FAIL;
	}
	if (o->srv.io == SRV_IO_BLOCKING && o->srv.db_threads > 0) {
		fprintf(stderr, "hs-server: --db-threads needs --io event (a "
				"blocking worker runs its own queries; see "
				"--help)\n");
		return ARGS_FAIL;
	}
	if (o->cache == NULL)
		o->cache = o->memcached ? "lease" : "off";
	if (strcmp(o->cache, "off") != 0 && o->memcached == NULL) {
		fprintf(stderr, "hs-server: --cache %s needs --memcached "
				"HOST:PORT (see --help)\n", o->cache);
		return ARGS_FAIL;
	}
	return ARGS_RUN;
}

/*
 * The cache's shared state, or NULL for --cache off.  Checks the server
 * list without connecting (memcached may come up later).  -1: bad options.
 */
static int
make_cache(const struct opts *o, struct cache_shared **out)
{
	struct cache_opts co;
	char err[256];

	*out = NULL;
	if (strcmp(o->cache, "off") == 0)
		return 0;
	cache_opts_default(&co);
	co.servers = o->memcached;
	if (cache_mode_parse(o->cache, &co.mode) < 0) {
		bad("--cache (want lease|naive|off)", o->cache);
		return -1;
	}
	if (o->cache_ttl_s > 0)
		co.ttl_s = (unsigned)o->cache_ttl_s;
	if (o->cache_neg_ttl_s > 0)
		co.neg_ttl_s = (unsigned)o->cache_neg_ttl_s;
	co.fill_delay_ms = (unsigned)o->fill_delay_ms;
	*out = cache_shared_new(&co, err, sizeof(err));
	if (*out == NULL) {
		fprintf(stderr, "hs-server: invalid --memcached '%s': %s "
				"(see --help)\n", o->memcached, err);
		return -1;
	}
	return 0;
}

static void
seed_progress(void *arg, const char *phase, double frac)
{
	fprintf(stderr, "\rseeding: %-12s %5.1f%%", phase, frac * 100.0);
	if (frac >= 1.0)
		fputc('\n', stderr);
}

/* Creates the parent directory of path (one level, like data/). */
static void
make_parent(const char *path)
{
	char dir[PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		return;
	*slash = '\0';
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		log_warn("mkdir %s", dir);
}

/*
 * Many keep-alive clients need many descriptors: take the hard limit, and
 * keep --max-conns below it with a reserve for the server's own files
 * (databases, memcached, epoll sets), so that a client over the cap gets
 * a 503 rather than an accept(2) failing with EMFILE.
 */
static void
raise_nofile(struct srv_config *c)
{
	struct rlimit rl;
	rlim_t reserve = 64 + 8 * (rlim_t)(c->threads + c->db_threads);

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			log_warn("setrlimit(RLIMIT_NOFILE)");
			if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
				return;
		}
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur > reserve &&
	    c->conn_limit > rl.rlim_cur - reserve) {
		log_warnx("--max-conns %u lowered to %llu: %llu descriptors "
			  "allowed", c->conn_limit,
			  (unsigned long long)(rl.rlim_cur - reserve),
			  (unsigned long long)rl.rlim_cur);
		c->conn_limit = (unsigned)(rl.rlim_cur - reserve);
	}
}

/*
 * Seeds the database when it is missing, then checks that it opens and
 * counts its rows for /stats.
 */
static int
ensure_db(struct opts *o)
{
	char err[256];
	struct db_counts n;
	struct db *db;

	int have = db_exists(o->db_path, err, sizeof(err));

	if (have < 0) {
		log_error("cannot reach %s: %s", o->db_path, err);
		return -1;
	}
	if (have == 0) {
		struct db_seed_opts so = { .scale = o->scale,
					   .progress = seed_progress };

		log_info("%s is missing: seeding it at scale %g", o->db_path,
			 o->scale);
		if (!db_is_url(o->db_path))
			make_parent(o->db_path);
		/* Another process may be seeding the same path right now. */
		if (db_seed_file(o->db_path, &so, err, sizeof(err)) != DB_OK &&
		    db_exists(o->db_path, NULL, 0) != 1) {
			log_error("cannot seed %s: %s", o->db_path, err);
			return -1;
		}
	}
	db = db_open(o->db_path, 0, o->srv.busy_timeout_ms, err, sizeof(err));
	if (db == NULL) {
		log_error("cannot open %s: %s", o->db_path, err);
		return -1;
	}
	if (db_counts(db, &n) == DB_OK) {
		o->srv.products = n.products;
		o->srv.categories = n.categories;
	}
	db_close(db);
	return 0;
}

int
main(int argc, char **argv)
{
	struct opts o;
	struct srv *s = NULL;
	struct cache_shared *cache = NULL;
	char err[512];
	sigset_t sigs;
	int sig = 0, rc;

	memset(&o, 0, sizeof(o));
	srv_config_defaults(&o.srv);
	o.db_path = "data/hammerstack.db";
	o.scale = 1.0;
	o.log_level = HS_LOG_INFO;
	rc = parse_args(argc, argv, &o);
	if (rc != ARGS_RUN)
		return rc == ARGS_EXIT ? 0 : 2;
	hs_log_init("hs-server", o.log_level);
	if (make_cache(&o, &cache) < 0)
		return 2;
	raise_nofile(&o.srv);
	/* MHD writes to closed sockets; that must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	/* Blocked before any thread starts, so only sigwait() sees them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	/*
	 * Bind before seeding: on a busy port a new database would take
	 * seconds to seed only for the server to fail right after.
	 */
	o.srv.listen_fd = hs_listen_tcp(o.srv.host, o.srv.port, 1024, 1,
					&o.srv.port);
	if (o.srv.listen_fd < 0) {
		log_error("cannot listen on %s:%d: %s", o.srv.host, o.srv.port,
			  strerror(errno));
		cache_shared_free(cache);
		return 1;
	}
	if (ensure_db(&o) < 0) {
		hs_close(&o.srv.listen_fd);
		cache_shared_free(cache);
		return 1;
	}
	o.srv.db_path = o.db_path;
	o.srv.id = o.id;
	o.srv.cache = cache;
	o.srv.cache_mode = o.cache;
	s = srv_new(&o.srv, err, sizeof(err));
	if (s == NULL) {
		log_error("%s", err);
		cache_shared_free(cache);
		return 1;
	}
	if (strchr(o.srv.host, ':') != NULL)
		printf("listening on [%s]:%d\n", o.srv.host, srv_port(s));
	else
		printf("listening on %s:%d\n", o.srv.host, srv_port(s));
	fflush(stdout);
	log_info("serving %s with %d %s and %d database threads as %s, "
		 "cache %s%s%s", o.db_path, o.srv.threads,
		 o.srv.io == SRV_IO_BLOCKING ? "blocking workers" : "loop",
		 o.srv.db_threads,
		 srv_id(s), o.cache, cache ? " on " : "",
		 cache ? o.memcached : "");
	while (sigwait(&sigs, &sig) != 0)
		;
	log_info("signal %d: draining and stopping", sig);
	srv_free(s);
	/* After srv_free: no worker thread uses the cache any more. */
	cache_shared_free(cache);
	log_info("stopped");
	return 0;
}
