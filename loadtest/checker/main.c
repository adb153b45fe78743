/*
 * hs-checker, the consistency checker: concurrent readers and writers on a
 * few hot products behind any URL (one hs-server, or the balancer), to see
 * whether the stack ever serves a product older than an update it has
 * already acknowledged.
 *
 * Writers PUT increasing values and publish, per product, the highest
 * version acknowledged so far (from the 200 body's "version") and when the
 * acknowledgement arrived.  A reader snapshots that published version just
 * before it sends its GET; if the body it gets back carries an older
 * version, the read started after the update was acknowledged and still saw
 * the past: a stale read.  No clock comparison is needed, so the check has
 * no false positives.  After the load, and --settle-ms later, every hot
 * product is read once more and compared with the last acknowledged version
 * and, with --db, with its row read straight from the database (a SQLite
 * file or a PostgreSQL URL).
 *
 * Exit status: 0 consistent; 1 stale reads or final mismatches found, or
 * nothing could be checked (no successful read or write); 2 usage error or
 * the URL / products not usable at start.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checker.h"
#include "hs_buf.h"
#include "hs_hist.h"
#include "hs_log.h"
#include "hs_opt.h"
#include "hs_rng.h"
#include "hs_util.h"

#define CHK_MAX_PRODUCTS 1000
#define CHK_MAX_THREADS  512
#define CHK_EXAMPLES     10

struct chk_opts {
	char url[512];
	char host[256];
	int port;
	int64_t ids[CHK_MAX_PRODUCTS];
	int nids;
	int hot;       /* --hot N: products 1..N */
	int have_list; /* --products was given (wins over --hot) */
	int readers, writers;
	double duration_s;
	int write_interval_ms;
	int read_interval_ms;
	const char *db_path;
	int settle_ms;
	int timeout_ms;
	int json;
	int verbose;
	int progress_ms;
};

/* Shared state of one hot product. */
struct chk_hot {
	pthread_mutex_t mu;
	int64_t id;
	int64_t acked;     /* highest version acknowledged to a writer */
	uint64_t acked_ns; /* when that acknowledgement arrived */
	uint64_t stale;
};

struct chk_example {
	int64_t id, acked, got;
	double ms_after_ack;
};

/* What the last --progress-ms line saw, to report each interval alone. */
struct chk_progress {
	uint64_t next_ns;
	uint64_t reads, writes;
	struct hs_hist read_lat, write_lat;
};

/* Everything the threads share; no globals besides the signal flag. */
struct chk_run {
	const struct chk_opts *o;
	struct chk_hot *hot;
	int stop;            /* atomic */
	uint64_t next_value; /* atomic: the increasing PUT values */
	struct hs_hist read_lat, write_lat;
	/* Atomic running totals for --progress-ms (the fields under mu are
	 * summed when the threads end). */
	uint64_t live_reads, live_read_errors, live_writes, live_write_errors;
	pthread_mutex_t mu; /* guards the fields below */
	uint64_t reads, read_errors, read_bad;
	uint64_t writes, write_errors;
	uint64_t stale;
	int64_t max_behind;
	double max_stale_ms;
	int nexamples;
	struct chk_example examples[CHK_EXAMPLES];
};

struct chk_thread {
	struct chk_run *run;
	int index;
	pthread_t tid;
};

static volatile sig_atomic_t chk_interrupted;

static void
chk_on_signal(int sig)
{
	(void)sig;
	chk_interrupted = 1;
}

