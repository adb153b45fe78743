/*
 * hs-balancer: parses options, binds the listeners (one per worker, with
 * SO_REUSEPORT so the kernel spreads connections), starts the worker
 * loops, the health checks and the admin listener, and handles SIGHUP
 * (reload the backend list) and SIGTERM/SIGINT (drain, then exit 0).
 */
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <stddef.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bal.h"
#include "hs_log.h"
#include "hs_util.h"

static const char usage[] =
	"usage: hs-balancer [options]\n"
	"  --listen HOST:PORT          client listener (default 127.0.0.1:8080)\n"
	"  --backend HOST:PORT[,weight=N]  a backend (repeatable)\n"
	"  --backends-file PATH        one backend per line; re-read on SIGHUP\n"
	"  --admin HOST:PORT           /stats and /metrics (default 127.0.0.1:8090)\n"
	"  --algorithm NAME            roundrobin (default) or leastconn\n"
	"  --health-path PATH          active check path (default /healthz)\n"
	"  --health-interval-ms N      check interval (default 2000)\n"
	"  --rise N                    successes to come back up (default 2)\n"
	"  --fall N                    failures to go down (default 3)\n"
	"  --connect-timeout-ms N      backend connect timeout (default 1000)\n"
	"  --header-timeout-ms N       client request head timeout: 408 (default 10000)\n"
	"  --idle-timeout-ms N         client keep-alive idle timeout (default 60000)\n"
	"  --backend-timeout-ms N      backend response timeout: 504 (default 30000)\n"
	"  --drain-timeout-ms N        SIGTERM: wait for in-flight requests (default 10000)\n"
	"  --max-conns N               concurrent clients, beyond: 503 (default 100000,\n"
	"                              lowered to fit the descriptor limit)\n"
	"  --max-body BYTES            request body limit: 413 (default 1073741824)\n"
	"  --max-line BYTES            request line limit: 414 (default 8192)\n"
	"  --max-header-size BYTES     request head limit: 431 (default 16384)\n"
	"  --max-headers N             header count limit: 431 (default 100)\n"
	"  --deny-path PREFIX          answer 404 to client requests for PREFIX or\n"
	"                              below (repeatable; replaces the default\n"
	"                              /stats and /metrics; '' denies nothing)\n"
	"  --no-deny-path              forward every path\n"
	"  --workers N                 event loops on N threads (default 1)\n"
	"  --log-level LEVEL           error, warn, info (default), debug\n"
	"  -h, --help                  this text\n";

/*
 * The options, one row each: a setter and, for the integer ones, the
 * field and its range.  getopt_long's table is built from it.  A setter
 * returns 0, -1 for a bad value, or 1 to exit 0 (--help).
 */
struct opt;
typedef int (*opt_set_fn)(struct bal_config *cfg, int *log_level,
			  const struct opt *o, const char *arg);

struct opt {
	const char *name;
	int has_arg;
	opt_set_fn set;
	size_t off; /* of the int or size_t field in struct bal_config */
	int lo, hi;
};

#define CFG_INT(p, off) ((int *)(void *)((char *)(p) + (off)))

static int
opt_int(struct bal_config *cfg, int *log_level, const struct opt *o,
	const char *arg)
{
	return hs_parse_int(arg, o->lo, o->hi, CFG_INT(cfg, o->off));
}

static int
opt_size(struct bal_config *cfg, int *log_level, const struct opt *o,
	 const char *arg)
{
	int v;

	if (hs_parse_int(arg, o->lo, o->hi, &v) < 0)
		return -1;
	*(size_t *)(void *)((char *)cfg + o->off) = (size_t)v;
	return 0;
}

static int
opt_max_conns(struct bal_config *cfg, int *log_level, const struct opt *o,
	      const char *arg)
{
	cfg->max_conns_given = 1;
	return opt_int(cfg, log_level, o, arg);
}

static int
opt_max_body(struct bal_config *cfg, int *log_level, const struct opt *o,
	     const char *arg)
{
	return hs_parse_i64(arg, 0, INT64_MAX / 2, &cfg->max_body);
}

static int
opt_listen(struct bal_config *cfg, int *log_level, const struct opt *o,
	   const char *arg)
{
	return hs_parse_hostport(arg, cfg->listen_host,
				 sizeof(cfg->listen_host), &cfg->listen_port);
}

static int
opt_admin(struct bal_config *cfg, int *log_level, const struct opt *o,
	  const char *arg)
{
	return hs_parse_hostport(arg, cfg->admin_host, sizeof(cfg->admin_host),
				 &cfg->admin_port);
}

