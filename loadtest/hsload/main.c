/*
 * hs-load, the open-loop load generator: parses the options, resolves the
 * URL, runs one point (or one per --sweep rate) with engine.c, and prints a
 * human summary and one machine-readable line "HSJSON {...}" (a CSV too
 * with --out).  See usage() for the options and the exit statuses.
 */
#include <errno.h>
#include <netdb.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hs_buf.h"
#include "hs_log.h"
#include "hs_opt.h"
#include "hs_util.h"
#include "hsload.h"

#define HSL_MAX_SWEEP 64
#define HSL_MAX_CONNS 10000
#define HSL_MAX_RATE  10000000.0

enum hsl_exit {
	HSL_EXIT_OK = 0,
	HSL_EXIT_FAIL = 1, /* cannot connect, or nothing answered */
	HSL_EXIT_USAGE = 2,
	HSL_EXIT_INTERRUPTED = 130,
};

struct hsl_opts {
	const char *url;
	char host[256]; /* for getaddrinfo, without brackets */
	char port[8];
	char hostport[300]; /* the Host header, as in the URL */
	char path[512];
	double rates[HSL_MAX_SWEEP];
	int nrates;
	int sweep;
	double duration_s, warmup_s, timeout_s;
	int connections;
	int per_connection;
	enum hsl_arrival arrival;
	struct hsl_mix_opts mix;
	const char *out;
	int64_t dump;  /* --dump-requests N: print N requests, send none */
	int have_rate; /* --rate was given */
	int quiet;
	int progress_ms;
};

static void
hsl_usage(FILE *f)
{
	fprintf(f,
		"usage: hs-load URL --rate R [options]\n"
		"       hs-load URL --sweep R1,R2,... [options]\n"
		"An open-loop HTTP/1.1 load generator: requests are sent on a schedule at\n"
		"the offered rate whatever the server's answers do, and latency is measured\n"
		"from each request's planned send time (corrected for coordinated omission)\n"
		"as well as from its actual send (uncorrected, as closed-loop tools do).\n"
		"URL is http://HOST[:PORT][/PATH]; the plain mix GETs PATH, the others build\n"
		"their own paths.\n"
		"\n"
		"  --rate R               requests per second offered (> 0)\n"
		"  --duration S           measured seconds per point (default 10)\n"
		"  --warmup S             seconds sent first and not measured (default 1)\n"
		"  --connections C        most keep-alive connections, one request in flight\n"
		"                         each; the pool grows to C while requests wait\n"
		"                         (default 64)\n"
		"  --per-connection       each of the C connections is a client with its own\n"
		"                         schedule at R/C req/s (random phase), sending in\n"
		"                         order on its keep-alive connection, like users who\n"
		"                         pause between requests; counts the clients never\n"
		"                         answered (clients_starved)\n"
		"  --arrival KIND         uniform (default) or poisson request spacing\n"
		"  --timeout S            an answer later than S after its send is an error;\n"
		"                         also the longest drain after a point (default 5)\n"
		"  --sweep R1,R2,...      one point per rate (up to %d), a progress line each\n"
		"  --out FILE             write a CSV, one row per point: rate, achieved,\n"
		"                         percentiles\n"
		"  --mix MIX              plain (default), read, update, hot: the wrk scripts'\n"
		"                         mixes (loadtest/wrk/read-mix.lua, update-mix.lua,\n"
		"                         hot-key.lua) with their option names:\n"
		"    --products N         Zipf ids 1..N (default 100000)\n"
		"    --categories N       Zipf category ids 1..N (default 100)\n"
		"    --top F              share of reads that are /categories/{id}/top (0.1)\n"
		"    --put F              share of PUTs (update: 0.05, hot: 0)\n"
		"    --review F           share of review POSTs (update: 0.05)\n"
		"    --s F                Zipf exponent (default 1.0)\n"
		"    --scatter 0|1        spread the hot ids over the id range (default 1)\n"
		"    --id N               the hot mix's product (default 1)\n"
		"  --seed N               random seed of the mix and of Poisson gaps (1)\n"
		"  --dump-requests N      print the first N requests' lines, send nothing\n"
		"  --quiet                no summary, only the HSJSON line (and sweep progress)\n"
		"  --progress-ms N        every N ms (100..60000), one JSON line on stdout of\n"
		"                         that interval alone, warmup and drain included:\n"
		"                         {\"progress\":true,\"t\": Unix seconds, \"elapsed_s\",\n"
		"                         \"phase\", \"measuring\" (0/1), \"offered_rps\", running\n"
		"                         totals \"answers\" and \"lost\" (errors, timeouts),\n"
		"                         \"interval_answers\", \"interval_lost\",\n"
		"                         \"interval_p50_us\", \"interval_p99_us\",\n"
		"                         \"interval_max_us\" (from the planned send time)}\n"
		"  --help\n"
		"\n"
		"Prints a summary and one final line \"HSJSON {...}\": offered_rps,\n"
		"achieved_rps, requests, errors, non2xx, late (sent > 1 ms after plan),\n"
		"p50_us..max_us corrected, uncorrected_p50_us.. (a \"points\" list with\n"
		"--sweep).  Exit status: 0 done; 1 cannot connect, or no answer at all;\n"
		"2 usage error; 130 interrupted (SIGINT/SIGTERM; the partial result is\n"
		"printed).\n",
		HSL_MAX_SWEEP);
}

