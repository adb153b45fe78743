/*
 * The cache's counters and their exports (JSON for /stats, Prometheus text
 * for /metrics).  The circuit breaker itself is in breaker.c.
 */
#include <stdatomic.h>

#include "cache_int.h"
#include "hs_log.h"
#include "hs_util.h"

#define LD(f) atomic_load_explicit(&s->cnt.f, memory_order_relaxed)

void
cache_stats_get(struct cache_shared *s, struct cache_stats *out)
{
	out->hits = LD(hits);
	out->negative_hits = LD(negative_hits);
	out->misses = LD(misses);
	out->fills = LD(fills);
	out->sets = LD(sets);
	out->set_errors = LD(set_errors);
	out->lease_wins = LD(lease_wins);
	out->lease_waits = LD(lease_waits);
	out->lease_fallbacks = LD(lease_fallbacks);
	out->fill_conflicts = LD(fill_conflicts);
	out->invalidations = LD(invalidations);
	out->invalidation_retries = LD(invalidation_retries);
	out->invalidation_failures = LD(invalidation_failures);
	out->errors = LD(errors);
	out->bypasses = LD(bypasses);
	out->breaker_opens = LD(breaker_opens);
	out->batches = LD(batches);
	out->batch_keys = LD(batch_keys);
	out->protocol_errors = LD(protocol_errors);
	out->servers = s->nbrk;
	out->breakers_open = 0;
	for (unsigned i = 0; i < s->nbrk; i++)
		if (atomic_load(&s->brk[i].state) != BRK_CLOSED)
			out->breakers_open++;
}

const char *
cache_health(struct cache_shared *s)
{
	for (unsigned i = 0; i < s->nbrk; i++)
		if (atomic_load(&s->brk[i].state) != BRK_CLOSED)
			return "degraded";
	return "ok";
}

/* Name / value pairs in one place so JSON and Prometheus cannot drift. */
struct stat_row {
	const char *name;
	const char *help;
	uint64_t v;
};

static size_t
stat_rows(const struct cache_stats *st, struct stat_row *r)
{
	size_t n = 0;

#define ROW(f, h) r[n++] = (struct stat_row){ #f, h, st->f }
	ROW(hits, "Reads served from memcached (including negative hits)");
	ROW(negative_hits, "Reads served from a cached 404");
	ROW(misses, "Reads that had to run the database fill");
	ROW(fills, "Database fills run by the cache");
	ROW(sets, "Bodies stored in memcached");
	ROW(set_errors, "Stores that failed with a memcached error");
	ROW(lease_wins, "Misses that won the fill lease");
	ROW(lease_waits, "Reads that waited on another reader's lease");
	ROW(lease_fallbacks, "Lease waits that timed out and filled without storing");
	ROW(fill_conflicts, "Fills not stored because an update deleted the lease");
	ROW(invalidations, "Keys deleted after updates");
	ROW(invalidation_retries, "Delete retries after memcached errors");
	ROW(invalidation_failures, "Deletes that failed after all retries");
	ROW(errors, "memcached operation errors");
	ROW(bypasses, "Reads served from the database because memcached was unusable");
	ROW(breaker_opens, "Times a circuit breaker opened");
	ROW(batches, "Multi-gets sent by the read batcher");
	ROW(batch_keys, "Keys asked for in the read batcher's multi-gets");
	ROW(protocol_errors, "memcached replies that broke the protocol "
	    "(connection closed, read served from the database)");
#undef ROW
	return n;
}

void
cache_stats_json(struct cache_shared *s, struct hs_buf *b)
{
	struct cache_stats st;
	struct stat_row rows[24];
	size_t n;
	uint64_t reads;

	cache_stats_get(s, &st);
	n = stat_rows(&st, rows);
	hs_buf_printf(b, "{\"mode\":\"%s\",\"health\":\"%s\"",
		      cache_mode_name(s->o.mode), cache_health(s));
	for (size_t i = 0; i < n; i++)
		hs_buf_printf(b, ",\"%s\":%llu", rows[i].name,
			      (unsigned long long)rows[i].v);
	reads = st.hits + st.misses + st.bypasses;
	hs_buf_printf(b, ",\"hit_ratio\":%.4f",
		      reads ? (double)st.hits / (double)reads : 0.0);
	hs_buf_printf(b, ",\"fetch_us_p50\":%llu,\"fetch_us_p99\":%llu",
		      (unsigned long long)hs_hist_quantile(&s->fetch_hist, 0.5),
		      (unsigned long long)hs_hist_quantile(&s->fetch_hist, 0.99));
	hs_buf_puts(b, ",\"servers\":[");
	for (unsigned i = 0; i < s->nbrk; i++) {
		hs_buf_printf(b, "%s{\"server\":", i ? "," : "");
		hs_buf_json_str(b, s->brk[i].name);
		hs_buf_printf(b, ",\"breaker\":\"%s\"}",
			      cache_brk_state_name(atomic_load(&s->brk[i].state)));
	}
	hs_buf_puts(b, "]}");
}

void
cache_stats_prom(struct cache_shared *s, struct hs_buf *b)
{
	struct cache_stats st;
	struct stat_row rows[24];
	size_t n;

	cache_stats_get(s, &st);
	n = stat_rows(&st, rows);
	for (size_t i = 0; i < n; i++)
		hs_buf_printf(b,
			      "# HELP hs_cache_%s_total %s\n"
			      "# TYPE hs_cache_%s_total counter\n"
			      "hs_cache_%s_total %llu\n",
			      rows[i].name, rows[i].help, rows[i].name,
			      rows[i].name, (unsigned long long)rows[i].v);
	hs_buf_puts(b, "# HELP hs_cache_breaker_state Circuit breaker per "
		       "memcached server (0 closed, 1 open, 2 half-open)\n"
		       "# TYPE hs_cache_breaker_state gauge\n");
	for (unsigned i = 0; i < s->nbrk; i++)
		hs_buf_printf(b, "hs_cache_breaker_state{server=\"%s\"} %d\n",
			      s->brk[i].name, atomic_load(&s->brk[i].state));
	hs_buf_puts(b, "# HELP hs_cache_fetch_seconds Time in memcached per read\n"
		       "# TYPE hs_cache_fetch_seconds histogram\n");
	hs_hist_prom(b, &s->fetch_hist, "hs_cache_fetch_seconds", "");
}