static void
chk_usage(FILE *f)
{
	fprintf(f,
		"usage: hs-checker [options]\n"
		"Runs concurrent readers and writers on a few hot products behind a URL and\n"
		"counts stale reads: reads that started after an update was acknowledged\n"
		"and returned an older version.\n"
		"\n"
		"  --url http://HOST:PORT   server or balancer (default http://127.0.0.1:8080)\n"
		"  --products LIST          comma-separated product ids to use\n"
		"  --hot N                  use products 1..N (default 4)\n"
		"  --readers N              reader threads (default 8)\n"
		"  --writers N              writer threads (default 2)\n"
		"  --duration S             seconds of load (default 5)\n"
		"  --write-interval-ms N    pause between a writer's PUTs (default 0)\n"
		"  --read-interval-ms N     pause between a reader's GETs (default 0); keeps\n"
		"                           the checker a light load beside a benchmark\n"
		"  --db PATH|URL            after the load, compare each product served with\n"
		"                           its row in this SQLite file or PostgreSQL database\n"
		"                           (postgres://USER@HOST:PORT/DB: the primary)\n"
		"  --settle-ms N            wait this long after the load before the final\n"
		"                           check (default 1000; cover the cache TTL that\n"
		"                           bounds leftovers)\n"
		"  --timeout-ms N           per-request timeout (default 5000)\n"
		"  --json                   print one JSON line on stdout (summary on stderr)\n"
		"  --progress-ms N          during the load, every N ms (100..60000), print\n"
		"                           one JSON line on stdout: {\"progress\":true,\"t\":\n"
		"                           Unix seconds, \"elapsed_s\", running totals\n"
		"                           \"reads\", \"writes\", \"stale_reads\", \"errors\"\n"
		"                           (connection errors and bad answers, reads and\n"
		"                           writes), and of the interval alone\n"
		"                           \"interval_reads\", \"interval_writes\",\n"
		"                           \"interval_read_p50_us\", \"interval_read_p99_us\",\n"
		"                           \"interval_write_p50_us\", \"interval_write_p99_us\"};\n"
		"                           the last one when the load ends (default 0: none)\n"
		"  --verbose                print every stale read\n"
		"  --help\n"
		"\n"
		"Exit status: 0 no stale reads and no final mismatches; 1 stale reads or\n"
		"mismatches found, or nothing could be checked; 2 usage error or the URL or\n"
		"products unusable.\n");
}

static int
chk_parse_url(struct chk_opts *o, const char *url)
{
	char hp[300];
	const char *p;
	size_t n;

	if (strncmp(url, "http://", 7) != 0)
		return -1;
	p = url + 7;
	n = strcspn(p, "/");
	if (n == 0 || n >= sizeof(hp))
		return -1;
	if (p[n] != '\0' && strcmp(p + n, "/") != 0)
		return -1; /* a path prefix is not supported */
	memcpy(hp, p, n);
	hp[n] = '\0';
	if (strchr(hp, ':') == NULL || hp[n - 1] == ']')
		return -1; /* the port is required */
	if (hs_parse_hostport(hp, o->host, sizeof(o->host), &o->port) != 0 ||
	    o->port == 0)
		return -1;
	snprintf(o->url, sizeof(o->url), "%s", url);
	return 0;
}

static int
chk_parse_list(struct chk_opts *o, const char *list)
{
	char *copy = hs_xstrdup(list), *save = NULL, *tok;
	int rc = 0;

	o->nids = 0;
	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		int64_t id;

		if (o->nids == CHK_MAX_PRODUCTS ||
		    hs_parse_i64(tok, 1, INT64_MAX / 2, &id) != 0) {
			rc = -1;
			break;
		}
		o->ids[o->nids++] = id;
	}
	if (o->nids == 0)
		rc = -1;
	free(copy);
	return rc;
}

static int
chk_set_url(void *opts, const char *arg)
{
	return chk_parse_url(opts, arg);
}

static int
chk_set_products(void *opts, const char *arg)
{
	struct chk_opts *o = opts;

	o->have_list = 1;
	return chk_parse_list(o, arg);
}

