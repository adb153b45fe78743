/*
 * hs-server: parses options, makes sure the database exists (seeding it
 * when missing), starts the server library and waits for SIGTERM / SIGINT
 * with sigwait(2), so that no work ever runs in a signal handler.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
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
#include "srv_replica.h"

struct opts {
	struct srv_config srv;
	const char *db_path;
	const char *db_read[SRV_READ_MAX]; /* --db-read, in order */
	int ndb_read;
	const char *id;
	double scale;
	int log_level;
	const char *memcached; /* --memcached list, NULL when not given */
	const char *cache;     /* --cache value, NULL when not given */
	int cache_ttl_s;       /* 0: the library's default */
	int cache_neg_ttl_s;
	int fill_delay_ms;
};

enum { ARGS_RUN, ARGS_EXIT, ARGS_FAIL };

/* How an option's value is checked and stored (struct opt_def). */
enum opt_kind {
	OPT_INT,       /* an int in [min, max] */
	OPT_UINT,      /* an unsigned, from an int in [min, max] */
	OPT_SIZE,      /* a size_t, from an int64 in [min, max] */
	OPT_DOUBLE,    /* a double in [dmin, dmax] */
	OPT_STR,       /* a non-empty string (borrowed from argv) */
	OPT_READ,      /* --db-read: one more replica URL */
	OPT_ID,        /* --id: 1..200 bytes without CR or LF (a header) */
	OPT_WORD,      /* one of words[], kept as the string */
	OPT_CHOICE,    /* one of words[]: the int values[] at its index */
	OPT_LISTEN,    /* HOST:PORT into srv.host and srv.port */
	OPT_LOG_LEVEL, /* error|warn|info|debug */
};

/* One long option: its check, where it goes, what an error says. */
struct opt_def {
	const char *name;
	enum opt_kind kind;
	size_t off;           /* offsetof(struct opts, ...) */
	int64_t min, max;     /* OPT_INT, OPT_UINT, OPT_SIZE */
	double dmin, dmax;    /* OPT_DOUBLE */
	const char *words[3]; /* OPT_WORD, OPT_CHOICE */
	int values[3];        /* OPT_CHOICE */
	const char *what;     /* the error's "--name (want ...)" */
};

