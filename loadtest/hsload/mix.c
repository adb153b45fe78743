/*
 * The request mixes of the wrk scripts, in C: read-mix.lua, update-mix.lua,
 * hot-key.lua, and a plain GET of one path.  Same options and defaults, the
 * same Zipf sampler with the same scatter, the same shares and bodies, so
 * that an hs-load curve and a wrk run measure the same traffic.  The random
 * streams differ (LuaJIT's generator is not reproduced), the distributions
 * do not: tests/integration/test_hsload.py compares them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hs_rng.h"
#include "hs_util.h"
#include "hsload.h"

#define HSL_MAX_IDS 10000000 /* a CDF table of 80 MB at most */

void
hsl_rng_seed(struct hsl_rng *r, uint64_t seed)
{
	r->s = seed;
}

uint64_t
hsl_rng_next(struct hsl_rng *r)
{
	return hs_rng_next(&r->s);
}

double
hsl_rng_unit(struct hsl_rng *r)
{
	return (double)(hsl_rng_next(r) >> 11) * 0x1.0p-53;
}

int64_t
hsl_rng_range(struct hsl_rng *r, int64_t lo, int64_t hi)
{
	return lo + (int64_t)(hsl_rng_unit(r) * (double)(hi - lo + 1));
}

/* ------------------------------------------------------------ Zipf */

struct hsl_zipf {
	int64_t n, step;
	double *cdf; /* cdf[r-1] = P(rank <= r) */
};