#define O(f) offsetof(struct chk_opts, f)
static const struct hs_opt chk_opt_defs[] = {
	{ "url", HS_OPT_FUNC, 0, 0, 0, 0, 0, chk_set_url,
	  "--url must be http://HOST:PORT" },
	{ "products", HS_OPT_FUNC, 0, 0, 0, 0, 0, chk_set_products,
	  "--products must be a list of 1..1000 positive ids, e.g. 1,2,3" },
	{ "hot", HS_OPT_INT, O(hot), 1, CHK_MAX_PRODUCTS, 0, 0, NULL,
	  "--hot must be 1..1000" },
	{ "readers", HS_OPT_INT, O(readers), 0, CHK_MAX_THREADS, 0, 0, NULL,
	  "--readers must be 0..512" },
	{ "writers", HS_OPT_INT, O(writers), 0, CHK_MAX_THREADS, 0, 0, NULL,
	  "--writers must be 0..512" },
	{ "duration", HS_OPT_DOUBLE, O(duration_s), 0, 0, 0.1, 86400, NULL,
	  "--duration must be 0.1..86400 seconds" },
	{ "write-interval-ms", HS_OPT_INT, O(write_interval_ms), 0, 60000, 0, 0,
	  NULL, "--write-interval-ms must be 0..60000" },
	{ "read-interval-ms", HS_OPT_INT, O(read_interval_ms), 0, 60000, 0, 0,
	  NULL, "--read-interval-ms must be 0..60000" },
	{ "db", HS_OPT_STR, O(db_path), 0, 0, 0, 0, NULL, NULL },
	{ "settle-ms", HS_OPT_INT, O(settle_ms), 0, 600000, 0, 0, NULL,
	  "--settle-ms must be 0..600000" },
	{ "timeout-ms", HS_OPT_INT, O(timeout_ms), 10, 600000, 0, 0, NULL,
	  "--timeout-ms must be 10..600000" },
	{ "json", HS_OPT_FLAG, O(json), 0, 0, 0, 0, NULL, NULL },
	{ "verbose", HS_OPT_FLAG, O(verbose), 0, 0, 0, 0, NULL, NULL },
	{ "progress-ms", HS_OPT_INT, O(progress_ms), 100, 60000, 0, 0, NULL,
	  "--progress-ms must be 100..60000" },
};
#undef O

/* Returns 0 to run, 1 to exit 0 (--help), -1 on a usage error. */
static int
chk_parse_args(struct chk_opts *o, int argc, char **argv)
{
	int rc;

	memset(o, 0, sizeof(*o));
	o->hot = 4;
	o->readers = 8;
	o->writers = 2;
	o->duration_s = 5;
	o->settle_ms = 1000;
	o->timeout_ms = 5000;
	if (chk_parse_url(o, "http://127.0.0.1:8080") != 0)
		return -1;
	rc = hs_opt_parse("hs-checker", chk_opt_defs,
			  sizeof(chk_opt_defs) / sizeof(chk_opt_defs[0]), argc,
			  argv, o, chk_usage);
	if (rc != 0)
		return rc;
	if (optind < argc) {
		fprintf(stderr, "hs-checker: unexpected argument '%s'\n",
			argv[optind]);
		return -1;
	}
	if (o->readers + o->writers == 0) {
		fprintf(stderr, "hs-checker: need at least one reader or "
				"writer\n");
		return -1;
	}
	if (!o->have_list) {
		o->nids = o->hot;
		for (int i = 0; i < o->hot; i++)
			o->ids[i] = i + 1;
	}
	return 0;
}

static int
chk_stopped(struct chk_run *r)
{
	return __atomic_load_n(&r->stop, __ATOMIC_RELAXED);
}

static void
chk_note_stale(struct chk_run *r, struct chk_hot *h, int64_t acked,
	       uint64_t acked_ns, uint64_t started_ns, int64_t got)
{
	double ms = (double)(started_ns - acked_ns) / 1e6;

	pthread_mutex_lock(&h->mu);
	h->stale++;
	pthread_mutex_unlock(&h->mu);
	pthread_mutex_lock(&r->mu);
	r->stale++;
	if (acked - got > r->max_behind)
		r->max_behind = acked - got;
	if (ms > r->max_stale_ms)
		r->max_stale_ms = ms;
	if (r->nexamples < CHK_EXAMPLES)
		r->examples[r->nexamples++] =
			(struct chk_example){ h->id, acked, got, ms };
	pthread_mutex_unlock(&r->mu);
	if (r->o->verbose)
		fprintf(stderr,
			"stale read: product %" PRId64 " version %" PRId64
			" returned, read started %.3f ms after version %" PRId64
			" was acknowledged\n",
			h->id, got, ms, acked);
}

/* After a connection error: a refused connect fails at once, so pause
 * rather than spin while a server restarts. */
static void
chk_backoff(void)
{
	struct timespec ts = { 0, 10 * 1000000L };

	nanosleep(&ts, NULL);
}

static void
chk_pause_ms(struct chk_run *r, int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	if (ms > 0 && !chk_stopped(r))
		nanosleep(&ts, NULL);
}