static int
opt_backend(struct bal_config *cfg, int *log_level, const struct opt *o,
	    const char *arg)
{
	if (cfg->nspecs >= BAL_MAX_BACKENDS ||
	    bal_spec_parse(arg, &cfg->specs[cfg->nspecs]) < 0)
		return -1;
	cfg->nspecs++;
	return 0;
}

static int
opt_file(struct bal_config *cfg, int *log_level, const struct opt *o,
	 const char *arg)
{
	cfg->backends_file = arg;
	return 0;
}

static int
opt_algo(struct bal_config *cfg, int *log_level, const struct opt *o,
	 const char *arg)
{
	if (strcmp(arg, "roundrobin") == 0)
		cfg->algo = BAL_ALGO_RR;
	else if (strcmp(arg, "leastconn") == 0)
		cfg->algo = BAL_ALGO_LEASTCONN;
	else
		return -1;
	return 0;
}

static int
opt_health_path(struct bal_config *cfg, int *log_level, const struct opt *o,
		const char *arg)
{
	if (arg[0] != '/' || strlen(arg) >= sizeof(cfg->health_path) ||
	    strpbrk(arg, " \r\n\t") != NULL)
		return -1;
	strcpy(cfg->health_path, arg);
	return 0;
}

static int
opt_log(struct bal_config *cfg, int *log_level, const struct opt *o,
	const char *arg)
{
	return (*log_level = hs_log_level_parse(arg)) < 0 ? -1 : 0;
}

static int
opt_deny(struct bal_config *cfg, int *log_level, const struct opt *o,
	 const char *arg)
{
	/* The first one replaces the defaults. */
	if (!cfg->deny_given)
		cfg->ndeny = 0;
	cfg->deny_given = 1;
	if (arg[0] == '\0')
		return 0;
	if (arg[0] != '/' || cfg->ndeny >= BAL_MAX_DENY ||
	    strpbrk(arg, "?# \t\r\n") != NULL)
		return -1;
	cfg->deny[cfg->ndeny++] = arg;
	return 0;
}

static int
opt_no_deny(struct bal_config *cfg, int *log_level, const struct opt *o,
	    const char *arg)
{
	cfg->ndeny = 0;
	cfg->deny_given = 1;
	return 0;
}

static int
opt_help(struct bal_config *cfg, int *log_level, const struct opt *o,
	 const char *arg)
{
	fputs(usage, stdout);
	return 1;
}

#define ARG required_argument
#define INT(name, field, lo, hi)                                               \
	{                                                                      \
		name, ARG, opt_int, offsetof(struct bal_config, field), lo, hi \
	}
#define MS 3600000 /* the longest timeout or interval, in ms */

