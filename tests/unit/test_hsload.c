/*
 * Unit tests of hs-load's pieces: the response parser (whole, byte by
 * byte, chunked, close-delimited, malformed), the Zipf sampler and its
 * scatter (against hslib.lua's arithmetic), the mixes' shares and request
 * bytes, and the corrected / uncorrected recording against known latencies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hsload.h"

/* Feeds text to a fresh parser in pieces of `step` bytes, as reads would
 * arrive, keeping what was not consumed; returns the bytes left over. */
static size_t
feed(struct hsl_resp *r, const char *text, size_t step)
{
	char buf[HSL_RESP_HEAD_MAX * 2];
	size_t len = strlen(text), in = 0, have = 0;

	hsl_resp_init(r);
	for (;;) {
		size_t n = len - in < step ? len - in : step, used;

		memcpy(buf + have, text + in, n);
		in += n;
		have += n;
		used = hsl_resp_parse(r, buf, have);
		memmove(buf, buf + used, have - used);
		have -= used;
		if (r->state == HSL_RESP_DONE || r->state == HSL_RESP_ERROR ||
		    in == len)
			break;
	}
	return have + (len - in);
}

static void
test_resp_content_length(void **state)
{
	static const char ok[] = "HTTP/1.1 200 OK\r\nServer: x\r\n"
				 "content-length:  13\r\n\r\nHello, World!";
	struct hsl_resp r;

	for (size_t step = 1; step <= sizeof(ok); step++) {
		assert_int_equal(feed(&r, ok, step), 0);
		assert_int_equal(r.state, HSL_RESP_DONE);
		assert_int_equal(r.status, 200);
		assert_int_equal(r.close, 0);
	}
	/* A second response right behind the first stays unconsumed. */
	assert_int_equal(feed(&r,
			      "HTTP/1.1 404 Not Found\r\nContent-Length: 2"
			      "\r\nConnection: keep-alive, close\r\n\r\n{}"
			      "HTTP/1.1 200 OK\r\n",
			      4096),
			 17);
	assert_int_equal(r.status, 404);
	assert_int_equal(r.close, 1);
	feed(&r, "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 4096);
	assert_int_equal(r.state, HSL_RESP_DONE);
	assert_int_equal(r.close, 1);
	feed(&r,
	     "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n"
	     "Content-Length: 0\r\n\r\n",
	     4096);
	assert_int_equal(r.close, 0);
}

static void
test_resp_chunked(void **state)
{
	static const char ok[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
				 "gzip, chunked\r\n\r\n5;ext=1\r\nHello\r\n"
				 "A\r\n, World!!!\r\n0\r\nX-T: 1\r\n\r\n";
	struct hsl_resp r;

	for (size_t step = 1; step <= sizeof(ok); step++) {
		assert_int_equal(feed(&r, ok, step), 0);
		assert_int_equal(r.state, HSL_RESP_DONE);
	}
	feed(&r,
	     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	     "zz\r\n",
	     4096);
	assert_int_equal(r.state, HSL_RESP_ERROR);
	feed(&r,
	     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	     "1\r\nabc\r\n",
	     4096);
	assert_int_equal(r.state, HSL_RESP_ERROR);
}

static void
test_resp_other_framing(void **state)
{
	struct hsl_resp r;

	/* No length: the body runs to the close. */
	feed(&r, "HTTP/1.1 200 OK\r\n\r\nsome body", 4096);
	assert_int_equal(r.state, HSL_RESP_BODY_EOF);
	assert_int_equal(hsl_resp_eof(&r), 1);
	assert_int_equal(r.state, HSL_RESP_DONE);
	/* 204 and 304 have no body; a 100 comes before the real answer. */
	feed(&r, "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 4096);
	assert_int_equal(r.state, HSL_RESP_DONE);
	feed(&r,
	     "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
	     "Content-Length: 1\r\n\r\nx",
	     3);
	assert_int_equal(r.state, HSL_RESP_DONE);
	assert_int_equal(r.status, 201);
	/* A response cut before its end is not done; EOF does not end it. */
	feed(&r, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 4096);
	assert_int_equal(r.state, HSL_RESP_BODY_LEN);
	assert_int_equal(hsl_resp_eof(&r), 0);
	/* Malformed. */
	feed(&r, "HTTP/2 200\r\n\r\n", 4096);
	assert_int_equal(r.state, HSL_RESP_ERROR);
	feed(&r, "hello there\r\n\r\n", 4096);
	assert_int_equal(r.state, HSL_RESP_ERROR);
	feed(&r, "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", 4096);
	assert_int_equal(r.state, HSL_RESP_ERROR);
}

static void
test_resp_head_too_large(void **state)
{
	char *big = malloc(HSL_RESP_HEAD_MAX + 64);
	struct hsl_resp r;

	strcpy(big, "HTTP/1.1 200 OK\r\nX: ");
	memset(big + strlen(big), 'a', HSL_RESP_HEAD_MAX);
	big[HSL_RESP_HEAD_MAX + 20] = '\0';
	feed(&r, big, 4096);
	assert_int_equal(r.state, HSL_RESP_ERROR);
	free(big);
}

static void
test_zipf_scatter(void **state)
{
	struct hsl_zipf *z;
	struct hsl_rng rng;
	int64_t hits = 0;

	/* hslib.lua: step = 7919 % n, moved up until coprime with n. */
	z = hsl_zipf_new(1000, 1.0, 1);
	assert_int_equal(hsl_zipf_step(z), 919);
	assert_int_equal(hsl_zipf_id_of_rank(z, 1), 1);
	assert_int_equal(hsl_zipf_id_of_rank(z, 2), 920);
	assert_int_equal(hsl_zipf_id_of_rank(z, 3), 839);
	/* Rank 1 of Zipf(1) over 1000 has probability 1/H(1000) = 0.1336. */
	hsl_rng_seed(&rng, 42);
	for (int i = 0; i < 200000; i++)
		hits += hsl_zipf_rank(z, &rng) == 1;
	assert_in_range(hits, 200000 * 0.1286, 200000 * 0.1386);
	hsl_zipf_free(z);

	z = hsl_zipf_new(7919, 1.0, 1);
	assert_int_equal(hsl_zipf_step(z), 1);
	hsl_zipf_free(z);
	z = hsl_zipf_new(100, 1.0, 1); /* 7919 % 100 = 19 */
	assert_int_equal(hsl_zipf_step(z), 19);
	hsl_zipf_free(z);
	z = hsl_zipf_new(20, 1.0, 1); /* 19, coprime */
	assert_int_equal(hsl_zipf_step(z), 19);
	hsl_zipf_free(z);
	z = hsl_zipf_new(1000, 1.0, 0);
	assert_int_equal(hsl_zipf_id_of_rank(z, 2), 2);
	hsl_zipf_free(z);
	assert_null(hsl_zipf_new(0, 1.0, 1));
	hsl_zipf_free(NULL);
}

static void
test_mix_shares(void **state)
{
	struct hsl_mix_opts o;
	struct hsl_mix *m;
	char buf[HSL_REQ_MAX], err[200];
	enum hsl_kind kind;
	int counts[HSL_KIND_COUNT] = { 0 };
	const int n = 100000;
	size_t len;

	hsl_mix_defaults(&o);
	o.kind = HSL_MIX_UPDATE;
	o.products = 1000;
	o.categories = 20;
	m = hsl_mix_new(&o, "127.0.0.1:8080", "/", err, sizeof(err));
	assert_non_null(m);
	for (int i = 0; i < n; i++) {
		len = hsl_mix_next(m, buf, sizeof(buf), &kind);
		assert_true(len > 0);
		counts[kind]++;
		if (kind == HSL_KIND_put || kind == HSL_KIND_review) {
			/* The Content-Length matches the body. */
			char *body = strstr(buf, "\r\n\r\n") + 4;
			char *cl = strstr(buf, "Content-Length: ") + 16;

			assert_int_equal(atoi(cl), len - (size_t)(body - buf));
		}
	}
	/* put 5%, review 5%, of the rest top 10%. */
	assert_in_range(counts[HSL_KIND_put], n * 0.045, n * 0.055);
	assert_in_range(counts[HSL_KIND_review], n * 0.045, n * 0.055);
	assert_in_range(counts[HSL_KIND_top], n * 0.085, n * 0.095);
	hsl_mix_free(m);

	/* hot-key.lua's put defaults to 0: every request reads the id. */
	hsl_mix_defaults(&o);
	o.kind = HSL_MIX_HOT;
	o.id = 42;
	m = hsl_mix_new(&o, "h:1", "/", err, sizeof(err));
	for (int i = 0; i < 1000; i++) {
		len = hsl_mix_next(m, buf, sizeof(buf), &kind);
		assert_int_equal(kind, HSL_KIND_product);
		assert_memory_equal(buf, "GET /products/42 HTTP/1.1\r\n", 27);
	}
	hsl_mix_free(m);

	hsl_mix_defaults(&o);
	m = hsl_mix_new(&o, "127.0.0.1:1", "/plaintext", err, sizeof(err));
	len = hsl_mix_next(m, buf, sizeof(buf), &kind);
	buf[len] = '\0';
	assert_string_equal(buf, "GET /plaintext HTTP/1.1\r\n"
				 "Host: 127.0.0.1:1\r\n\r\n");
	hsl_mix_free(m);

	o.put = 0.7;
	o.review = 0.7;
	o.kind = HSL_MIX_UPDATE;
	assert_null(hsl_mix_new(&o, "h:1", "/", err, sizeof(err)));
	assert_non_null(strstr(err, "put + review"));
	hsl_mix_free(NULL);
}

static void
test_stats_known_latencies(void **state)
{
	struct hsl_stats *st = calloc(1, sizeof(*st));
	const uint64_t ms = 1000000;

	/* 1000 requests planned at 0; request i is sent i ms late and
	 * answered 1 ms after its send.  Uncorrected: all 1 ms; corrected:
	 * i + 1 ms, so p50 ~ 500 ms, p90 ~ 900 ms, max 1000 ms. */
	for (uint64_t i = 0; i < 1000; i++)
		hsl_stats_record(st, 0, i * ms, i * ms + ms,
				 i % 100 == 0 ? 503 : 200);
	assert_int_equal(st->requests, 1000);
	assert_int_equal(st->s5xx, 10);
	assert_int_equal(st->s2xx, 990);
	assert_in_range(hs_hist_quantile(&st->corrected, 0.5), 500000,
			500000 * 1.04);
	assert_in_range(hs_hist_quantile(&st->corrected, 0.9), 900000,
			900000 * 1.04);
	assert_int_equal(hs_hist_quantile(&st->corrected, 1.0), 1000000);
	assert_int_equal(st->corrected.max_us, 1000000);
	assert_in_range(hs_hist_quantile(&st->uncorrected, 0.5), 1000, 1031);
	assert_in_range(hs_hist_quantile(&st->uncorrected, 0.99), 1000, 1031);
	assert_int_equal(st->uncorrected.max_us, 1000);
	/* An answer stamped before its plan (clock reads race) counts 0. */
	hsl_stats_record(st, 5 * ms, 5 * ms, 4 * ms, 200);
	assert_int_equal(st->requests, 1001);
	free(st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_resp_content_length),
		cmocka_unit_test(test_resp_chunked),
		cmocka_unit_test(test_resp_other_framing),
		cmocka_unit_test(test_resp_head_too_large),
		cmocka_unit_test(test_zipf_scatter),
		cmocka_unit_test(test_mix_shares),
		cmocka_unit_test(test_stats_known_latencies),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