static void *
chk_reader(void *arg)
{
	struct chk_thread *t = arg;
	struct chk_run *r = t->run;
	const struct chk_opts *o = r->o;
	struct chk_conn *c = chk_conn_new(o->host, o->port, o->timeout_ms);
	struct hs_buf body = HS_BUF_INIT;
	uint64_t rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(t->index + 1);
	uint64_t reads = 0, errors = 0, bad = 0;
	char path[64];

	if (c == NULL) {
		log_error("reader %d: cannot create a connection", t->index);
		goto done;
	}
	while (!chk_stopped(r)) {
		struct chk_hot *h =
			&r->hot[hs_rng_next(&rng) % (uint64_t)o->nids];
		struct chk_product p;
		int64_t acked;
		uint64_t acked_ns, t0;
		int status;

		snprintf(path, sizeof(path), "/products/%" PRId64, h->id);
		/* The snapshot comes before the request leaves: any version
		 * seen here was acknowledged before this read started. */
		pthread_mutex_lock(&h->mu);
		acked = h->acked;
		acked_ns = h->acked_ns;
		pthread_mutex_unlock(&h->mu);
		t0 = hs_now_ns();
		status = chk_conn_request(c, "GET", path, NULL, &body);
		hs_hist_record(&r->read_lat, (hs_now_ns() - t0) / 1000);
		if (status < 0) {
			errors++;
			__atomic_fetch_add(&r->live_read_errors, 1,
					   __ATOMIC_RELAXED);
			chk_backoff();
			continue;
		}
		if (status != 200 ||
		    chk_parse_product(body.data, body.len, &p) != 0) {
			bad++;
			__atomic_fetch_add(&r->live_read_errors, 1,
					   __ATOMIC_RELAXED);
			if (o->verbose)
				fprintf(stderr, "read: GET %s -> %d\n", path,
					status);
			continue;
		}
		reads++;
		__atomic_fetch_add(&r->live_reads, 1, __ATOMIC_RELAXED);
		if (p.version < acked)
			chk_note_stale(r, h, acked, acked_ns, t0, p.version);
		chk_pause_ms(r, o->read_interval_ms);
	}
done:
	pthread_mutex_lock(&r->mu);
	r->reads += reads;
	r->read_errors += errors;
	r->read_bad += bad;
	pthread_mutex_unlock(&r->mu);
	hs_buf_free(&body);
	chk_conn_free(c);
	return NULL;
}

static void *
chk_writer(void *arg)
{
	struct chk_thread *t = arg;
	struct chk_run *r = t->run;
	const struct chk_opts *o = r->o;
	struct chk_conn *c = chk_conn_new(o->host, o->port, o->timeout_ms);
	struct hs_buf body = HS_BUF_INIT;
	uint64_t writes = 0, errors = 0;
	/* Writers start at different products and walk them in turn. */
	uint64_t k = (uint64_t)t->index;
	char path[64], json[128];

	if (c == NULL) {
		log_error("writer %d: cannot create a connection", t->index);
		goto done;
	}
	while (!chk_stopped(r)) {
		struct chk_hot *h = &r->hot[k++ % (uint64_t)o->nids];
		uint64_t v =
			__atomic_fetch_add(&r->next_value, 1, __ATOMIC_RELAXED);
		struct chk_product p;
		uint64_t t0;
		int status;

		snprintf(path, sizeof(path), "/products/%" PRId64, h->id);
		snprintf(json, sizeof(json),
			 "{\"price_cents\":%" PRIu64 ",\"stock\":%" PRIu64 "}",
			 v, v % 100000);
		t0 = hs_now_ns();
		status = chk_conn_request(c, "PUT", path, json, &body);
		hs_hist_record(&r->write_lat, (hs_now_ns() - t0) / 1000);
		if (status != 200 ||
		    chk_parse_product(body.data, body.len, &p) != 0) {
			errors++;
			__atomic_fetch_add(&r->live_write_errors, 1,
					   __ATOMIC_RELAXED);
			if (o->verbose)
				fprintf(stderr, "write: PUT %s -> %d\n", path,
					status);
			if (status < 0)
				chk_backoff();
			continue;
		}
		writes++;
		__atomic_fetch_add(&r->live_writes, 1, __ATOMIC_RELAXED);
		/* Publish the acknowledgement: from now on a read of this
		 * product must see at least this version. */
		pthread_mutex_lock(&h->mu);
		if (p.version > h->acked) {
			h->acked = p.version;
			h->acked_ns = hs_now_ns();
		}
		pthread_mutex_unlock(&h->mu);
		chk_pause_ms(r, o->write_interval_ms);
	}
done:
	pthread_mutex_lock(&r->mu);
	r->writes += writes;
	r->write_errors += errors;
	pthread_mutex_unlock(&r->mu);
	hs_buf_free(&body);
	chk_conn_free(c);
	return NULL;
}