/* http://HOST[:PORT][/PATH], HOST a name, an IPv4 or a [IPv6] address. */
static int
hsl_parse_url(struct hsl_opts *o, const char *url)
{
	const char *p, *hend, *pstart;
	size_t hl;
	int port = 80;

	if (strncmp(url, "http://", 7) != 0)
		return -1;
	p = url + 7;
	pstart = p + strcspn(p, "/?#");
	if (*pstart == '#' || pstart == p)
		return -1;
	if (*p == '[') {
		hend = memchr(p, ']', (size_t)(pstart - p));
		if (hend == NULL)
			return -1;
		hl = (size_t)(hend - p - 1);
		if (hl == 0 || hl >= sizeof(o->host))
			return -1;
		memcpy(o->host, p + 1, hl);
		hend++;
	} else {
		hend = memchr(p, ':', (size_t)(pstart - p));
		if (hend == NULL)
			hend = pstart;
		hl = (size_t)(hend - p);
		if (hl == 0 || hl >= sizeof(o->host))
			return -1;
		memcpy(o->host, p, hl);
	}
	o->host[hl] = '\0';
	if (strpbrk(o->host, "@ \t") != NULL)
		return -1;
	if (hend < pstart) {
		char num[8];
		size_t nl = (size_t)(pstart - hend - 1);

		if (*hend != ':' || nl == 0 || nl >= sizeof(num))
			return -1;
		memcpy(num, hend + 1, nl);
		num[nl] = '\0';
		if (hs_parse_int(num, 1, 65535, &port) != 0)
			return -1;
	}
	snprintf(o->port, sizeof(o->port), "%d", port);
	if ((size_t)(pstart - p) >= sizeof(o->hostport))
		return -1;
	memcpy(o->hostport, p, (size_t)(pstart - p));
	o->hostport[pstart - p] = '\0';
	if (*pstart == '\0')
		snprintf(o->path, sizeof(o->path), "/");
	else if (*pstart == '?')
		snprintf(o->path, sizeof(o->path), "/%s", pstart);
	else
		snprintf(o->path, sizeof(o->path), "%s", pstart);
	if (strlen(o->path) >= sizeof(o->path) - 1 ||
	    strpbrk(o->path, " \t\r\n#") != NULL)
		return -1;
	o->url = url;
	return 0;
}

static int
hsl_parse_rates(struct hsl_opts *o, const char *list)
{
	char *copy = hs_xstrdup(list), *save = NULL, *tok;
	int rc = 0;

	o->nrates = 0;
	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		if (o->nrates == HSL_MAX_SWEEP ||
		    hs_parse_double(tok, 0.001, HSL_MAX_RATE,
				    &o->rates[o->nrates]) != 0) {
			rc = -1;
			break;
		}
		o->nrates++;
	}
	if (o->nrates == 0)
		rc = -1;
	free(copy);
	return rc;
}

static int
hsl_set_rate(void *opts, const char *arg)
{
	struct hsl_opts *o = opts;

	o->have_rate = 1;
	return hs_parse_double(arg, 0.001, HSL_MAX_RATE, &o->rates[0]);
}

