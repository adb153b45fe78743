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

enum {
	O_LISTEN = 256, O_BACKEND, O_FILE, O_ADMIN, O_ALGO, O_HPATH, O_HINT,
	O_RISE, O_FALL, O_CTO, O_HTO, O_ITO, O_BTO, O_DTO, O_MAXC, O_MAXB,
	O_MAXL, O_MAXH, O_MAXN, O_WORKERS, O_LOG, O_HELP, O_DENY, O_NODENY
};

static const struct option longopts[] = {
	{ "listen", required_argument, NULL, O_LISTEN },
	{ "backend", required_argument, NULL, O_BACKEND },
	{ "backends-file", required_argument, NULL, O_FILE },
	{ "admin", required_argument, NULL, O_ADMIN },
	{ "algorithm", required_argument, NULL, O_ALGO },
	{ "health-path", required_argument, NULL, O_HPATH },
	{ "health-interval-ms", required_argument, NULL, O_HINT },
	{ "rise", required_argument, NULL, O_RISE },
	{ "fall", required_argument, NULL, O_FALL },
	{ "connect-timeout-ms", required_argument, NULL, O_CTO },
	{ "header-timeout-ms", required_argument, NULL, O_HTO },
	{ "idle-timeout-ms", required_argument, NULL, O_ITO },
	{ "backend-timeout-ms", required_argument, NULL, O_BTO },
	{ "drain-timeout-ms", required_argument, NULL, O_DTO },
	{ "max-conns", required_argument, NULL, O_MAXC },
	{ "max-body", required_argument, NULL, O_MAXB },
	{ "max-line", required_argument, NULL, O_MAXL },
	{ "max-header-size", required_argument, NULL, O_MAXH },
	{ "max-headers", required_argument, NULL, O_MAXN },
	{ "workers", required_argument, NULL, O_WORKERS },
	{ "log-level", required_argument, NULL, O_LOG },
	{ "help", no_argument, NULL, O_HELP },
	{ "deny-path", required_argument, NULL, O_DENY },
	{ "no-deny-path", no_argument, NULL, O_NODENY },
	{ NULL, 0, NULL, 0 },
};

static int
bad(const char *opt, const char *val)
{
	fprintf(stderr, "hs-balancer: invalid value for --%s: '%s'\n", opt, val);
	return -1;
}

/* Returns 0 to run, 1 to exit 0 (--help), -1 to exit 2. */
static int
parse_args(int argc, char **argv, struct bal_config *cfg, int *log_level)
{
	int ch, idx, v;
	int64_t v64;

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

	opterr = 0;
	while ((ch = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
		const char *name = ch >= 256 ? longopts[ch - 256].name : "";
		int *ip = NULL, lo = 1, hi = 3600000;
		switch (ch) {
		case O_LISTEN:
			if (hs_parse_hostport(optarg, cfg->listen_host,
					      sizeof(cfg->listen_host),
					      &cfg->listen_port) < 0)
				return bad(name, optarg);
			break;
		case O_ADMIN:
			if (hs_parse_hostport(optarg, cfg->admin_host,
					      sizeof(cfg->admin_host),
					      &cfg->admin_port) < 0)
				return bad(name, optarg);
			break;
		case O_BACKEND:
			if (cfg->nspecs >= BAL_MAX_BACKENDS ||
			    bal_spec_parse(optarg, &cfg->specs[cfg->nspecs]) <
				    0)
				return bad(name, optarg);
			cfg->nspecs++;
			break;
		case O_FILE:
			cfg->backends_file = optarg;
			break;
		case O_ALGO:
			if (strcmp(optarg, "roundrobin") == 0)
				cfg->algo = BAL_ALGO_RR;
			else if (strcmp(optarg, "leastconn") == 0)
				cfg->algo = BAL_ALGO_LEASTCONN;
			else
				return bad(name, optarg);
			break;
		case O_HPATH:
			if (optarg[0] != '/' ||
			    strlen(optarg) >= sizeof(cfg->health_path) ||
			    strpbrk(optarg, " \r\n\t") != NULL)
				return bad(name, optarg);
			strcpy(cfg->health_path, optarg);
			break;
		case O_HINT: ip = &cfg->health_interval_ms; lo = 10; break;
		case O_RISE: ip = &cfg->rise; hi = 100; break;
		case O_FALL: ip = &cfg->fall; hi = 100; break;
		case O_CTO: ip = &cfg->connect_timeout_ms; break;
		case O_HTO: ip = &cfg->header_timeout_ms; break;
		case O_ITO: ip = &cfg->idle_timeout_ms; break;
		case O_BTO: ip = &cfg->backend_timeout_ms; break;
		case O_DTO: ip = &cfg->drain_timeout_ms; lo = 0; break;
		case O_MAXC:
			ip = &cfg->max_conns;
			lo = 0;
			hi = 10000000;
			cfg->max_conns_given = 1;
			break;
		case O_MAXN: ip = &cfg->lim.max_headers; hi = BAL_MAX_HEADERS; break;
		case O_WORKERS: ip = &cfg->workers; hi = 64; break;
		case O_MAXB:
			if (hs_parse_i64(optarg, 0, INT64_MAX / 2, &v64) < 0)
				return bad(name, optarg);
			cfg->max_body = v64;
			break;
		case O_MAXL:
		case O_MAXH:
			if (hs_parse_int(optarg, 64, 1 << 20, &v) < 0)
				return bad(name, optarg);
			if (ch == O_MAXL)
				cfg->lim.max_line = (size_t)v;
			else
				cfg->lim.max_head = (size_t)v;
			break;
		case O_LOG:
			if ((*log_level = hs_log_level_parse(optarg)) < 0)
				return bad(name, optarg);
			break;
		case O_DENY:
			/* The first one replaces the defaults. */
			if (!cfg->deny_given)
				cfg->ndeny = 0;
			cfg->deny_given = 1;
			if (optarg[0] == '\0')
				break;
			if (optarg[0] != '/' || cfg->ndeny >= BAL_MAX_DENY ||
			    strpbrk(optarg, "?# \t\r\n") != NULL)
				return bad(name, optarg);
			cfg->deny[cfg->ndeny++] = optarg;
			break;
		case O_NODENY:
			cfg->ndeny = 0;
			cfg->deny_given = 1;
			break;
		case 'h':
		case O_HELP:
			fputs(usage, stdout);
			return 1;
		default:
			fprintf(stderr, "hs-balancer: unknown or incomplete "
					"option '%s' (see --help)\n",
				argv[optind - 1]);
			return -1;
		}
		if (ip != NULL && hs_parse_int(optarg, lo, hi, ip) < 0)
			return bad(name, optarg);
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
		 nbackends) * 3 / 4;
	if (avail < 1)
		avail = 1;
	if (cfg->max_conns != 0 && cfg->max_conns <= avail)
		return;
	if (cfg->max_conns_given)
		log_warnx("--max-conns %d lowered to %ld to fit the descriptor "
			  "limit of %ld (ulimit -n)", cfg->max_conns, avail,
			  (long)rl.rlim_cur);
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