/* Checks that every product answers 200 with a version before the load. */
static int
chk_preflight(const struct chk_opts *o)
{
	struct chk_conn *c = chk_conn_new(o->host, o->port, o->timeout_ms);
	struct hs_buf body = HS_BUF_INIT;
	char path[64];
	int rc = -1;

	if (c == NULL) {
		fprintf(stderr,
			"hs-checker: cannot create a connection to "
			"%s\n",
			o->url);
		goto done;
	}
	for (int i = 0; i < o->nids; i++) {
		struct chk_product p;
		int status;

		snprintf(path, sizeof(path), "/products/%" PRId64, o->ids[i]);
		status = chk_conn_request(c, "GET", path, NULL, &body);
		if (status < 0) {
			fprintf(stderr,
				"hs-checker: %s: no answer "
				"(connection failed or timed out)\n",
				o->url);
			goto done;
		}
		if (status != 200 ||
		    chk_parse_product(body.data, body.len, &p) != 0) {
			fprintf(stderr,
				"hs-checker: GET %s%s answered %d "
				"without a product version: choose existing "
				"products (--products / --hot)\n",
				o->url, path, status);
			goto done;
		}
	}
	rc = 0;
done:
	hs_buf_free(&body);
	chk_conn_free(c);
	return rc;
}

struct chk_final {
	int checked, mismatches, behind, db_differs, missing;
};

/* After the load: every product once more, against the last
 * acknowledgement and, with --db, against the database row. */
static int
chk_final_check(struct chk_run *r, struct chk_final *f)
{
	const struct chk_opts *o = r->o;
	struct chk_conn *c = chk_conn_new(o->host, o->port, o->timeout_ms);
	struct hs_buf body = HS_BUF_INIT;
	struct chk_product *rows = hs_xcalloc((size_t)o->nids, sizeof(*rows));
	int *found = hs_xcalloc((size_t)o->nids, sizeof(*found));
	char path[64], err[512];
	int rc = -1;

	memset(f, 0, sizeof(*f));
	if (c == NULL)
		goto done;
	if (o->db_path != NULL && chk_db_read(o->db_path, o->ids, o->nids, rows,
					      found, err, sizeof(err)) != 0) {
		fprintf(stderr, "hs-checker: %s\n", err);
		goto done;
	}
	for (int i = 0; i < o->nids; i++) {
		struct chk_hot *h = &r->hot[i];
		struct chk_product p;
		int status, bad = 0;

		snprintf(path, sizeof(path), "/products/%" PRId64, h->id);
		status = chk_conn_request(c, "GET", path, NULL, &body);
		f->checked++;
		if (status != 200 ||
		    chk_parse_product(body.data, body.len, &p) != 0) {
			fprintf(stderr,
				"final: product %" PRId64 ": GET "
				"answered %d\n",
				h->id, status);
			f->missing++;
			f->mismatches++;
			continue;
		}
		if (p.version < h->acked) {
			fprintf(stderr,
				"final: product %" PRId64 " served "
				"version %" PRId64 " < acknowledged %" PRId64
				"\n",
				h->id, p.version, h->acked);
			f->behind++;
			bad = 1;
		}
		if (o->db_path != NULL) {
			const struct chk_product *d = &rows[i];

			if (!found[i]) {
				fprintf(stderr,
					"final: product %" PRId64
					" is served but not in %s\n",
					h->id, o->db_path);
				f->db_differs++;
				bad = 1;
			} else if (d->version != p.version ||
				   d->price_cents != p.price_cents ||
				   d->stock != p.stock ||
				   strcmp(d->name, p.name) != 0) {
				fprintf(stderr,
					"final: product %" PRId64
					" served version %" PRId64
					" price %" PRId64 " stock %" PRId64
					", database "
					"version %" PRId64 " price %" PRId64
					" stock %" PRId64 "%s\n",
					h->id, p.version, p.price_cents,
					p.stock, d->version, d->price_cents,
					d->stock,
					strcmp(d->name, p.name)
						? " (names differ)"
						: "");
				f->db_differs++;
				bad = 1;
			}
		}
		f->mismatches += bad;
	}
	rc = 0;
done:
	free(found);
	free(rows);
	hs_buf_free(&body);
	chk_conn_free(c);
	return rc;
}