static int
hsl_set_sweep(void *opts, const char *arg)
{
	struct hsl_opts *o = opts;

	o->sweep = 1;
	return hsl_parse_rates(o, arg);
}

static int
hsl_set_arrival(void *opts, const char *arg)
{
	struct hsl_opts *o = opts;

	if (strcmp(arg, "uniform") == 0)
		o->arrival = HSL_ARRIVAL_UNIFORM;
	else if (strcmp(arg, "poisson") == 0)
		o->arrival = HSL_ARRIVAL_POISSON;
	else
		return -1;
	return 0;
}

static int
hsl_set_mix(void *opts, const char *arg)
{
	return hsl_mix_parse_kind(arg, &((struct hsl_opts *)opts)->mix.kind);
}

#define O(f) offsetof(struct hsl_opts, f)
static const struct hs_opt hsl_opt_defs[] = {
	{ "rate", HS_OPT_FUNC, 0, 0, 0, 0, 0, hsl_set_rate,
	  "--rate must be a number of requests per second, > 0 and <= "
	  "10000000" },
	{ "duration", HS_OPT_DOUBLE, O(duration_s), 0, 0, 0.01, 86400, NULL,
	  "--duration must be 0.01..86400 seconds" },
	{ "warmup", HS_OPT_DOUBLE, O(warmup_s), 0, 0, 0, 3600, NULL,
	  "--warmup must be 0..3600 seconds" },
	{ "connections", HS_OPT_INT, O(connections), 1, HSL_MAX_CONNS, 0, 0,
	  NULL, "--connections must be 1..10000" },
	{ "arrival", HS_OPT_FUNC, 0, 0, 0, 0, 0, hsl_set_arrival,
	  "--arrival must be uniform or poisson" },
	{ "timeout", HS_OPT_DOUBLE, O(timeout_s), 0, 0, 0.01, 3600, NULL,
	  "--timeout must be 0.01..3600 seconds" },
	{ "sweep", HS_OPT_FUNC, 0, 0, 0, 0, 0, hsl_set_sweep,
	  "--sweep must be a comma-separated list of 1..64 rates > 0, e.g. "
	  "1000,2000,4000" },
	{ "out", HS_OPT_STR, O(out), 0, 0, 0, 0, NULL, NULL },
	{ "mix", HS_OPT_FUNC, 0, 0, 0, 0, 0, hsl_set_mix,
	  "--mix must be plain, read, update or hot" },
	{ "products", HS_OPT_I64, O(mix.products), 1, 10000000, 0, 0, NULL,
	  "--products must be 1..10000000" },
	{ "categories", HS_OPT_I64, O(mix.categories), 1, 10000000, 0, 0, NULL,
	  "--categories must be 1..10000000" },
	{ "top", HS_OPT_DOUBLE, O(mix.top), 0, 0, 0, 1, NULL,
	  "--top must be a share in 0..1" },
	{ "put", HS_OPT_DOUBLE, O(mix.put), 0, 0, 0, 1, NULL,
	  "--put must be a share in 0..1" },
	{ "review", HS_OPT_DOUBLE, O(mix.review), 0, 0, 0, 1, NULL,
	  "--review must be a share in 0..1" },
	{ "s", HS_OPT_DOUBLE, O(mix.s), 0, 0, 0, 10, NULL,
	  "--s must be 0..10" },
	{ "zipf-s", HS_OPT_DOUBLE, O(mix.s), 0, 0, 0, 10, NULL,
	  "--s must be 0..10" },
	{ "scatter", HS_OPT_INT, O(mix.scatter), 0, 1, 0, 0, NULL,
	  "--scatter must be 0 or 1" },
	{ "id", HS_OPT_I64, O(mix.id), 1, INT64_MAX / 2, 0, 0, NULL,
	  "--id must be a positive product id" },
	/* A uint64_t, stored as the int64_t it is read as (0..INT64_MAX). */
	{ "seed", HS_OPT_I64, O(mix.seed), 0, INT64_MAX, 0, 0, NULL,
	  "--seed must be a non-negative integer" },
	{ "dump-requests", HS_OPT_I64, O(dump), 1, 100000000, 0, 0, NULL,
	  "--dump-requests must be 1..100000000" },
	{ "quiet", HS_OPT_FLAG, O(quiet), 0, 0, 0, 0, NULL, NULL },
	{ "progress-ms", HS_OPT_INT, O(progress_ms), 100, 60000, 0, 0, NULL,
	  "--progress-ms must be 100..60000" },
	{ "per-connection", HS_OPT_FLAG, O(per_connection), 0, 0, 0, 0, NULL,
	  NULL },
};
#undef O

