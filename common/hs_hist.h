/*
 * A lock-free latency histogram with log-linear buckets (32 sub-buckets per
 * power of two, so a recorded value is known within ~3%), in microseconds up
 * to about 38 hours.  Recording is a few relaxed atomic adds, safe from any
 * number of threads.  Debian has no HdrHistogram package; this is the same
 * idea in ~150 lines.
 */
#ifndef HS_HIST_H
#define HS_HIST_H

#include <stdint.h>

#include "hs_buf.h"

#define HS_HIST_SUB     32
#define HS_HIST_BUCKETS (64 + 32 * HS_HIST_SUB)

struct hs_hist {
	uint64_t count;
	uint64_t sum_us;
	uint64_t max_us;
	uint64_t b[HS_HIST_BUCKETS];
};

void hs_hist_record(struct hs_hist *h, uint64_t us);
/* Adds src into dst (src is read with relaxed atomics). */
void hs_hist_merge(struct hs_hist *dst, const struct hs_hist *src);
/* The value at quantile q (0..1), as the upper bound of its bucket; 0 if empty. */
uint64_t hs_hist_quantile(const struct hs_hist *h, double q);
uint64_t hs_hist_count(const struct hs_hist *h);
/* Bucket index of a value and the largest value that maps to a bucket. */
int hs_hist_index(uint64_t us);
uint64_t hs_hist_bucket_max(int idx);

/*
 * Appends a Prometheus histogram "name_bucket{labels,le=...}", "name_sum",
 * "name_count" in seconds, with fixed le bounds from 100us to 10s.
 * labels may be "" or e.g. "route=\"/db\"".
 */
void hs_hist_prom(struct hs_buf *out, const struct hs_hist *h, const char *name,
		  const char *labels);
/*
 * Appends {"count":..,"mean_us":..,"p50_us":..,"p90_us":..,"p99_us":..,
 * "max_us":..,"buckets":"UPPER_US:COUNT UPPER_US:COUNT ..."}: the quantiles
 * since start, and the non-empty buckets (not cumulative; a bucket holds
 * the values up to UPPER_US above the previous one's), for readers that
 * difference two snapshots into per-interval percentiles.
 */
void hs_hist_json(struct hs_buf *out, const struct hs_hist *h);

#endif
