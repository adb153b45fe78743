/*
 * Log-linear latency histogram; see hs_hist.h.  Values below 64 get one
 * bucket each; above, each power of two [2^k, 2^(k+1)) is split in 32.
 */
#include <string.h>

#include "hs_hist.h"

#define LOAD(p)   __atomic_load_n((p), __ATOMIC_RELAXED)
#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

int
hs_hist_index(uint64_t v)
{
	int k, idx;

	if (v < 64)
		return (int)v;
	k = 63 - __builtin_clzll(v); /* 2^k <= v, k >= 6 */
	idx = 64 + (k - 6) * HS_HIST_SUB + (int)((v >> (k - 5)) - HS_HIST_SUB);
	return idx < HS_HIST_BUCKETS ? idx : HS_HIST_BUCKETS - 1;
}

uint64_t
hs_hist_bucket_max(int idx)
{
	int k, sub;

	if (idx < 64)
		return (uint64_t)idx;
	k = (idx - 64) / HS_HIST_SUB + 6;
	sub = (idx - 64) % HS_HIST_SUB;
	return (((uint64_t)(HS_HIST_SUB + sub + 1)) << (k - 5)) - 1;
}

void
hs_hist_record(struct hs_hist *h, uint64_t us)
{
	uint64_t max = LOAD(&h->max_us);

	ADD(&h->b[hs_hist_index(us)], 1);
	ADD(&h->count, 1);
	ADD(&h->sum_us, us);
	while (us > max &&
	       !__atomic_compare_exchange_n(&h->max_us, &max, us, 1,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

void
hs_hist_merge(struct hs_hist *dst, const struct hs_hist *src)
{
	for (int i = 0; i < HS_HIST_BUCKETS; i++)
		dst->b[i] += LOAD(&src->b[i]);
	dst->count += LOAD(&src->count);
	dst->sum_us += LOAD(&src->sum_us);
	if (LOAD(&src->max_us) > dst->max_us)
		dst->max_us = LOAD(&src->max_us);
}

uint64_t
hs_hist_count(const struct hs_hist *h)
{
	return LOAD(&h->count);
}

uint64_t
hs_hist_quantile(const struct hs_hist *h, double q)
{
	uint64_t total = 0, seen = 0, rank;

	for (int i = 0; i < HS_HIST_BUCKETS; i++)
		total += LOAD(&h->b[i]);
	if (total == 0)
		return 0;
	if (q < 0)
		q = 0;
	if (q > 1)
		q = 1;
	rank = (uint64_t)(q * (double)total + 0.5);
	if (rank < 1)
		rank = 1;
	for (int i = 0; i < HS_HIST_BUCKETS; i++) {
		seen += LOAD(&h->b[i]);
		if (seen >= rank) {
			uint64_t m = hs_hist_bucket_max(i),
				 max = LOAD(&h->max_us);
			return m < max ? m : max;
		}
	}
	return LOAD(&h->max_us);
}

void
hs_hist_prom(struct hs_buf *out, const struct hs_hist *h, const char *name,
	     const char *labels)
{
	static const uint64_t le_us[] = { 100,     250,     500,     1000,
					  2500,    5000,    10000,   25000,
					  50000,   100000,  250000,  500000,
					  1000000, 2500000, 10000000 };
	const char *sep = labels[0] ? "," : "";
	uint64_t cum = 0;
	int i = 0;

	for (size_t j = 0; j < sizeof(le_us) / sizeof(le_us[0]); j++) {
		for (; i < HS_HIST_BUCKETS && hs_hist_bucket_max(i) <= le_us[j];
		     i++)
			cum += LOAD(&h->b[i]);
		hs_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name,
			      labels, sep, (double)le_us[j] / 1e6,
			      (unsigned long long)cum);
	}
	hs_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels,
		      sep, (unsigned long long)LOAD(&h->count));
	hs_buf_printf(out, "%s_sum{%s} %.6f\n", name, labels,
		      (double)LOAD(&h->sum_us) / 1e6);
	hs_buf_printf(out, "%s_count{%s} %llu\n", name, labels,
		      (unsigned long long)LOAD(&h->count));
}

void
hs_hist_json(struct hs_buf *out, const struct hs_hist *h)
{
	uint64_t n = LOAD(&h->count);

	hs_buf_printf(out,
		      "{\"count\":%llu,\"mean_us\":%llu,\"p50_us\":%llu,"
		      "\"p90_us\":%llu,\"p99_us\":%llu,\"max_us\":%llu",
		      (unsigned long long)n,
		      (unsigned long long)(n ? LOAD(&h->sum_us) / n : 0),
		      (unsigned long long)hs_hist_quantile(h, 0.50),
		      (unsigned long long)hs_hist_quantile(h, 0.90),
		      (unsigned long long)hs_hist_quantile(h, 0.99),
		      (unsigned long long)LOAD(&h->max_us));
	/* The buckets themselves, so that a reader polling once a second can
	 * difference two snapshots into that second's own percentiles: the
	 * quantiles above are since start.  One string, not an array of
	 * pairs: /stats?pretty=1 would spread a hundred pairs over 400
	 * lines of a terminal. */
	hs_buf_puts(out, ",\"buckets\":\"");
	for (int i = 0, first = 1; i < HS_HIST_BUCKETS; i++) {
		uint64_t c = LOAD(&h->b[i]);

		if (c == 0)
			continue;
		hs_buf_printf(out, "%s%llu:%llu", first ? "" : " ",
			      (unsigned long long)hs_hist_bucket_max(i),
			      (unsigned long long)c);
		first = 0;
	}
	hs_buf_puts(out, "\"}");
}