/* Returns 0 to run, 1 to exit 0 (--help), -1 on a usage error. */
static int
hsl_parse_args(struct hsl_opts *o, int argc, char **argv)
{
	int rc;

	memset(o, 0, sizeof(*o));
	o->duration_s = 10;
	o->warmup_s = 1;
	o->timeout_s = 5;
	o->connections = 64;
	o->arrival = HSL_ARRIVAL_UNIFORM;
	hsl_mix_defaults(&o->mix);
	rc = hs_opt_parse("hs-load", hsl_opt_defs,
			  sizeof(hsl_opt_defs) / sizeof(hsl_opt_defs[0]), argc,
			  argv, o, hsl_usage);
	if (rc != 0)
		return rc;
	if (optind >= argc) {
		fprintf(stderr, "hs-load: a URL is required (see --help)\n");
		return -1;
	}
	if (optind + 1 < argc) {
		fprintf(stderr, "hs-load: unexpected argument '%s'\n",
			argv[optind + 1]);
		return -1;
	}
	if (hsl_parse_url(o, argv[optind]) != 0) {
		fprintf(stderr,
			"hs-load: bad URL '%s' (expected "
			"http://HOST[:PORT][/PATH])\n",
			argv[optind]);
		return -1;
	}
	if (o->dump == 0 && o->have_rate == o->sweep) {
		fprintf(stderr, "hs-load: give either --rate or --sweep "
				"(see --help)\n");
		return -1;
	}
	if (!o->sweep)
		o->nrates = 1;
	return 0;
}

/* ------------------------------------------------------------ output */

struct hsl_point {
	double offered, achieved, elapsed_s, span_s;
	int interrupted;
	struct hsl_stats *st;
};

static uint64_t
hsl_q(const struct hs_hist *h, double q)
{
	return hs_hist_quantile(h, q);
}

static uint64_t
hsl_non2xx(const struct hsl_stats *st)
{
	return st->requests - st->s2xx;
}

