/*
 * The cache's counters and their exports (JSON for /stats, Prometheus text
 * for /metrics).  The circuit breaker itself is in breaker.c.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_int.h"
#include "hs_log.h"
#include "hs_util.h"

void
cache_stats_get(struct cache_shared *s, struct cache_stats *out)
{
#define CACHE_LD(f, h) \
	out->f = atomic_load_explicit(&s->cnt.f, memory_order_relaxed);
	CACHE_COUNTERS(CACHE_LD)
#undef CACHE_LD
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

/* The counters as rows for the writer; JSON "name", hs_cache_name_total. */
#define CACHE_ROW(f, h) \
	{ #f, #f "_total", h, HS_COUNTER, HS_UNIT_COUNT, NULL, 0 },
static const struct hs_metric cache_rows[] = { CACHE_COUNTERS(CACHE_ROW) };
#undef CACHE_ROW
#define CACHE_NROWS (sizeof(cache_rows) / sizeof(cache_rows[0]))

static void
stat_rows(const struct cache_stats *st, struct hs_metric *r)
{
	size_t n = 0;

	memcpy(r, cache_rows, sizeof(cache_rows));
#define CACHE_VAL(f, h) r[n++].value = (int64_t)st->f;
	CACHE_COUNTERS(CACHE_VAL)
#undef CACHE_VAL
}

void
cache_stats_json(struct cache_shared *s, struct hs_buf *b,
		 const struct hs_metric *extra, size_t n)
{
	struct cache_stats st;
	struct hs_metric rows[CACHE_NROWS];
	uint64_t reads;

	cache_stats_get(s, &st);
	stat_rows(&st, rows);
	hs_buf_printf(b, "{\"mode\":\"%s\",\"health\":\"%s\"",
		      cache_mode_name(s->o.mode), cache_health(s));
	hs_metrics_json(b, rows, CACHE_NROWS, 0);
	reads = st.hits + st.misses + st.bypasses;
	hs_buf_printf(b, ",\"hit_ratio\":%.4f",
		      reads ? (double)st.hits / (double)reads : 0.0);
	hs_buf_printf(b, ",\"fetch_us_p50\":%llu,\"fetch_us_p99\":%llu",
		      (unsigned long long)hs_hist_quantile(&s->fetch_hist, 0.5),
		      (unsigned long long)hs_hist_quantile(&s->fetch_hist,
							   0.99));
	hs_buf_puts(b, ",\"servers\":[");
	for (unsigned i = 0; i < s->nbrk; i++) {
		hs_buf_printf(b, "%s{\"server\":", i ? "," : "");
		hs_buf_json_str(b, s->brk[i].name);
		hs_buf_printf(b, ",\"breaker\":\"%s\"}",
			      cache_brk_state_name(
				      atomic_load(&s->brk[i].state)));
	}
	hs_buf_puts(b, "]");
	hs_metrics_json(b, extra, n, 0);
	hs_buf_puts(b, "}");
}

void
cache_stats_prom(struct cache_shared *s, struct hs_buf *b)
{
	struct cache_stats st;
	struct hs_metric rows[CACHE_NROWS];
	unsigned nb = s->nbrk ? s->nbrk : 1;
	struct hs_metric *brk = hs_xcalloc(nb, sizeof(*brk));
	char(*labels)[sizeof(s->brk[0].name) + 16] =
		hs_xcalloc(nb, sizeof(*labels));

	cache_stats_get(s, &st);
	stat_rows(&st, rows);
	hs_metrics_prom(b, "hs_cache_", rows, CACHE_NROWS);
	for (unsigned i = 0; i < s->nbrk; i++) {
		snprintf(labels[i], sizeof(labels[i]), "server=\"%s\"",
			 s->brk[i].name);
		brk[i] = (struct hs_metric){
			NULL,
			"breaker_state",
			"Circuit breaker per memcached "
			"server (0 closed, 1 open, 2 half-open)",
			HS_GAUGE,
			HS_UNIT_COUNT,
			labels[i],
			atomic_load(&s->brk[i].state)
		};
	}
	hs_metrics_prom(b, "hs_cache_", brk, s->nbrk);
	free(labels);
	free(brk);
	hs_metrics_prom_head(b, "hs_cache_", "fetch_seconds",
			     "Time in memcached per read", "histogram");
	hs_hist_prom(b, &s->fetch_hist, "hs_cache_fetch_seconds", "");
}
