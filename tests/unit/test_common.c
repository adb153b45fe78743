/*
 * Unit tests for common/: number and address parsing, the buffer, the
 * histogram's bucket arithmetic and quantiles, the log rate limit, the
 * metrics writer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "hs_buf.h"
#include "hs_hist.h"
#include "hs_log.h"
#include "hs_metrics.h"
#include "hs_opt.h"
#include "hs_util.h"

static void
test_parse_i64(void **state)
{
	int64_t v;

	assert_int_equal(hs_parse_i64("42", 0, 100, &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(hs_parse_i64("-5", -10, 10, &v), 0);
	assert_int_equal(v, -5);
	assert_int_equal(hs_parse_i64("", 0, 100, &v), -1);
	assert_int_equal(hs_parse_i64("12x", 0, 100, &v), -1);
	assert_int_equal(hs_parse_i64(" 1", 0, 100, &v), -1);
	assert_int_equal(hs_parse_i64("+1", 0, 100, &v), -1);
	assert_int_equal(hs_parse_i64("101", 0, 100, &v), -1);
	assert_int_equal(hs_parse_i64("99999999999999999999999", 0, INT64_MAX,
				      &v),
			 -1);
}

static void
test_parse_double(void **state)
{
	double d;

	assert_int_equal(hs_parse_double("0.5", 0, 10, &d), 0);
	assert_true(d == 0.5);
	assert_int_equal(hs_parse_double("nan", 0, 10, &d), -1);
	assert_int_equal(hs_parse_double("inf", 0, 1e300, &d), -1);
	assert_int_equal(hs_parse_double("11", 0, 10, &d), -1);
}

static void
test_parse_hostport(void **state)
{
	char host[64];
	int port;

	assert_int_equal(hs_parse_hostport("127.0.0.1:8081", host, sizeof(host),
					   &port),
			 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 8081);
	assert_int_equal(hs_parse_hostport(":0", host, sizeof(host), &port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 0);
	assert_int_equal(hs_parse_hostport("[::1]:80", host, sizeof(host),
					   &port),
			 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 80);
	assert_int_equal(hs_parse_hostport("localhost", host, sizeof(host),
					   &port),
			 -1);
	assert_int_equal(hs_parse_hostport("a:b", host, sizeof(host), &port),
			 -1);
	assert_int_equal(hs_parse_hostport("a:70000", host, sizeof(host),
					   &port),
			 -1);
	assert_int_equal(hs_parse_hostport("::1:80", host, sizeof(host), &port),
			 -1);
}

static void
test_buf(void **state)
{
	struct hs_buf b = HS_BUF_INIT;
	char big[1000];
	size_t len;
	char *p;

	hs_buf_printf(&b, "%d-%s", 7, "x");
	assert_string_equal(b.data, "7-x");
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	hs_buf_printf(&b, "%s", big);
	assert_int_equal(b.len, 3 + 999);
	hs_buf_reset(&b);
	hs_buf_json_str(&b, "a\"b\\c\n\x01");
	assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
	p = hs_buf_steal(&b, &len);
	assert_int_equal(len, strlen(p));
	assert_null(b.data);
	free(p);
	hs_buf_free(&b);
}

static void
test_hist_buckets(void **state)
{
	/* Every value maps to a bucket whose bounds contain it, monotonically. */
	int prev = 0;

	for (uint64_t v = 0; v < 5000000; v += (v < 1000 ? 1 : v / 97)) {
		int i = hs_hist_index(v);

		assert_true(i >= prev);
		assert_true(v <= hs_hist_bucket_max(i));
		if (i > 0)
			assert_true(v > hs_hist_bucket_max(i - 1));
		prev = i;
	}
}

static void
test_hist_quantiles(void **state)
{
	struct hs_hist *h = calloc(1, sizeof(*h));
	struct hs_buf b = HS_BUF_INIT;

	assert_int_equal(hs_hist_quantile(h, 0.5), 0);
	for (uint64_t v = 1; v <= 10000; v++)
		hs_hist_record(h, v);
	assert_int_equal(hs_hist_count(h), 10000);
	/* Within the ~3% bucket resolution. */
	assert_in_range(hs_hist_quantile(h, 0.5), 4900, 5200);
	assert_in_range(hs_hist_quantile(h, 0.99), 9800, 10000);
	assert_int_equal(hs_hist_quantile(h, 1.0), 10000);
	hs_hist_prom(&b, h, "x_seconds", "");
	assert_non_null(
		strstr(b.data, "x_seconds_bucket{le=\"+Inf\"} 10000\n"));
	/* le bounds fall inside buckets: the count is exact to ~3%. */
	const char *le = strstr(b.data, "x_seconds_bucket{le=\"0.001\"} ");
	assert_non_null(le);
	assert_in_range(strtoull(strchr(le, '}') + 2, NULL, 10), 960, 1000);
	assert_non_null(strstr(b.data, "x_seconds_count{} 10000\n"));
	hs_buf_free(&b);
	free(h);
}