/* The histogram of what cur recorded since prev (both snapshots). */
static void
chk_hist_since(struct hs_hist *out, const struct hs_hist *cur,
	       const struct hs_hist *prev)
{
	memset(out, 0, sizeof(*out));
	for (int i = 0; i < HS_HIST_BUCKETS; i++) {
		out->b[i] = cur->b[i] - prev->b[i];
		out->count += out->b[i];
	}
	out->max_us = cur->max_us; /* a cap for the quantiles, not exact */
}

/*
 * One --progress-ms line: running totals, and the interval's own counts
 * and latency percentiles (the difference of two snapshots of the
 * lock-free histograms, so the threads never wait for it).
 */
static void
chk_progress_line(struct chk_run *r, struct chk_progress *pr, uint64_t t0)
{
	struct hs_hist *cur = hs_xcalloc(2, sizeof(*cur));
	struct hs_hist *win = hs_xcalloc(1, sizeof(*win));
	struct timespec wall;
	uint64_t reads = __atomic_load_n(&r->live_reads, __ATOMIC_RELAXED);
	uint64_t writes = __atomic_load_n(&r->live_writes, __ATOMIC_RELAXED);
	uint64_t errors, stale, rp50, rp99, wp50, wp99;

	errors = __atomic_load_n(&r->live_read_errors, __ATOMIC_RELAXED) +
		 __atomic_load_n(&r->live_write_errors, __ATOMIC_RELAXED);
	pthread_mutex_lock(&r->mu);
	stale = r->stale;
	pthread_mutex_unlock(&r->mu);
	hs_hist_merge(&cur[0], &r->read_lat);
	hs_hist_merge(&cur[1], &r->write_lat);
	chk_hist_since(win, &cur[0], &pr->read_lat);
	rp50 = hs_hist_quantile(win, 0.5);
	rp99 = hs_hist_quantile(win, 0.99);
	chk_hist_since(win, &cur[1], &pr->write_lat);
	wp50 = hs_hist_quantile(win, 0.5);
	wp99 = hs_hist_quantile(win, 0.99);
	clock_gettime(CLOCK_REALTIME, &wall);
	printf("{\"progress\":true,\"t\":%.3f,\"elapsed_s\":%.3f,"
	       "\"reads\":%" PRIu64 ",\"writes\":%" PRIu64
	       ",\"stale_reads\":%" PRIu64 ",\"errors\":%" PRIu64
	       ",\"interval_reads\":%" PRIu64 ",\"interval_writes\":%" PRIu64
	       ",\"interval_read_p50_us\":%" PRIu64
	       ",\"interval_read_p99_us\":%" PRIu64
	       ",\"interval_write_p50_us\":%" PRIu64
	       ",\"interval_write_p99_us\":%" PRIu64 "}\n",
	       (double)wall.tv_sec + wall.tv_nsec / 1e9,
	       (double)(hs_now_ns() - t0) / 1e9, reads, writes, stale, errors,
	       reads - pr->reads, writes - pr->writes, rp50, rp99, wp50, wp99);
	fflush(stdout);
	pr->reads = reads;
	pr->writes = writes;
	pr->read_lat = cur[0];
	pr->write_lat = cur[1];
	free(win);
	free(cur);
}

static void
chk_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && !chk_interrupted)
		;
}