static const struct opt opts[] = {
	{ "listen", ARG, opt_listen, 0, 0, 0 },
	{ "backend", ARG, opt_backend, 0, 0, 0 },
	{ "backends-file", ARG, opt_file, 0, 0, 0 },
	{ "admin", ARG, opt_admin, 0, 0, 0 },
	{ "algorithm", ARG, opt_algo, 0, 0, 0 },
	{ "health-path", ARG, opt_health_path, 0, 0, 0 },
	INT("health-interval-ms", health_interval_ms, 10, MS),
	INT("rise", rise, 1, 100),
	INT("fall", fall, 1, 100),
	INT("connect-timeout-ms", connect_timeout_ms, 1, MS),
	INT("header-timeout-ms", header_timeout_ms, 1, MS),
	INT("idle-timeout-ms", idle_timeout_ms, 1, MS),
	INT("backend-timeout-ms", backend_timeout_ms, 1, MS),
	INT("drain-timeout-ms", drain_timeout_ms, 0, MS),
	{ "max-conns", ARG, opt_max_conns,
	  offsetof(struct bal_config, max_conns), 0, 10000000 },
	{ "max-body", ARG, opt_max_body, 0, 0, 0 },
	{ "max-line", ARG, opt_size, offsetof(struct bal_config, lim.max_line),
	  64, 1 << 20 },
	{ "max-header-size", ARG, opt_size,
	  offsetof(struct bal_config, lim.max_head), 64, 1 << 20 },
	INT("max-headers", lim.max_headers, 1, BAL_MAX_HEADERS),
	INT("workers", workers, 1, 64),
	{ "log-level", ARG, opt_log, 0, 0, 0 },
	{ "help", no_argument, opt_help, 0, 0, 0 },
	{ "deny-path", ARG, opt_deny, 0, 0, 0 },
	{ "no-deny-path", no_argument, opt_no_deny, 0, 0, 0 },
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static int
bad(const char *opt, const char *val)
{
	fprintf(stderr, "hs-balancer: invalid value for --%s: '%s'\n", opt,
		val);
	return -1;
}

static void
set_defaults(struct bal_config *cfg, int *log_level)
{
	memset(cfg, 0, sizeof(*cfg));
	strcpy(cfg->listen_host, "127.0.0.1");
	cfg->listen_port = 8080;
	strcpy(cfg->admin_host, "127.0.0.1");
	cfg->admin_port = 8090;
	strcpy(cfg->health_path, "/healthz");
	cfg->health_interval_ms = 2000;
	cfg->rise = 2;
	cfg->fall = 3;
	cfg->connect_timeout_ms = 1000;
	cfg->header_timeout_ms = 10000;
	cfg->idle_timeout_ms = 60000;
	cfg->backend_timeout_ms = 30000;
	cfg->drain_timeout_ms = 10000;
	cfg->max_conns = 100000;
	cfg->max_body = 1073741824;
	cfg->workers = 1;
	cfg->lim.max_line = 8192;
	cfg->lim.max_head = 16384;
	cfg->lim.max_headers = 100;
	/* The servers' counters are for operators, not the public port. */
	cfg->deny[cfg->ndeny++] = "/stats";
	cfg->deny[cfg->ndeny++] = "/metrics";
	*log_level = HS_LOG_INFO;
}

/* Returns 0 to run, 1 to exit 0 (--help), -1 to exit 2. */
static int
parse_args(int argc, char **argv, struct bal_config *cfg, int *log_level)
{
	struct option longopts[NOPTS + 1];
	int ch, idx, rc;

	set_defaults(cfg, log_level);
	memset(longopts, 0, sizeof(longopts));
	for (size_t i = 0; i < NOPTS; i++)
		longopts[i] = (struct option){ opts[i].name, opts[i].has_arg,
					       NULL, 256 + (int)i };
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
		const struct opt *o;
		if (ch == 'h')
			return opt_help(cfg, log_level, NULL, NULL);
		if (ch < 256 || ch >= 256 + (int)NOPTS) {
			fprintf(stderr,
				"hs-balancer: unknown or incomplete "
				"option '%s' (see --help)\n",
				argv[optind - 1]);
			return -1;
		}
		o = &opts[ch - 256];
		rc = o->set(cfg, log_level, o, optarg);
		if (rc < 0)
			return bad(o->name, optarg);
		if (rc > 0)
			return rc;
	}
	if (optind < argc) {
		fprintf(stderr, "hs-balancer: unexpected argument '%s'\n",
			argv[optind]);
		return -1;
	}
	if (cfg->nspecs == 0 && cfg->backends_file == NULL) {
		fprintf(stderr, "hs-balancer: no backends (use --backend or "
				"--backends-file)\n");
		return -1;
	}
	if (cfg->lim.max_line > cfg->lim.max_head)
		cfg->lim.max_line = cfg->lim.max_head;
	return 0;
}

/*
 * Takes the hard descriptor limit, then lowers --max-conns to fit in it:
 * past the limit, accept fails, and health checks and backend connections
 * find no descriptor either.
 */
static void
fit_descriptors(struct bal_config *cfg, int nbackends)
{
	struct rlimit rl;
	long avail;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_warn("getrlimit(RLIMIT_NOFILE)");
		return;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit want = { rl.rlim_max, rl.rlim_max };
		if (setrlimit(RLIMIT_NOFILE, &want) == 0)
			rl = want;
		else
			log_warn("setrlimit(RLIMIT_NOFILE)");
	}
	/* Beyond the largest --max-conns: nothing to fit. */
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 100000000)
		return;
	avail = ((long)rl.rlim_cur - BAL_FD_RESERVE - 8L * cfg->workers -
		 nbackends) *
		3 / 4;
	if (avail < 1)
		avail = 1;
	if (cfg->max_conns != 0 && cfg->max_conns <= avail)
		return;
	if (cfg->max_conns_given)
		log_warnx("--max-conns %d lowered to %ld to fit the descriptor "
			  "limit of %ld (ulimit -n)",
			  cfg->max_conns, avail, (long)rl.rlim_cur);
	else
		log_info("at most %ld clients at a time (descriptor limit %ld)",
			 avail, (long)rl.rlim_cur);
	cfg->max_conns = (int)avail;
}

/* libevent's own warnings, through our format and rate limit. */
static void
libevent_log(int severity, const char *msg)
{
	if (severity >= EVENT_LOG_WARN)
		log_warnx_rl("libevent: %s", msg);
	else
		log_debug("libevent: %s", msg);
}

static void
on_term(evutil_socket_t sig, short what, void *arg)
{
	struct bal_app *app = arg;

	if (__atomic_exchange_n(&app->draining, 1, __ATOMIC_RELAXED))
		return;
	log_info("signal %d: draining", (int)sig);
	bal_admin_free(app->admin);
	app->admin = NULL;
	bal_health_stop(app);
	event_del(app->ev_hup);
	event_del(app->ev_term);
	event_del(app->ev_int);
	for (int i = 0; i < app->nworkers; i++)
		bal_worker_drain(app->workers[i]);
}