static int64_t
hsl_gcd(int64_t a, int64_t b)
{
	while (b != 0) {
		int64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

struct hsl_zipf *
hsl_zipf_new(int64_t n, double s, int scatter)
{
	struct hsl_zipf *z;
	double sum = 0;

	if (n < 1 || n > HSL_MAX_IDS)
		return NULL;
	z = hs_xcalloc(1, sizeof(*z));
	z->n = n;
	z->cdf = hs_xmalloc((size_t)n * sizeof(double));
	for (int64_t r = 1; r <= n; r++) {
		sum += 1.0 / pow((double)r, s);
		z->cdf[r - 1] = sum;
	}
	for (int64_t r = 0; r < n; r++)
		z->cdf[r] /= sum;
	z->cdf[n - 1] = 1.0;
	/* hslib.lua: 7919 mod n, moved up to the next step coprime with n. */
	z->step = 1;
	if (scatter && n > 2) {
		z->step = 7919 % n;
		if (z->step == 0)
			z->step = 1;
		while (hsl_gcd(z->step, n) != 1)
			z->step++;
	}
	return z;
}

void
hsl_zipf_free(struct hsl_zipf *z)
{
	if (z == NULL)
		return;
	free(z->cdf);
	free(z);
}

int64_t
hsl_zipf_rank(const struct hsl_zipf *z, struct hsl_rng *r)
{
	double u = hsl_rng_unit(r);
	int64_t lo = 1, hi = z->n;

	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2;

		if (z->cdf[mid - 1] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int64_t
hsl_zipf_id_of_rank(const struct hsl_zipf *z, int64_t rank)
{
	/* (rank-1)*step can overflow for huge n: reduce with 128 bits. */
	return (int64_t)(((__int128)(rank - 1) * z->step) % z->n) + 1;
}

int64_t
hsl_zipf_id(const struct hsl_zipf *z, struct hsl_rng *r)
{
	return hsl_zipf_id_of_rank(z, hsl_zipf_rank(z, r));
}

int64_t
hsl_zipf_step(const struct hsl_zipf *z)
{
	return z->step;
}

/* ------------------------------------------------------------ mixes */

static const char *const hsl_kind_names[] = {
#define HSL_KIND_NAME(name, help) #name,
	HSL_KINDS(HSL_KIND_NAME)
#undef HSL_KIND_NAME
};

const char *
hsl_kind_name(enum hsl_kind k)
{
	return k < HSL_KIND_COUNT ? hsl_kind_names[k] : "?";
}

static const char *const hsl_mix_names[] = { "plain", "read", "update", "hot" };

const char *
hsl_mix_kind_name(enum hsl_mix_kind k)
{
	return hsl_mix_names[k];
}

int
hsl_mix_parse_kind(const char *s, enum hsl_mix_kind *out)
{
	for (size_t i = 0; i < sizeof(hsl_mix_names) / sizeof(*hsl_mix_names);
	     i++) {
		if (strcmp(s, hsl_mix_names[i]) == 0) {
			*out = (enum hsl_mix_kind)i;
			return 0;
		}
	}
	return -1;
}

void
hsl_mix_defaults(struct hsl_mix_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->kind = HSL_MIX_PLAIN;
	o->products = 100000;
	o->categories = 100;
	o->id = 1;
	o->top = 0.1;
	o->put = -1; /* unset: the script's default, see hsl_mix_new */
	o->review = -1;
	o->s = 1.0;
	o->scatter = 1;
	o->seed = 1;
}

struct hsl_mix {
	struct hsl_mix_opts o;
	char host[300];
	struct hsl_rng rng;
	struct hsl_zipf *zp, *zc;
	uint64_t seq;
	char plain[HSL_REQ_MAX];
	size_t plain_len;
};

struct hsl_mix *
hsl_mix_new(const struct hsl_mix_opts *o, const char *host, const char *path,
	    char *err, size_t errlen)
{
	struct hsl_mix *m = NULL;
	struct hsl_mix_opts d = *o;
	int n;

	/* update-mix.lua puts and reviews 5% each; hot-key.lua puts 0%. */
	if (d.put < 0)
		d.put = d.kind == HSL_MIX_UPDATE ? 0.05 : 0;
	if (d.review < 0)
		d.review = d.kind == HSL_MIX_UPDATE ? 0.05 : 0;
	o = &d;
	if (o->top < 0 || o->top > 1 || o->put < 0 || o->review < 0 ||
	    o->put + o->review > 1) {
		snprintf(err, errlen,
			 "--top, --put and --review are shares in "
			 "0..1, with put + review <= 1");
		goto fail;
	}
	if (o->s < 0 || o->s > 10) {
		snprintf(err, errlen, "--s (the Zipf exponent) must be 0..10");
		goto fail;
	}
	m = hs_xcalloc(1, sizeof(*m));
	m->o = *o;
	snprintf(m->host, sizeof(m->host), "%s", host);
	/* read-mix.lua's seed_random for thread 0: seed + 1000003 * 1. */
	hsl_rng_seed(&m->rng, o->seed + 1000003);
	n = snprintf(m->plain, sizeof(m->plain),
		     "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host);
	if (n < 0 || (size_t)n >= sizeof(m->plain)) {
		snprintf(err, errlen, "the URL is too long");
		goto fail;
	}
	m->plain_len = (size_t)n;
	if (o->kind == HSL_MIX_READ || o->kind == HSL_MIX_UPDATE) {
		m->zp = hsl_zipf_new(o->products, o->s, o->scatter != 0);
		m->zc = hsl_zipf_new(o->categories, o->s, o->scatter != 0);
		if (m->zp == NULL || m->zc == NULL) {
			snprintf(err, errlen,
				 "--products and --categories must "
				 "be 1..%d",
				 HSL_MAX_IDS);
			goto fail;
		}
	}
	if (o->kind == HSL_MIX_HOT && o->id < 1) {
		snprintf(err, errlen, "--id must be a positive product id");
		goto fail;
	}
	return m;
fail:
	hsl_mix_free(m);
	return NULL;
}

void
hsl_mix_free(struct hsl_mix *m)
{
	if (m == NULL)
		return;
	hsl_zipf_free(m->zp);
	hsl_zipf_free(m->zc);
	free(m);
}

static size_t
hsl_fmt(char *buf, size_t cap, int n)
{
	return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

static size_t
hsl_get(struct hsl_mix *m, char *buf, size_t cap, const char *prefix,
	int64_t id, const char *suffix)
{
	return hsl_fmt(buf, cap,
		       snprintf(buf, cap,
				"GET %s%lld%s HTTP/1.1\r\nHost: %s\r\n\r\n",
				prefix, (long long)id, suffix, m->host));
}

/* A request with a JSON body, as wrk.format(method, path, json_headers, body). */
static size_t
hsl_with_body(struct hsl_mix *m, char *buf, size_t cap, const char *method,
	      int64_t id, const char *suffix, const char *body)
{
	return hsl_fmt(buf, cap,
		       snprintf(buf, cap,
				"%s /products/%lld%s HTTP/1.1\r\nHost: %s\r\n"
				"Content-Type: application/json\r\n"
				"Content-Length: %zu\r\n\r\n%s",
				method, (long long)id, suffix, m->host,
				strlen(body), body));
}

/* The read part of read-mix.lua and update-mix.lua. */
static size_t
hsl_read(struct hsl_mix *m, char *buf, size_t cap, enum hsl_kind *kind)
{
	if (hsl_rng_unit(&m->rng) < m->o.top) {
		*kind = HSL_KIND_top;
		return hsl_get(m, buf, cap, "/categories/",
			       hsl_zipf_id(m->zc, &m->rng), "/top");
	}
	*kind = HSL_KIND_product;
	return hsl_get(m, buf, cap, "/products/", hsl_zipf_id(m->zp, &m->rng),
		       "");
}

static size_t
hsl_update(struct hsl_mix *m, char *buf, size_t cap, enum hsl_kind *kind)
{
	double u = hsl_rng_unit(&m->rng);
	char body[128];

	if (u < m->o.put) {
		m->seq++;
		*kind = HSL_KIND_put;
		snprintf(body, sizeof(body),
			 "{\"price_cents\":%lld,\"stock\":%llu}",
			 (long long)hsl_rng_range(&m->rng, 100, 99999),
			 (unsigned long long)(m->seq % 1000));
		return hsl_with_body(m, buf, cap, "PUT",
				     hsl_zipf_id(m->zp, &m->rng), "", body);
	}
	if (u < m->o.put + m->o.review) {
		*kind = HSL_KIND_review;
		snprintf(body, sizeof(body),
			 "{\"rating\":%lld,\"body\":\"load test review 0-%llu\"}",
			 (long long)hsl_rng_range(&m->rng, 1, 5),
			 (unsigned long long)m->seq);
		m->seq++;
		return hsl_with_body(m, buf, cap, "POST",
				     hsl_zipf_id(m->zp, &m->rng), "/reviews",
				     body);
	}
	return hsl_read(m, buf, cap, kind);
}

static size_t
hsl_hot(struct hsl_mix *m, char *buf, size_t cap, enum hsl_kind *kind)
{
	char body[64];

	if (m->o.put > 0 && hsl_rng_unit(&m->rng) < m->o.put) {
		m->seq++;
		*kind = HSL_KIND_put;
		snprintf(body, sizeof(body), "{\"stock\":%llu}",
			 (unsigned long long)(m->seq % 1000));
		return hsl_with_body(m, buf, cap, "PUT", m->o.id, "", body);
	}
	*kind = HSL_KIND_product;
	return hsl_get(m, buf, cap, "/products/", m->o.id, "");
}

size_t
hsl_mix_next(struct hsl_mix *m, char *buf, size_t cap, enum hsl_kind *kind)
{
	switch (m->o.kind) {
	case HSL_MIX_READ:
		return hsl_read(m, buf, cap, kind);
	case HSL_MIX_UPDATE:
		return hsl_update(m, buf, cap, kind);
	case HSL_MIX_HOT:
		return hsl_hot(m, buf, cap, kind);
	case HSL_MIX_PLAIN:
		break;
	}
	*kind = HSL_KIND_plain;
	if (m->plain_len > cap)
		return 0;
	memcpy(buf, m->plain, m->plain_len);
	return m->plain_len;
}