static void
chk_report(const struct chk_run *r, const struct chk_final *f, double secs,
	   int verdict)
{
	const struct chk_opts *o = r->o;
	FILE *out = o->json ? stderr : stdout;
	static const char *what[] = { "OK: no stale reads",
				      "STALE: stale reads or final mismatches",
				      "INCONCLUSIVE: nothing was checked" };

	fprintf(out,
		"hs-checker: %s, %d product(s), %d reader(s), %d "
		"writer(s), %.1f s\n",
		o->url, o->nids, o->readers, o->writers, secs);
	fprintf(out,
		"reads %" PRIu64 " (%.0f/s; connection errors %" PRIu64
		", bad answers %" PRIu64 "; p50 %" PRIu64 " us, p99 %" PRIu64
		" us)\n",
		r->reads, secs > 0 ? r->reads / secs : 0, r->read_errors,
		r->read_bad, hs_hist_quantile(&r->read_lat, 0.5),
		hs_hist_quantile(&r->read_lat, 0.99));
	fprintf(out,
		"writes %" PRIu64 " (%.0f/s; errors %" PRIu64 "; p50 %" PRIu64
		" us, p99 %" PRIu64 " us)\n",
		r->writes, secs > 0 ? r->writes / secs : 0, r->write_errors,
		hs_hist_quantile(&r->write_lat, 0.5),
		hs_hist_quantile(&r->write_lat, 0.99));
	fprintf(out,
		"stale reads %" PRIu64 " (max staleness %" PRId64
		" versions behind, up to %.3f ms after the acknowledgement)\n",
		r->stale, r->max_behind, r->max_stale_ms);
	if (r->stale > 0) {
		fprintf(out, "  stale reads by product:");
		for (int i = 0; i < o->nids; i++)
			if (r->hot[i].stale > 0)
				fprintf(out, " %" PRId64 ": %" PRIu64,
					r->hot[i].id, r->hot[i].stale);
		fprintf(out, "\n");
	}
	for (int i = 0; i < r->nexamples; i++)
		fprintf(out,
			"  e.g. product %" PRId64 ": got version %" PRId64
			", version %" PRId64 " acknowledged %.3f ms before the "
			"read started\n",
			r->examples[i].id, r->examples[i].got,
			r->examples[i].acked, r->examples[i].ms_after_ack);
	fprintf(out,
		"final mismatches %d of %d product(s) (%d behind the last "
		"acknowledged version%s%s%s)\n",
		f->mismatches, f->checked, f->behind, o->db_path ? ", " : "",
		o->db_path ? "checked against " : "",
		o->db_path ? o->db_path : "; no --db given");
	fprintf(out, "result: %s\n", what[verdict]);
	if (o->json) {
		struct hs_buf b = HS_BUF_INIT;

		hs_buf_printf(&b, "{\"url\":");
		hs_buf_json_str(&b, o->url);
		hs_buf_printf(&b,
			      ",\"products\":%d,\"readers\":%d,"
			      "\"writers\":%d,\"duration_s\":%.3f,"
			      "\"reads\":%" PRIu64 ",\"read_errors\":%" PRIu64
			      ",\"read_bad\":%" PRIu64 ",\"writes\":%" PRIu64
			      ",\"write_errors\":%" PRIu64
			      ",\"stale_reads\":%" PRIu64
			      ",\"max_staleness\":%" PRId64
			      ",\"max_stale_ms\":%.3f,\"final_checked\":%d,"
			      "\"final_mismatches\":%d,\"final_behind\":%d,"
			      "\"final_db_differs\":%d,\"db_checked\":%s,"
			      "\"read_p50_us\":%" PRIu64
			      ",\"read_p99_us\":%" PRIu64 ",\"result\":\"%s\"}",
			      o->nids, o->readers, o->writers, secs, r->reads,
			      r->read_errors, r->read_bad, r->writes,
			      r->write_errors, r->stale, r->max_behind,
			      r->max_stale_ms, f->checked, f->mismatches,
			      f->behind, f->db_differs,
			      o->db_path ? "true" : "false",
			      hs_hist_quantile(&r->read_lat, 0.5),
			      hs_hist_quantile(&r->read_lat, 0.99),
			      verdict == 0   ? "ok"
			      : verdict == 1 ? "stale"
					     : "inconclusive");
		printf("%s\n", b.data);
		hs_buf_free(&b);
	}
	fflush(stdout);
}