#define O(f) offsetof(struct opts, f)
static const struct opt_def opt_defs[] = {
	{ "listen",
	  OPT_LISTEN,
	  0,
	  0,
	  0,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--listen (want HOST:PORT)" },
	{ "db", OPT_STR, O(db_path), 0, 0, 0, 0, { NULL }, { 0 }, "--db" },
	{ "db-read",
	  OPT_READ,
	  0,
	  0,
	  0,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--db-read (want postgres://USER@HOST:PORT/DB, at most 8)" },
	{ "read-your-writes",
	  OPT_CHOICE,
	  O(srv.read_your_writes),
	  0,
	  0,
	  0,
	  0,
	  { "on", "off" },
	  { 1, 0 },
	  "--read-your-writes (want on|off)" },
	{ "marker-ttl",
	  OPT_UINT,
	  O(srv.marker_ttl_s),
	  1,
	  3600,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--marker-ttl (want 1..3600 s)" },
	{ "scale",
	  OPT_DOUBLE,
	  O(scale),
	  0,
	  0,
	  0.0001,
	  100.0,
	  { NULL },
	  { 0 },
	  "--scale (want 0.0001..100)" },
	{ "threads",
	  OPT_INT,
	  O(srv.threads),
	  1,
	  1024,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--threads (want 1..1024)" },
	{ "db-threads",
	  OPT_INT,
	  O(srv.db_threads),
	  0,
	  1024,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--db-threads (want 0..1024)" },
	{ "io",
	  OPT_CHOICE,
	  O(srv.io),
	  0,
	  0,
	  0,
	  0,
	  { "event", "blocking" },
	  { SRV_IO_EVENT, SRV_IO_BLOCKING },
	  "--io (want event|blocking)" },
	{ "id", OPT_ID, O(id), 0, 0, 0, 0, { NULL }, { 0 }, "--id" },
	{ "cache",
	  OPT_WORD,
	  O(cache),
	  0,
	  0,
	  0,
	  0,
	  { "off", "lease", "naive" },
	  { 0 },
	  "--cache (want lease|naive|off)" },
	{ "memcached",
	  OPT_STR,
	  O(memcached),
	  0,
	  0,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--memcached (want HOST:PORT[,HOST:PORT...])" },
	{ "cache-ttl",
	  OPT_INT,
	  O(cache_ttl_s),
	  1,
	  86400,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--cache-ttl (want 1..86400 s)" },
	{ "cache-neg-ttl",
	  OPT_INT,
	  O(cache_neg_ttl_s),
	  1,
	  86400,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--cache-neg-ttl (want 1..86400 s)" },
	{ "cache-batch",
	  OPT_UINT,
	  O(srv.cache_batch),
	  0,
	  1000,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--cache-batch (want 0..1000)" },
	{ "debug-fill-delay-ms",
	  OPT_INT,
	  O(fill_delay_ms),
	  0,
	  60000,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--debug-fill-delay-ms (want 0..60000)" },
	{ "max-body",
	  OPT_SIZE,
	  O(srv.max_body),
	  1,
	  64 << 20,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--max-body (want 1..67108864)" },
	{ "busy-timeout",
	  OPT_INT,
	  O(srv.busy_timeout_ms),
	  1,
	  600000,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--busy-timeout (want 1..600000 ms)" },
	{ "max-conns",
	  OPT_UINT,
	  O(srv.conn_limit),
	  1,
	  1000000,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--max-conns (want 1..1000000)" },
	{ "max-conns-per-ip",
	  OPT_UINT,
	  O(srv.conn_limit_per_ip),
	  0,
	  1000000,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--max-conns-per-ip (want 0..1000000)" },
	{ "header-timeout-ms",
	  OPT_UINT,
	  O(srv.header_timeout_ms),
	  1,
	  3600000,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--header-timeout-ms (want 1..3600000 ms)" },
	{ "idle-timeout-ms",
	  OPT_UINT,
	  O(srv.idle_timeout_ms),
	  1,
	  3600000,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--idle-timeout-ms (want 1..3600000 ms)" },
	{ "durability",
	  OPT_CHOICE,
	  O(srv.durability_full),
	  0,
	  0,
	  0,
	  0,
	  { "full", "normal" },
	  { 1, 0 },
	  "--durability (want full|normal)" },
	{ "log-level",
	  OPT_LOG_LEVEL,
	  O(log_level),
	  0,
	  0,
	  0,
	  0,
	  { NULL },
	  { 0 },
	  "--log-level (want error|warn|info|debug)" },
};
#undef O
#define NOPTS (sizeof(opt_defs) / sizeof(opt_defs[0]))
/* getopt_long's value for opt_defs[i] (past every short letter). */
#define OPT_VAL0 256

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
		"  --db-read URL       a streaming replica of a PostgreSQL --db\n"
		"                      (repeat for more, up to 8): product and\n"
		"                      category reads go to them round robin,\n"
		"                      writes to --db; a replica that fails is\n"
		"                      skipped for a second (reads go elsewhere)\n"
		"  --read-your-writes on|off\n"
		"                      with --db-read: a read of a product or\n"
		"                      category written through this server goes\n"
		"                      to the primary until a replica has replayed\n"
		"                      the write (default on; off shows the stale\n"
		"                      reads replication lag makes).  With\n"
		"                      --memcached (even with --cache off) the\n"
		"                      writes of other servers too, through\n"
		"                      markers in memcached (one get per replica\n"
		"                      read); without it only this server's own\n"
		"                      writes\n"
		"  --marker-ttl S      lifetime of those markers, 1..3600 s\n"
		"                      (default 5): a replica lagging longer than\n"
		"                      this serves no reads until it catches up\n"
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

/* The index of arg in words[], or -1. */
static int
word_index(const char *const *words, const char *arg)
{
	for (int i = 0; i < 3 && words[i] != NULL; i++)
		if (strcmp(arg, words[i]) == 0)
			return i;
	return -1;
}

/* Checks arg and stores it where d says; -1 (said on stderr) if bad. */
static int
opt_set(const struct opt_def *d, const char *arg, struct opts *o)
{
	char *at = (char *)o + d->off;
	int64_t v = 0;
	int rc = 0, i;

	switch (d->kind) {
	case OPT_INT:
	case OPT_UINT:
	case OPT_SIZE:
		rc = hs_parse_i64(arg, d->min, d->max, &v);
		if (rc == 0 && d->kind == OPT_INT)
			*(int *)(void *)at = (int)v;
		else if (rc == 0 && d->kind == OPT_UINT)
			*(unsigned *)(void *)at = (unsigned)v;
		else if (rc == 0)
			*(size_t *)(void *)at = (size_t)v;
		break;
	case OPT_DOUBLE:
		rc = hs_parse_double(arg, d->dmin, d->dmax,
				     (double *)(void *)at);
		break;
	case OPT_ID:
		if (strlen(arg) > 200 || strpbrk(arg, "\r\n") != NULL)
			rc = -1;
		/* FALLTHROUGH */
	case OPT_STR:
		if (*arg == '\0')
			rc = -1;
		if (rc == 0)
			*(const char **)(void *)at = arg;
		break;
	case OPT_WORD:
	case OPT_CHOICE:
		i = word_index(d->words, arg);
		rc = i < 0 ? -1 : 0;
		if (rc == 0 && d->kind == OPT_WORD)
			*(const char **)(void *)at = arg;
		else if (rc == 0)
			*(int *)(void *)at = d->values[i];
		break;
	case OPT_READ:
		rc = o->ndb_read < SRV_READ_MAX && db_is_url(arg) ? 0 : -1;
		if (rc == 0)
			o->db_read[o->ndb_read++] = arg;
		break;
	case OPT_LISTEN:
		rc = hs_parse_hostport(arg, o->srv.host, sizeof(o->srv.host),
				       &o->srv.port);
		break;
	case OPT_LOG_LEVEL:
		rc = (o->log_level = hs_log_level_parse(arg)) < 0 ? -1 : 0;
		break;
	}
	if (rc < 0)
		bad(d->what, arg);
	return rc < 0 ? -1 : 0;
}

/* What no single option can check: combinations, and the defaults that
   depend on other options. */
static int
check_args(struct opts *o)
{
	if (o->srv.io == SRV_IO_BLOCKING && o->srv.db_threads > 0) {
		fprintf(stderr, "hs-server: --db-threads needs --io event (a "
				"blocking worker runs its own queries; see "
				"--help)\n");
		return ARGS_FAIL;
	}
	if (o->ndb_read > 0 && !db_is_url(o->db_path)) {
		fprintf(stderr, "hs-server: --db-read needs a PostgreSQL --db "
				"(postgres://...; see --help)\n");
		return ARGS_FAIL;
	}
	if (o->cache == NULL)
		o->cache = o->memcached ? "lease" : "off";
	if (strcmp(o->cache, "off") != 0 && o->memcached == NULL) {
		fprintf(stderr,
			"hs-server: --cache %s needs --memcached "
			"HOST:PORT (see --help)\n",
			o->cache);
		return ARGS_FAIL;
	}
	return ARGS_RUN;
}

static int
parse_args(int argc, char **argv, struct opts *o)
{
	struct option longopts[NOPTS + 2];
	int ch;

	for (size_t i = 0; i < NOPTS; i++)
		longopts[i] =
			(struct option){ opt_defs[i].name, required_argument,
					 NULL, OPT_VAL0 + (int)i };
	longopts[NOPTS] = (struct option){ "help", no_argument, NULL, 'h' };
	longopts[NOPTS + 1] = (struct option){ NULL, 0, NULL, 0 };
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		if (ch >= OPT_VAL0 && ch < OPT_VAL0 + (int)NOPTS) {
			if (opt_set(&opt_defs[ch - OPT_VAL0], optarg, o) < 0)
				return ARGS_FAIL;
		} else if (ch == 'h') {
			usage(stdout);
			return ARGS_EXIT;
		} else if (ch == ':') {
			fprintf(stderr,
				"hs-server: %s needs a value (see --help)\n",
				argv[optind - 1]);
			return ARGS_FAIL;
		} else {
			fprintf(stderr,
				"hs-server: unknown option '%s' (see --help)\n",
				argv[optind - 1]);
			return ARGS_FAIL;
		}
	}
	if (optind < argc) {
		fprintf(stderr,
			"hs-server: unexpected argument '%s' (see --help)\n",
			argv[optind]);
		return ARGS_FAIL;
	}
	return check_args(o);
}

/*
 * The cache's shared state; with --cache off, NULL, or the memcached that
 * holds only the remote markers when --memcached and --db-read are given.
 * Checks the server list without connecting (memcached may come up later).
 * -1: bad options.
 */
static int
make_cache(const struct opts *o, struct cache_shared **out)
{
	struct cache_opts co;
	char err[256];

	*out = NULL;
	if (strcmp(o->cache, "off") == 0 &&
	    (o->memcached == NULL || o->ndb_read == 0))
		return 0;
	cache_opts_default(&co);
	co.servers = o->memcached;
	if (strcmp(o->cache, "off") != 0 &&
	    cache_mode_parse(o->cache, &co.mode) < 0) {
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
		fprintf(stderr,
			"hs-server: invalid --memcached '%s': %s "
			"(see --help)\n",
			o->memcached, err);
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
			  "allowed",
			  c->conn_limit,
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
	o.srv.listen_fd =
		hs_listen_tcp(o.srv.host, o.srv.port, 1024, 1, &o.srv.port);
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
	o.srv.db_read = o.db_read;
	o.srv.ndb_read = o.ndb_read;
	o.srv.id = o.id;
	o.srv.cache = strcmp(o.cache, "off") != 0 ? cache : NULL;
	o.srv.markers = o.srv.read_your_writes ? cache : NULL;
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
		 "cache %s%s%s%s",
		 o.db_path, o.srv.threads,
		 o.srv.io == SRV_IO_BLOCKING ? "blocking workers" : "loop",
		 o.srv.db_threads, srv_id(s), o.cache, cache ? " on " : "",
		 cache ? o.memcached : "",
		 cache && !o.srv.cache ? " (read-your-writes markers only)"
				       : "");
	while (sigwait(&sigs, &sig) != 0)
		;
	log_info("signal %d: draining and stopping", sig);
	srv_free(s);
	/* After srv_free: no worker thread uses the cache any more. */
	cache_shared_free(cache);
	log_info("stopped");
	return 0;
}