/* The JSON form lists the non-empty buckets, for per-second differences. */
static void
test_hist_json_buckets(void **state)
{
	struct hs_hist *h = calloc(1, sizeof(*h));
	struct hs_buf b = HS_BUF_INIT;

	hs_hist_json(&b, h);
	assert_non_null(strstr(b.data, "\"count\":0,"));
	assert_non_null(strstr(b.data, ",\"buckets\":\"\"}"));
	hs_buf_free(&b);
	hs_hist_record(h, 5);
	hs_hist_record(h, 5);
	hs_hist_record(h, 1000);
	b = (struct hs_buf)HS_BUF_INIT;
	hs_hist_json(&b, h);
	/* 5 has its own bucket; 1000 falls in the one from 992 to 1007. */
	assert_non_null(strstr(b.data, ",\"buckets\":\"5:2 1007:1\"}"));
	assert_non_null(strstr(b.data, "\"max_us\":1000,"));
	hs_buf_free(&b);
	free(h);
}

/* At most HS_LOG_RATE lines a second per site, then one count of the rest. */
static void
test_log_rate(void **state)
{
	struct hs_log_rate rl = { 0 };
	long sup = -1;
	int passed = 0;

	for (int i = 0; i < 1000; i++)
		passed += hs_log_rate_pass(&rl, 100, &sup);
	assert_int_equal(passed, HS_LOG_RATE);
	assert_int_equal(sup, 0);
	/* The next second: the first line carries the count of dropped ones. */
	assert_true(hs_log_rate_pass(&rl, 101, &sup));
	assert_int_equal(sup, 1000 - HS_LOG_RATE);
	assert_true(hs_log_rate_pass(&rl, 101, &sup));
	assert_int_equal(sup, 0);
	/* A quiet site is never limited. */
	assert_true(hs_log_rate_pass(&rl, 200, &sup));
	assert_int_equal(sup, 0);
}

/* Rows to JSON members and Prometheus text: units, JSON-only and
   Prometheus-only rows, one HELP/TYPE pair per family of labelled rows. */
static void
test_metrics_writer(void **state)
{
	static const struct hs_metric rows[] = {
		{ "hits", "hits_total", "Reads served", HS_COUNTER,
		  HS_UNIT_COUNT, NULL, 7 },
		{ "time_ms", "time_seconds_total", "Time spent", HS_COUNTER,
		  HS_UNIT_NS_MS, NULL, 1500000 },
		{ "uptime_s", "uptime_seconds", "Since start", HS_GAUGE,
		  HS_UNIT_NS_S, NULL, 2500000000u },
		{ "up", NULL, NULL, HS_GAUGE, HS_UNIT_BOOL, NULL, 1 },
		{ NULL, "up", "Backend up", HS_GAUGE, HS_UNIT_BOOL,
		  "backend=\"a\"", 1 },
		{ NULL, "up", "Backend up", HS_GAUGE, HS_UNIT_BOOL,
		  "backend=\"b\"", 0 },
	};
	struct hs_buf b = HS_BUF_INIT;

	(void)state;
	hs_buf_puts(&b, "{");
	assert_int_equal(hs_metrics_json(&b, rows, 4, 1), 1);
	hs_buf_puts(&b, "}");
	assert_string_equal(b.data, "{\"hits\":7,\"time_ms\":1.500,"
				    "\"uptime_s\":2.500,\"up\":true}");
	hs_buf_reset(&b);
	/* Not first: a comma before the first member; nothing: returns 0. */
	assert_int_equal(hs_metrics_json(&b, rows, 1, 0), 1);
	assert_string_equal(b.data, ",\"hits\":7");
	hs_buf_reset(&b);
	assert_int_equal(hs_metrics_json(&b, rows + 4, 2, 1), 0);
	assert_int_equal(b.len, 0);
	hs_metrics_prom(&b, "hs_x_", rows, 6);
	assert_string_equal(b.data,
			    "# HELP hs_x_hits_total Reads served\n"
			    "# TYPE hs_x_hits_total counter\n"
			    "hs_x_hits_total 7\n"
			    "# HELP hs_x_time_seconds_total Time spent\n"
			    "# TYPE hs_x_time_seconds_total counter\n"
			    "hs_x_time_seconds_total 0.001500\n"
			    "# HELP hs_x_uptime_seconds Since start\n"
			    "# TYPE hs_x_uptime_seconds gauge\n"
			    "hs_x_uptime_seconds 2.500\n"
			    "# HELP hs_x_up Backend up\n"
			    "# TYPE hs_x_up gauge\n"
			    "hs_x_up{backend=\"a\"} 1\n"
			    "hs_x_up{backend=\"b\"} 0\n");
	hs_buf_reset(&b);
	hs_metrics_prom_head(&b, "hs_", "lat_seconds", "Latency", "histogram");
	assert_string_equal(b.data, "# HELP hs_lat_seconds Latency\n"
				    "# TYPE hs_lat_seconds histogram\n");
	hs_buf_free(&b);
}