static struct chk_run *
chk_run_new(const struct chk_opts *o)
{
	struct chk_run *r = hs_xcalloc(1, sizeof(*r));

	r->o = o;
	pthread_mutex_init(&r->mu, NULL);
	r->next_value = (uint64_t)time(NULL) % 1000000 * 1000;
	r->hot = hs_xcalloc((size_t)o->nids, sizeof(*r->hot));
	for (int i = 0; i < o->nids; i++) {
		pthread_mutex_init(&r->hot[i].mu, NULL);
		r->hot[i].id = o->ids[i];
	}
	return r;
}

static void
chk_run_free(struct chk_run *r)
{
	if (r == NULL)
		return;
	for (int i = 0; i < r->o->nids; i++)
		pthread_mutex_destroy(&r->hot[i].mu);
	pthread_mutex_destroy(&r->mu);
	free(r->hot);
	free(r);
}

/*
 * The load: the readers and writers for --duration (or until a signal),
 * with the --progress-ms lines.  Its length goes to *secs.  Returns 0, or
 * -1 when not every thread could start.
 */
static int
chk_load(struct chk_run *r, double *secs)
{
	const struct chk_opts *o = r->o;
	struct chk_thread *th;
	struct chk_progress *pr = NULL;
	uint64_t t0, deadline;
	int nth = o->readers + o->writers, started = 0;

	th = hs_xcalloc((size_t)nth, sizeof(*th));
	t0 = hs_now_ns();
	for (int i = 0; i < nth; i++) {
		int w = i < o->writers;

		th[i].run = r;
		th[i].index = w ? i : i - o->writers;
		if (pthread_create(&th[i].tid, NULL,
				   w ? chk_writer : chk_reader, &th[i]) != 0) {
			log_warn("pthread_create");
			break;
		}
		started++;
	}
	deadline = t0 + (uint64_t)(o->duration_s * 1e9);
	if (o->progress_ms > 0) {
		pr = hs_xcalloc(1, sizeof(*pr));
		pr->next_ns = t0 + (uint64_t)o->progress_ms * 1000000;
	}
	while (started == nth && !chk_interrupted && hs_now_ns() < deadline) {
		uint64_t left_ms = (deadline - hs_now_ns()) / 1000000;

		chk_sleep_ms(left_ms > 50 ? 50 : (int)left_ms + 1);
		if (pr != NULL && hs_now_ns() >= pr->next_ns &&
		    hs_now_ns() < deadline) {
			chk_progress_line(r, pr, t0);
			pr->next_ns += (uint64_t)o->progress_ms * 1000000;
		}
	}
	__atomic_store_n(&r->stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < started; i++)
		pthread_join(th[i].tid, NULL);
	if (pr != NULL)
		chk_progress_line(r, pr, t0); /* the load's last interval */
	*secs = (double)(hs_now_ns() - t0) / 1e9;
	free(pr);
	free(th);
	return started == nth ? 0 : -1;
}

int
main(int argc, char **argv)
{
	struct chk_opts *o = hs_xcalloc(1, sizeof(*o));
	struct chk_run *r = NULL;
	struct chk_final fin;
	struct sigaction sa;
	double secs;
	int rc = 2, verdict;

	hs_log_init("hs-checker", HS_LOG_WARN);
	switch (chk_parse_args(o, argc, argv)) {
	case 1:
		rc = 0;
		goto out;
	case -1:
		goto out;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = chk_on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (chk_preflight(o) != 0)
		goto out;
	r = chk_run_new(o);
	if (chk_load(r, &secs) != 0)
		goto out;
	if (o->settle_ms > 0 && !chk_interrupted)
		chk_sleep_ms(o->settle_ms);
	if (chk_final_check(r, &fin) != 0)
		goto out;
	/* A run that read nothing (or, with writers, wrote nothing) proved
	 * nothing: say so rather than pass. */
	if ((o->readers > 0 && r->reads == 0) ||
	    (o->writers > 0 && r->writes == 0))
		verdict = 2;
	else if (r->stale > 0 || fin.mismatches > 0)
		verdict = 1;
	else
		verdict = 0;
	chk_report(r, &fin, secs, verdict);
	rc = verdict == 0 ? 0 : 1;
out:
	chk_run_free(r);
	free(o);
	return rc;
}