static void
hsl_point_json(struct hs_buf *b, const struct hsl_point *p)
{
	const struct hsl_stats *st = p->st;
	const struct hs_hist *c = &st->corrected, *u = &st->uncorrected;
	int first = 1;

	hs_buf_printf(b,
		      "\"offered_rps\":%.1f,\"achieved_rps\":%.1f,"
		      "\"duration_s\":%.3f,\"answer_span_s\":%.3f,"
		      "\"interrupted\":%s,",
		      p->offered, p->achieved, p->elapsed_s, p->span_s,
		      p->interrupted ? "true" : "false");
#define HSL_COUNTER_JSON(name, help) \
	hs_buf_printf(b, "\"%s\":%llu,", #name, (unsigned long long)st->name);
	HSL_COUNTERS(HSL_COUNTER_JSON)
#undef HSL_COUNTER_JSON
	hs_buf_printf(b, "\"non2xx\":%llu,",
		      (unsigned long long)hsl_non2xx(st));
	hs_buf_printf(b,
		      "\"p50_us\":%llu,\"p90_us\":%llu,\"p99_us\":%llu,"
		      "\"p999_us\":%llu,\"max_us\":%llu,\"mean_us\":%llu,",
		      (unsigned long long)hsl_q(c, 0.5),
		      (unsigned long long)hsl_q(c, 0.9),
		      (unsigned long long)hsl_q(c, 0.99),
		      (unsigned long long)hsl_q(c, 0.999),
		      (unsigned long long)c->max_us,
		      (unsigned long long)(c->count ? c->sum_us / c->count
						    : 0));
	hs_buf_printf(b,
		      "\"uncorrected_p50_us\":%llu,\"uncorrected_p90_us\":%llu,"
		      "\"uncorrected_p99_us\":%llu,\"uncorrected_p999_us\":%llu,"
		      "\"uncorrected_max_us\":%llu,\"kinds\":{",
		      (unsigned long long)hsl_q(u, 0.5),
		      (unsigned long long)hsl_q(u, 0.9),
		      (unsigned long long)hsl_q(u, 0.99),
		      (unsigned long long)hsl_q(u, 0.999),
		      (unsigned long long)u->max_us);
	for (int k = 0; k < HSL_KIND_COUNT; k++) {
		if (st->kinds[k] == 0)
			continue;
		hs_buf_printf(b, "%s\"%s\":%llu", first ? "" : ",",
			      hsl_kind_name((enum hsl_kind)k),
			      (unsigned long long)st->kinds[k]);
		first = 0;
	}
	hs_buf_puts(b, "}");
}

static void
hsl_point_text(const struct hsl_point *p)
{
	const struct hsl_stats *st = p->st;
	const struct hs_hist *h[2] = { &st->corrected, &st->uncorrected };
	static const char *const what[2] = {
		"corrected (from the planned send)",
		"uncorrected (from the actual send)"
	};

	printf("  %llu answers to the requests of %.2f s, received in %.2f s = "
	       "%.0f req/s achieved (%.1f%% of %.0f offered)%s\n",
	       (unsigned long long)st->requests, p->elapsed_s, p->span_s,
	       p->achieved,
	       p->offered > 0 ? 100.0 * p->achieved / p->offered : 0,
	       p->offered, p->interrupted ? " -- interrupted" : "");
	for (int i = 0; i < 2; i++)
		printf("  latency %-36s p50 %llu us, p90 %llu, p99 %llu, "
		       "p99.9 %llu, max %llu\n",
		       what[i], (unsigned long long)hsl_q(h[i], 0.5),
		       (unsigned long long)hsl_q(h[i], 0.9),
		       (unsigned long long)hsl_q(h[i], 0.99),
		       (unsigned long long)hsl_q(h[i], 0.999),
		       (unsigned long long)h[i]->max_us);
	printf("  sent late (> 1 ms) %llu; errors %llu (connect %llu, io %llu, "
	       "parse %llu, timeout %llu); non-2xx %llu; unfinished %llu; "
	       "connections %llu\n",
	       (unsigned long long)st->late, (unsigned long long)st->errors,
	       (unsigned long long)st->err_connect,
	       (unsigned long long)st->err_io,
	       (unsigned long long)st->err_parse,
	       (unsigned long long)st->err_timeout,
	       (unsigned long long)hsl_non2xx(st),
	       (unsigned long long)st->unfinished,
	       (unsigned long long)st->connections);
	if (st->clients_answered + st->clients_starved > 0)
		printf("  clients answered at least once %llu, never answered "
		       "%llu\n",
		       (unsigned long long)st->clients_answered,
		       (unsigned long long)st->clients_starved);
}

static void
hsl_csv_header(FILE *f)
{
	fprintf(f,
		"offered_rps,achieved_rps,requests,errors,non2xx,late,"
		"p50_us,p90_us,p99_us,p999_us,max_us,uncorrected_p50_us,"
		"uncorrected_p90_us,uncorrected_p99_us,uncorrected_max_us\n");
}

static void
hsl_csv_row(FILE *f, const struct hsl_point *p)
{
	const struct hs_hist *c = &p->st->corrected, *u = &p->st->uncorrected;

	fprintf(f,
		"%.1f,%.1f,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,"
		"%llu,%llu,%llu,%llu\n",
		p->offered, p->achieved, (unsigned long long)p->st->requests,
		(unsigned long long)p->st->errors,
		(unsigned long long)hsl_non2xx(p->st),
		(unsigned long long)p->st->late,
		(unsigned long long)hsl_q(c, 0.5),
		(unsigned long long)hsl_q(c, 0.9),
		(unsigned long long)hsl_q(c, 0.99),
		(unsigned long long)hsl_q(c, 0.999),
		(unsigned long long)c->max_us,
		(unsigned long long)hsl_q(u, 0.5),
		(unsigned long long)hsl_q(u, 0.9),
		(unsigned long long)hsl_q(u, 0.99),
		(unsigned long long)u->max_us);
}

/* The final line: the run's settings, then one point's fields or a list. */
static void
hsl_print_json(const struct hsl_opts *o, const struct hsl_point *pts, int n,
	       int interrupted)
{
	struct hs_buf b = HS_BUF_INIT;

	hs_buf_puts(&b, "HSJSON {\"tool\":\"hs-load\",\"url\":");
	hs_buf_json_str(&b, o->url);
	hs_buf_printf(&b,
		      ",\"mix\":\"%s\",\"arrival\":\"%s\","
		      "\"max_connections\":%d,\"schedule\":\"%s\","
		      "\"warmup_s\":%.3f,",
		      hsl_mix_kind_name(o->mix.kind),
		      o->arrival == HSL_ARRIVAL_POISSON ? "poisson" : "uniform",
		      o->connections,
		      o->per_connection ? "per-connection" : "pool",
		      o->warmup_s);
	if (!o->sweep && n == 1) {
		hsl_point_json(&b, &pts[0]);
	} else {
		hs_buf_printf(&b, "\"interrupted\":%s,\"points\":[",
			      interrupted ? "true" : "false");
		for (int i = 0; i < n; i++) {
			hs_buf_puts(&b, i ? ",{" : "{");
			hsl_point_json(&b, &pts[i]);
			hs_buf_puts(&b, "}");
		}
		hs_buf_puts(&b, "]");
	}
	hs_buf_puts(&b, "}\n");
	fputs(b.data, stdout);
	fflush(stdout);
	hs_buf_free(&b);
}

/* ------------------------------------------------------------ main */

static int
hsl_dump(const struct hsl_opts *o, struct hsl_mix *mix)
{
	char req[HSL_REQ_MAX];
	enum hsl_kind kind;

	for (int64_t i = 0; i < o->dump; i++) {
		size_t n = hsl_mix_next(mix, req, sizeof(req), &kind);
		char *eol = memchr(req, '\r', n);

		/* The request line without " HTTP/1.1". */
		if (eol != NULL && eol - req > 9)
			printf("%.*s\n", (int)(eol - req - 9), req);
	}
	return fflush(stdout) == 0 ? HSL_EXIT_OK : HSL_EXIT_FAIL;
}

static volatile sig_atomic_t hsl_stop;

static void
hsl_on_signal(int sig)
{
	(void)sig;
	hsl_stop = 1;
}

static void
hsl_progress(const struct hsl_point *p, int i, int n)
{
	const struct hsl_stats *st = p->st;

	printf("point %d/%d: offered %.0f req/s, achieved %.0f (%.1f%%), "
	       "p50 %llu us, p90 %llu, p99 %llu, max %llu; uncorrected p99 "
	       "%llu; errors %llu, non-2xx %llu, late %llu%s\n",
	       i + 1, n, p->offered, p->achieved,
	       100.0 * p->achieved / p->offered,
	       (unsigned long long)hsl_q(&st->corrected, .5),
	       (unsigned long long)hsl_q(&st->corrected, .9),
	       (unsigned long long)hsl_q(&st->corrected, .99),
	       (unsigned long long)st->corrected.max_us,
	       (unsigned long long)hsl_q(&st->uncorrected, .99),
	       (unsigned long long)st->errors,
	       (unsigned long long)hsl_non2xx(st), (unsigned long long)st->late,
	       p->interrupted ? " -- interrupted" : "");
	fflush(stdout);
}

/*
 * Runs the points (one, or one per --sweep rate) into pts; *done is how
 * many hold a result.  Returns an exit status.
 */
static int
hsl_points(const struct hsl_opts *o, struct hsl_run_opts *ro,
	   struct hsl_mix *mix, struct hsl_point *pts, FILE *csv, int *done)
{
	uint64_t answered = 0;
	int n;

	for (n = 0; n < o->nrates && !hsl_stop; n++) {
		struct hsl_point *p = &pts[n];
		struct hsl_result res;

		p->st = hs_xcalloc(1, sizeof(*p->st));
		ro->rate = o->rates[n];
		if (hsl_run(ro, mix, p->st, &res) != 0) {
			fprintf(stderr,
				"hs-load: cannot set up the event loop\n");
			*done = n;
			return HSL_EXIT_FAIL;
		}
		if (res.end == HSL_RUN_NO_CONNECT) {
			fprintf(stderr, "hs-load: %s\n", res.error);
			*done = n;
			return HSL_EXIT_FAIL;
		}
		p->offered = ro->rate;
		p->elapsed_s = res.elapsed_s;
		p->span_s = res.span_s;
		p->interrupted = res.end == HSL_RUN_INTERRUPTED;
		/* Answers over the time they took to come, drain included:
		 * a backlog answered after the window does not count as
		 * throughput inside it. */
		p->achieved =
			p->span_s > 0 ? (double)p->st->requests / p->span_s : 0;
		answered += p->st->requests;
		if (csv)
			hsl_csv_row(csv, p);
		if (o->sweep)
			hsl_progress(p, n, o->nrates);
		else if (!o->quiet)
			hsl_point_text(p);
		if (p->interrupted) {
			*done = n + 1;
			return HSL_EXIT_INTERRUPTED;
		}
	}
	*done = n;
	if (hsl_stop)
		return HSL_EXIT_INTERRUPTED;
	if (answered == 0) {
		fprintf(stderr, "hs-load: no request was answered\n");
		return HSL_EXIT_FAIL;
	}
	return HSL_EXIT_OK;
}

int
main(int argc, char **argv)
{
	struct hsl_opts o;
	struct hsl_mix *mix = NULL;
	struct addrinfo hints, *ai = NULL;
	struct hsl_point pts[HSL_MAX_SWEEP];
	struct hsl_run_opts ro;
	FILE *csv = NULL;
	char err[256];
	int rc = HSL_EXIT_USAGE, n = 0, gai;

	memset(pts, 0, sizeof(pts));
	hs_log_init("hs-load", HS_LOG_WARN);
	switch (hsl_parse_args(&o, argc, argv)) {
	case 1:
		return HSL_EXIT_OK;
	case -1:
		return HSL_EXIT_USAGE;
	}
	if ((mix = hsl_mix_new(&o.mix, o.hostport, o.path, err, sizeof(err))) ==
	    NULL) {
		fprintf(stderr, "hs-load: %s\n", err);
		goto out;
	}
	if (o.dump > 0) {
		rc = hsl_dump(&o, mix);
		goto out;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((gai = getaddrinfo(o.host, o.port, &hints, &ai)) != 0) {
		fprintf(stderr, "hs-load: cannot resolve '%s': %s\n", o.host,
			gai_strerror(gai));
		goto out;
	}
	if (o.out != NULL && (csv = fopen(o.out, "w")) == NULL) {
		fprintf(stderr, "hs-load: cannot write %s: %s\n", o.out,
			strerror(errno));
		goto out;
	}
	if (csv)
		hsl_csv_header(csv);
	/* Between points (the loop has its own handlers while it runs). */
	signal(SIGINT, hsl_on_signal);
	signal(SIGTERM, hsl_on_signal);
	memset(&ro, 0, sizeof(ro));
	ro.addr = ai->ai_addr;
	ro.addrlen = ai->ai_addrlen;
	ro.target = o.hostport;
	ro.duration_s = o.duration_s;
	ro.warmup_s = o.warmup_s;
	ro.timeout_s = o.timeout_s;
	ro.connections = o.connections;
	ro.progress_ms = o.progress_ms;
	ro.per_connection = o.per_connection;
	ro.arrival = o.arrival;
	ro.seed = o.mix.seed;
	if (!o.quiet)
		printf("hs-load: %s, mix %s, %s arrivals, %.3g s warm-up + "
		       "%.3g s per point, %s %d connections\n",
		       o.url, hsl_mix_kind_name(o.mix.kind),
		       o.arrival == HSL_ARRIVAL_POISSON ? "poisson" : "uniform",
		       o.warmup_s, o.duration_s,
		       o.per_connection ? "one client on each of" : "up to",
		       o.connections);
	rc = hsl_points(&o, &ro, mix, pts, csv, &n);
	/* Whatever was measured is printed, also when a later point failed. */
	if (n > 0)
		hsl_print_json(&o, pts, n, rc == HSL_EXIT_INTERRUPTED);
	if (csv && fclose(csv) != 0) {
		fprintf(stderr, "hs-load: cannot write %s\n", o.out);
		rc = HSL_EXIT_FAIL;
	}
out:
	for (int i = 0; i < HSL_MAX_SWEEP; i++)
		free(pts[i].st);
	if (ai)
		freeaddrinfo(ai);
	hsl_mix_free(mix);
	return rc;
}