/* ---- table-driven options (hs_opt.h) ---- */

struct topts {
	int flag, n;
	int64_t big;
	double d;
	const char *str;
	int funcs;
};

static int usage_calls;

static void
topt_usage(FILE *f)
{
	(void)f;
	usage_calls++;
}

static int
topt_even(void *opts, const char *arg)
{
	struct topts *o = opts;

	o->funcs++;
	return strcmp(arg, "even") == 0 ? 0 : -1;
}

#define TO(f) offsetof(struct topts, f)
static const struct hs_opt topt_defs[] = {
	{ "flag", HS_OPT_FLAG, TO(flag), 0, 0, 0, 0, NULL, NULL },
	{ "n", HS_OPT_INT, TO(n), -5, 5, 0, 0, NULL, "--n must be -5..5" },
	{ "big", HS_OPT_I64, TO(big), 1, INT64_MAX, 0, 0, NULL, "--big" },
	{ "d", HS_OPT_DOUBLE, TO(d), 0, 0, 0.5, 1.5, NULL, "--d" },
	{ "str", HS_OPT_STR, TO(str), 0, 0, 0, 0, NULL, NULL },
	{ "even", HS_OPT_FUNC, 0, 0, 0, 0, 0, topt_even, "--even" },
};
#undef TO

static int
topt_parse(struct topts *o, int argc, char **argv)
{
	memset(o, 0, sizeof(*o));
	return hs_opt_parse("test", topt_defs,
			    sizeof(topt_defs) / sizeof(topt_defs[0]), argc,
			    argv, o, topt_usage);
}

static void
test_opt_parse(void **state)
{
	char *good[] = { "p",
			 "--flag",
			 "--n",
			 "-5",
			 "op1",
			 "--big",
			 "9223372036854775807",
			 "--d=1.5",
			 "--str",
			 "",
			 "--even",
			 "even",
			 "op2",
			 NULL };
	char *bad_n[] = { "p", "--n", "6", NULL };
	char *bad_d[] = { "p", "--d", "0.4", NULL };
	char *bad_f[] = { "p", "--even", "odd", NULL };
	char *unknown[] = { "p", "--nope", NULL };
	char *short_h[] = { "p", "-h", NULL };
	char *no_val[] = { "p", "--n", NULL };
	char *flag_val[] = { "p", "--flag=1", NULL };
	char *help[] = { "p", "--str", "x", "--help", "--nope", NULL };
	struct topts o;

	(void)state;
	assert_int_equal(topt_parse(&o, 13, good), 0);
	assert_int_equal(o.flag, 1);
	assert_int_equal(o.n, -5);
	assert_true(o.big == INT64_MAX);
	assert_true(o.d == 1.5);
	assert_string_equal(o.str, "");
	assert_int_equal(o.funcs, 1);
	/* The operands are moved behind the options. */
	assert_int_equal(optind, 11);
	assert_string_equal(good[11], "op1");
	assert_string_equal(good[12], "op2");

	assert_int_equal(topt_parse(&o, 3, bad_n), -1);
	assert_int_equal(o.n, 0);
	assert_int_equal(topt_parse(&o, 3, bad_d), -1);
	assert_int_equal(topt_parse(&o, 3, bad_f), -1);
	assert_int_equal(o.funcs, 1);
	assert_int_equal(topt_parse(&o, 2, unknown), -1);
	assert_int_equal(topt_parse(&o, 2, short_h), -1);
	assert_int_equal(topt_parse(&o, 2, no_val), -1);
	assert_int_equal(topt_parse(&o, 2, flag_val), -1);
	assert_int_equal(usage_calls, 0);
	/* --help stops the scan at once: what follows is not looked at. */
	assert_int_equal(topt_parse(&o, 5, help), 1);
	assert_int_equal(usage_calls, 1);
	assert_string_equal(o.str, "x");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_i64),
		cmocka_unit_test(test_parse_double),
		cmocka_unit_test(test_parse_hostport),
		cmocka_unit_test(test_buf),
		cmocka_unit_test(test_hist_buckets),
		cmocka_unit_test(test_hist_quantiles),
		cmocka_unit_test(test_hist_json_buckets),
		cmocka_unit_test(test_log_rate),
		cmocka_unit_test(test_metrics_writer),
		cmocka_unit_test(test_opt_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