static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct bal_app *app = arg;
	char err[512];

	if (bal_set_load(app, err, sizeof(err)) < 0) {
		log_warnx("reload failed, keeping the current backends: %s",
			  err);
		return;
	}
	log_info("reloaded: %d backends", bal_set_current(app)->n);
	bal_health_sync(app);
}

static void *
worker_main(void *arg)
{
	struct event_base *base = arg;

	event_base_dispatch(base);
	return NULL;
}

int
main(int argc, char **argv)
{
	struct bal_app app;
	struct event_base **bases = NULL;
	pthread_t *threads = NULL;
	char err[512];
	int level, rc, status = 1;

	memset(&app, 0, sizeof(app));
	rc = parse_args(argc, argv, &app.cfg, &level);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	hs_log_init("hs-balancer", level);
	event_set_log_callback(libevent_log);
	signal(SIGPIPE, SIG_IGN);
	if (app.cfg.workers > 1 && evthread_use_pthreads() < 0)
		fatalx("evthread_use_pthreads failed");
	app.policy = app.cfg.algo == BAL_ALGO_LEASTCONN ? &bal_policy_leastconn
							: &bal_policy_rr;
	TAILQ_INIT(&app.backends);
	pthread_mutex_init(&app.reload_lock, NULL);
	if (bal_set_load(&app, err, sizeof(err)) < 0) {
		fprintf(stderr, "hs-balancer: %s\n", err);
		return 2;
	}
	fit_descriptors(&app.cfg, bal_set_current(&app)->n);
	app.nworkers = app.cfg.workers;
	app.workers = hs_xcalloc((size_t)app.nworkers, sizeof(*app.workers));
	bases = hs_xcalloc((size_t)app.nworkers, sizeof(*bases));
	threads = hs_xcalloc((size_t)app.nworkers, sizeof(*threads));
	app.bound_port = app.cfg.listen_port;
	for (int i = 0; i < app.nworkers; i++) {
		int port = app.bound_port;
		int fd = hs_listen_reuseport(app.cfg.listen_host, port, 4096,
					     &app.bound_port);
		if (fd < 0) {
			log_error("cannot listen on %s:%d: %s",
				  app.cfg.listen_host, port, strerror(errno));
			goto out;
		}
		if ((bases[i] = event_base_new()) == NULL)
			fatalx("event_base_new failed");
		app.workers[i] = bal_worker_new(&app, i, bases[i], fd);
		if (app.workers[i] == NULL) {
			close(fd);
			goto out;
		}
	}
	app.base = bases[0];
	app.admin = bal_admin_new(&app, app.cfg.admin_host, app.cfg.admin_port,
				  &app.admin_bound_port);
	if (app.admin == NULL)
		goto out;
	app.ev_term = evsignal_new(app.base, SIGTERM, on_term, &app);
	app.ev_int = evsignal_new(app.base, SIGINT, on_term, &app);
	app.ev_hup = evsignal_new(app.base, SIGHUP, on_hup, &app);
	event_add(app.ev_term, NULL);
	event_add(app.ev_int, NULL);
	event_add(app.ev_hup, NULL);
	bal_health_sync(&app);
	printf("listening on %s:%d\n", app.cfg.listen_host, app.bound_port);
	printf("admin on %s:%d\n", app.cfg.admin_host, app.admin_bound_port);
	fflush(stdout);
	log_info("%d worker(s), %s, %d backend(s)", app.nworkers,
		 app.policy->name, bal_set_current(&app)->n);
	for (int i = 1; i < app.nworkers; i++)
		if (pthread_create(&threads[i], NULL, worker_main, bases[i]) !=
		    0)
			fatalx("pthread_create failed");
	event_base_dispatch(app.base);
	for (int i = 1; i < app.nworkers; i++)
		pthread_join(threads[i], NULL);
	log_info("stopped");
	status = 0;
out:
	bal_health_stop(&app);
	bal_admin_free(app.admin);
	if (app.ev_term) {
		event_free(app.ev_term);
		event_free(app.ev_int);
		event_free(app.ev_hup);
	}
	for (int i = 0; i < app.nworkers; i++)
		bal_worker_free(app.workers[i]);
	for (int i = 0; i < app.nworkers; i++)
		if (bases[i])
			event_base_free(bases[i]);
	bal_backends_free(&app);
	pthread_mutex_destroy(&app.reload_lock);
	free(app.workers);
	free(bases);
	free(threads);
	return status;
}
