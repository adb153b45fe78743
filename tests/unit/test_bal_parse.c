/*
 * Unit tests of the balancer's strict HTTP/1.1 parsers: a table of request
 * heads with the expected outcome, byte-at-a-time feeding (every prefix of
 * a good head is "incomplete", never an error), response heads and the
 * chunked framing walker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "parse.h"

static const struct bal_limits lim = { 256, 1024, 20 };

struct req_case {
	const char *name;
	const char *head;
	int want; /* > 0: complete; 0: incomplete; < 0: -status */
};

#define H "Host: a\r\n"
static const struct req_case req_cases[] = {
	{ "simple", "GET / HTTP/1.1\r\n" H "\r\n", 1 },
	{ "http10 no host", "GET / HTTP/1.0\r\n\r\n", 1 },
	{ "leading crlf", "\r\nGET / HTTP/1.1\r\n" H "\r\n", 1 },
	{ "options star", "OPTIONS * HTTP/1.1\r\n" H "\r\n", 1 },
	{ "incomplete", "GET / HTTP/1.1\r\n" H, 0 },
	{ "missing host", "GET / HTTP/1.1\r\n\r\n", -400 },
	{ "duplicate host", "GET / HTTP/1.1\r\n" H H "\r\n", -400 },
	{ "bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", -400 },
	{ "cl+te",
	  "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\n"
	  "Transfer-Encoding: chunked\r\n\r\n",
	  -400 },
	{ "dup cl",
	  "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\n"
	  "Content-Length: 5\r\n\r\n",
	  -400 },
	{ "cl list", "POST / HTTP/1.1\r\n" H "Content-Length: 5, 5\r\n\r\n",
	  -400 },
	{ "cl sign", "POST / HTTP/1.1\r\n" H "Content-Length: +5\r\n\r\n",
	  -400 },
	{ "cl hex", "POST / HTTP/1.1\r\n" H "Content-Length: 0x5\r\n\r\n",
	  -400 },
	{ "cl empty", "POST / HTTP/1.1\r\n" H "Content-Length:\r\n\r\n", -400 },
	{ "cl huge",
	  "POST / HTTP/1.1\r\n" H
	  "Content-Length: 99999999999999999999\r\n\r\n",
	  -400 },
	{ "te gzip",
	  "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip, chunked\r\n\r\n",
	  -400 },
	{ "te chunked-ish",
	  "POST / HTTP/1.1\r\n" H "Transfer-Encoding: xchunked\r\n\r\n", -400 },
	{ "te dup",
	  "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n"
	  "Transfer-Encoding: chunked\r\n\r\n",
	  -400 },
	{ "te in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
	  -400 },
	{ "te chunked case",
	  "POST / HTTP/1.1\r\n" H "Transfer-Encoding: Chunked\r\n\r\n", 1 },
	{ "bare lf end", "GET / HTTP/1.1\n" H "\r\n", -400 },
	{ "bare lf header", "GET / HTTP/1.1\r\nHost: a\n\r\n", -400 },
	{ "bare lf blank", "GET / HTTP/1.1\r\n" H "\n", -400 },
	{ "bare cr", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", -400 },
	{ "obs-fold", "GET / HTTP/1.1\r\n" H "X: a\r\n b\r\n\r\n", -400 },
	{ "space before colon", "GET / HTTP/1.1\r\n" H "X : a\r\n\r\n", -400 },
	{ "tab before colon", "GET / HTTP/1.1\r\n" H "X\t: a\r\n\r\n", -400 },
	{ "nul in value", "GET / HTTP/1.1\r\n" H "X: a\0b\r\n\r\n", -400 },
	{ "ctl in value",
	  "GET / HTTP/1.1\r\n" H "X: a\x01"
	  "b\r\n\r\n",
	  -400 },
	{ "empty name", "GET / HTTP/1.1\r\n" H ": a\r\n\r\n", -400 },
	{ "bad name char", "GET / HTTP/1.1\r\n" H "X(y): a\r\n\r\n", -400 },
	{ "unknown method", "BREW / HTTP/1.1\r\n" H "\r\n", -501 },
	{ "connect", "CONNECT a:1 HTTP/1.1\r\n" H "\r\n", -501 },
	{ "lower method", "get / HTTP/1.1\r\n" H "\r\n", -501 },
	{ "bad method char", "G(T / HTTP/1.1\r\n" H "\r\n", -400 },
	{ "http2", "GET / HTTP/2.0\r\n" H "\r\n", -505 },
	{ "bad version", "GET / HTTX/1.1\r\n" H "\r\n", -400 },
	{ "double space", "GET  / HTTP/1.1\r\n" H "\r\n", -400 },
	{ "absolute form", "GET http://a/x?y HTTP/1.1\r\n" H "\r\n", 1 },
	{ "absolute no path", "GET http://a HTTP/1.1\r\n" H "\r\n", 1 },
	{ "absolute host mismatch", "GET http://b/ HTTP/1.1\r\n" H "\r\n",
	  -400 },
	{ "absolute no host", "GET http://a/ HTTP/1.1\r\n\r\n", -400 },
	{ "absolute userinfo", "GET http://u@a/ HTTP/1.1\r\n" H "\r\n", -400 },
	{ "absolute empty authority", "GET http:///x HTTP/1.1\r\n" H "\r\n",
	  -400 },
	{ "other scheme", "GET https://a/ HTTP/1.1\r\n" H "\r\n", -400 },
	{ "no version", "GET /\r\n\r\n", -400 },
	{ "too many headers",
	  "GET / HTTP/1.1\r\n" H "a: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n"
	  "f: 1\r\ng: 1\r\nh: 1\r\ni: 1\r\nj: 1\r\nk: 1\r\nl: 1\r\nm: 1\r\n"
	  "n: 1\r\no: 1\r\np: 1\r\nq: 1\r\nr: 1\r\ns: 1\r\nt: 1\r\n\r\n",
	  -431 },
};

static void
test_table(void **state)
{
	struct bal_msg m;

	for (size_t i = 0; i < sizeof(req_cases) / sizeof(req_cases[0]); i++) {
		const struct req_case *tc = &req_cases[i];
		size_t len = strlen(tc->head);
		const char *why = NULL;
		ssize_t r;
		/* The NUL case: strlen stops early; use the literal's size. */
		if (strcmp(tc->name, "nul in value") == 0)
			len = sizeof("GET / HTTP/1.1\r\n" H "X: a\0b\r\n\r\n") -
			      1;
		r = bal_parse_request(tc->head, len, &lim, &m, &why);
		if ((tc->want > 0 && r != (ssize_t)len) ||
		    (tc->want <= 0 && r != tc->want)) {
			fprintf(stderr, "case '%s': got %zd want %d (%s)\n",
				tc->name, r, tc->want, why ? why : "");
			fail();
		}
	}
}

static void
test_prefixes(void **state)
{
	const char *good = "POST /x?y=1 HTTP/1.1\r\nHost: example.com:80\r\n"
			   "Content-Length: 10\r\nX-A:  v v \r\n\r\n";
	size_t n = strlen(good);
	struct bal_msg m;

	for (size_t k = 0; k < n; k++)
		assert_int_equal(bal_parse_request(good, k, &lim, &m, NULL), 0);
	assert_int_equal(bal_parse_request(good, n, &lim, &m, NULL),
			 (ssize_t)n);
	assert_int_equal(m.method, BAL_M_POST);
	assert_int_equal(m.content_length, 10);
	assert_int_equal(m.keep_alive, 1);
	assert_int_equal(m.nhdrs, 3);
	assert_int_equal(m.hdrs[2].val_len, 3); /* "v v", OWS trimmed */
	assert_memory_equal(good + m.hdrs[2].val_off, "v v", 3);
	assert_memory_equal(good + m.target_off, "/x?y=1", m.target_len);
}

static void
test_limits(void **state)
{
	char buf[2048];
	struct bal_msg m;

	/* Request line longer than max_line: 414, even before it ends. */
	memset(buf, 'a', sizeof(buf));
	memcpy(buf, "GET /", 5);
	assert_int_equal(bal_parse_request(buf, 300, &lim, &m, NULL), -414);
	snprintf(buf, sizeof(buf), "GET /%0300d HTTP/1.1\r\nHost: a\r\n\r\n",
		 0);
	assert_int_equal(bal_parse_request(buf, strlen(buf), &lim, &m, NULL),
			 -414);
	/* Head over max_head: 431. */
	int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: ");
	memset(buf + n, 'b', 1100);
	assert_int_equal(bal_parse_request(buf, (size_t)n + 1100, &lim, &m,
					   NULL),
			 -431);
}

static void
test_connection(void **state)
{
	const char *h =
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Foo\r\n"
		"X-Foo: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
		"Upgrade: h2c\r\nProxy-Connection: x\r\nX-Bar: 2\r\n"
		"X-Forwarded-For: 1.2.3.4\r\n\r\n";
	struct bal_msg m;
	int hop = 0;

	assert_true(bal_parse_request(h, strlen(h), &lim, &m, NULL) > 0);
	assert_int_equal(m.keep_alive, 0);
	for (int i = 0; i < m.nhdrs; i++)
		if (m.hdrs[i].flags & BAL_HF_HOP)
			hop++;
	assert_int_equal(hop,
			 6); /* Connection X-Foo Keep-Alive TE Upgrade P-C */
	assert_true(m.hdrs[m.nhdrs - 1].flags & BAL_HF_XFF);
	const char *h10 = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
	assert_true(bal_parse_request(h10, strlen(h10), &lim, &m, NULL) > 0);
	assert_int_equal(m.keep_alive, 1);
	assert_int_equal(m.version_minor, 0);
}

static void
test_response(void **state)
{
	struct bal_msg m;
	const char *r1 = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
	const char *r2 = "HTTP/1.1 204\r\n\r\n";
	const char *r3 =
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
	const char *bad1 = "HTTP/1.1 2000 OK\r\n\r\n";
	const char *bad2 = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
			   "Transfer-Encoding: chunked\r\n\r\n";
	const char *bad3 = "HTTP/1.1 200 OK\nX: y\n\n";

	assert_int_equal(bal_parse_response(r1, strlen(r1), 4096, &m, NULL),
			 (ssize_t)strlen(r1) - 5);
	assert_int_equal(m.status, 200);
	assert_int_equal(m.content_length, 5);
	assert_true(bal_parse_response(r2, strlen(r2), 4096, &m, NULL) > 0);
	assert_int_equal(m.status, 204);
	assert_true(bal_parse_response(r3, strlen(r3), 4096, &m, NULL) > 0);
	assert_int_equal(m.chunked, 1);
	assert_int_equal(m.keep_alive, 0);
	assert_int_equal(bal_parse_response(bad1, strlen(bad1), 4096, &m, NULL),
			 -502);
	assert_int_equal(bal_parse_response(bad2, strlen(bad2), 4096, &m, NULL),
			 -502);
	assert_int_equal(bal_parse_response(bad3, strlen(bad3), 4096, &m, NULL),
			 -502);
}

static ssize_t
feed_all(const char *s, size_t n, int bytewise, struct bal_chunk *c)
{
	memset(c, 0, sizeof(*c));
	if (!bytewise)
		return bal_chunk_feed(c, s, n, NULL);
	size_t used = 0;
	for (size_t i = 0; i < n && !bal_chunk_done(c); i++) {
		ssize_t r = bal_chunk_feed(c, s + i, 1, NULL);
		if (r < 0)
			return r;
		used += (size_t)r;
	}
	return (ssize_t)used;
}

static void
test_chunks(void **state)
{
	struct bal_chunk c;
	const char *good = "5\r\nhello\r\nA;ext=1\r\n0123456789\r\n0\r\n"
			   "Trailer: x y\r\nT2:\r\n\r\nNEXT";
	size_t n = strlen(good);

	for (int bw = 0; bw < 2; bw++) {
		assert_int_equal(feed_all(good, n, bw, &c), (ssize_t)n - 4);
		assert_true(bal_chunk_done(&c));
		assert_int_equal(c.total, 15);
	}
	static const char *const bad[] = {
		"x\r\n",                    /* not hex */
		"\r\n",                     /* empty size */
		"5 \r\nhello\r\n0\r\n\r\n", /* whitespace after size */
		"-5\r\n",
		"5\nhello\r\n",         /* bare LF */
		"5\r\nhelloX\r\n",      /* data longer than size */
		"1000000000000000\r\n", /* 16 hex digits */
		"0\r\n\n",              /* bare LF at end */
		"0\r\n x\r\n\r\n",      /* folded trailer */
		"0\r\nnocolon\r\n\r\n", /* trailer line without a colon */
		"0\r\nX y: 1\r\n\r\n",  /* space in a trailer name */
		"0\r\nX :1\r\n\r\n",    /* space before the colon */
		"0\r\n:1\r\n\r\n",      /* empty trailer name */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		for (int bw = 0; bw < 2; bw++) {
			if (feed_all(bad[i], strlen(bad[i]), bw, &c) != -1) {
				fprintf(stderr, "bad chunk case %zu accepted\n",
					i);
				fail();
			}
		}
}

/* X-Forwarded-Proto is replaced and Via extended, so both are marked. */
static void
test_forwarding_fields(void **state)
{
	const char *h = "GET / HTTP/1.1\r\nHost: a\r\nVia: 1.0 fred\r\n"
			"x-forwarded-proto: https\r\nX-Other: 1\r\n\r\n";
	struct bal_msg m;

	assert_true(bal_parse_request(h, strlen(h), &lim, &m, NULL) > 0);
	assert_int_equal(m.nhdrs, 4);
	assert_int_equal(m.hdrs[1].flags, BAL_HF_VIA);
	assert_int_equal(m.hdrs[2].flags, BAL_HF_XFP);
	assert_int_equal(m.hdrs[3].flags, 0);
}

static void
check_norm(const char *in, const char *want)
{
	char out[256];
	size_t n = bal_path_normalize(in, strlen(in), out);

	assert_string_equal(out, want);
	assert_int_equal(n, strlen(want));
}

/* What a backend may route a path as, so that a deny rule sees the same. */
static void
test_path_normalize(void **state)
{
	check_norm("/", "/");
	check_norm("", "/");
	check_norm("/stats", "/stats");
	check_norm("/stats/", "/stats/");
	check_norm("//stats", "/stats");
	check_norm("/./stats", "/stats");
	check_norm("/x/../stats", "/stats");
	check_norm("/../../stats", "/stats");
	check_norm("/%73tats", "/stats");
	check_norm("/%2e/%2E%2e/stats", "/stats");
	check_norm("/a/b/..", "/a");
	check_norm("/a/%2", "/a/%2");
	check_norm("/a%zz", "/a%zz");
	check_norm("/stats%2Fx", "/stats/x");
	check_norm("a/b", "/a/b");
	assert_true(bal_path_under("/stats", 6, "/stats"));
	assert_true(bal_path_under("/stats/x", 8, "/stats"));
	assert_false(bal_path_under("/statsx", 7, "/stats"));
	assert_false(bal_path_under("/stat", 5, "/stats"));
	assert_true(bal_path_under("/a/b", 4, "/a/"));
	assert_false(bal_path_under("/a", 2, "/a/"));
	assert_false(bal_path_under("/Stats", 6, "/stats"));
	assert_false(bal_path_under("/x", 2, ""));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_connection),
		cmocka_unit_test(test_response),
		cmocka_unit_test(test_chunks),
		cmocka_unit_test(test_forwarding_fields),
		cmocka_unit_test(test_path_normalize),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
