/*
 * Request statistics and the observability routes: /healthz, /stats (JSON)
 * and /metrics (Prometheus text exposition).  Recording costs a few relaxed
 * atomic adds; the exports read the same counters without stopping anyone.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hs_metrics.h"
#include "hs_util.h"
#include "cache.h"
#include "db.h"
#include "srv_core.h"
#include "srv_handlers.h"
#include "srv_req.h"
#include "srv_replica.h"
#include "srv_resp.h"
#include "srv_stats.h"
#include "srv_worker.h"

static const char *const route_names[SRV_R_COUNT] = {
	[SRV_R_PLAINTEXT] = "GET /plaintext",
	[SRV_R_JSON] = "GET /json",
	[SRV_R_DB] = "GET /db",
	[SRV_R_QUERIES] = "GET /queries",
	[SRV_R_UPDATES] = "GET /updates",
	[SRV_R_HEALTHZ] = "GET /healthz",
	[SRV_R_STATS] = "GET /stats",
	[SRV_R_CATALOG] = "GET /catalog",
	[SRV_R_METRICS] = "GET /metrics",
	[SRV_R_PRODUCT_GET] = "GET /products/{id}",
	[SRV_R_PRODUCT_PUT] = "PUT /products/{id}",
	[SRV_R_PRODUCT_DELETE] = "DELETE /products/{id}",
	[SRV_R_REVIEW_POST] = "POST /products/{id}/reviews",
	[SRV_R_CATEGORY_TOP] = "GET /categories/{id}/top",
	[SRV_R_CACHED_QUERIES] = "GET /cached-queries",
	[SRV_R_OTHER] = "other",
};

/* "off", "lease" or "naive". */
static const char *
cache_mode(const struct srv *s)
{
	if (s->cfg.cache == NULL)
		return "off";
	return s->cfg.cache_mode ? s->cfg.cache_mode : "lease";
}

/* "off", "ok" or "degraded" (for /healthz). */
static const char *
cache_health_of(const struct srv *s)
{
	return s->cfg.cache ? cache_health(s->cfg.cache) : "off";
}

const char *
srv_route_name(enum srv_route r)
{
	return (unsigned)r < SRV_R_COUNT ? route_names[r] : "other";
}

void
srv_stats_record(struct srv *s, enum srv_route route, int status, uint64_t us)
{
	struct srv_stats *st = &s->stats;

	if ((unsigned)route >= SRV_R_COUNT)
		route = SRV_R_OTHER;
	if (status >= 100 && status < 600) {
		__atomic_fetch_add(&st->by_class[route][status / 100], 1,
				   __ATOMIC_RELAXED);
		__atomic_fetch_add(&st->by_status[status], 1, __ATOMIC_RELAXED);
	}
	hs_hist_record(&st->latency[route], us);
}

static uint64_t
ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/*
 * PRAGMA synchronous read back from this thread's connection, as the
 * --durability value that sets it.
 */
static const char *
stats_durability(struct srv_worker *w)
{
	struct db *db = srv_worker_db(w);

	switch (db ? db_synchronous(db) : -1) {
	case 1:
		return "normal";
	case 2:
		return "full";
	default:
		return "unknown";
	}
}

void
srv_h_healthz(struct srv_ctx *c, struct srv_resp *r)
{
	struct db *db = srv_worker_db(c->w);
	int32_t n;
	/*
	 * The file at the path must still be the one open (else not ready
	 * and reopened), then a real (cheap) query: an open handle alone
	 * proves little.
	 */
	int res = db ? db_check(db) : DB_ERR;
	int ok;

	if (res == DB_OK)
		res = db_world_get(db, 1, &n);
	ok = res == DB_OK || res == DB_NOTFOUND;

	if (ok) {
		r->status = 200;
		hs_buf_puts(&r->body, "{\"status\":\"ok\",\"db\":\"ok\",");
	} else {
		/* Logs, counts and sets Retry-After; the body is ours. */
		srv_db_fail(c->w, r, res, "health check",
			    "database unavailable");
		r->status = 503;
		hs_buf_reset(&r->body);
		hs_buf_puts(&r->body, "{\"status\":\"error\",\"db\":\"error\","
				      "\"error\":\"database unavailable\",");
	}
	/* memcached down is "degraded", not unready: reads bypass it. */
	hs_buf_printf(&r->body,
		      "\"cache\":\"%s\",\"id\":", cache_health_of(c->srv));
	hs_buf_json_str(&r->body, c->srv->cfg.id);
	hs_buf_puts(&r->body, "}");
}

/*
 * The id ranges of the seeded catalog (products 1..N, categories 1..N,
 * counted at start), so that a load generator in front of any stack, even
 * through hs-balancer, draws ids that exist.
 */
void
srv_h_catalog(struct srv_ctx *c, struct srv_resp *r)
{
	r->status = 200;
	hs_buf_printf(&r->body,
		      "{\"products\":%" PRId64 ",\"categories\":%" PRId64 "}",
		      c->srv->cfg.products, c->srv->cfg.categories);
}

/*
 * Re-indents the JSON document in b for a reader (/stats?pretty=1); the
 * compact form is what tools parse, so only this path pays for jansson.
 */
static void
json_indent(struct hs_buf *b)
{
	json_t *j = json_loadb(b->data, b->len, 0, NULL);
	char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER |
					       JSON_REAL_PRECISION(15))
		       : NULL;

	if (text != NULL) {
		hs_buf_reset(b);
		hs_buf_puts(b, text);
	}
	free(text);
	json_decref(j);
}

/* The /stats object a row of srv_metrics.h belongs to. */
enum srv_group { SRV_G_TOP, SRV_G_DB, SRV_G_CACHE, SRV_G_REPL };

/* The values the D rows of srv_metrics.h read: those kept elsewhere. */
struct srv_snap {
	uint64_t uptime_ns, threads, requests, open_conns, refused;
	uint64_t head_timeouts, db_queries, db_time_ns, db_workers;
	uint64_t db_threads;
};

#define SRV_ONE(...) +1
enum { SRV_NROWS = 0 SRV_METRICS(SRV_ONE, SRV_ONE) };
#undef SRV_ONE

static const char *const cls[6] = { "", "1xx", "2xx", "3xx", "4xx", "5xx" };

static void
snap_take(struct srv *s, struct srv_snap *v)
{
	int nworkers;

	memset(v, 0, sizeof(*v));
	v->uptime_ns = hs_now_ns() - s->started_ns;
	v->threads = (uint64_t)s->cfg.threads;
	for (int i = 100; i < 600; i++)
		v->requests += ld(&s->stats.by_status[i]);
	v->open_conns = __atomic_load_n(&s->open_conns, __ATOMIC_RELAXED);
	v->refused = ld(&s->refused);
	v->head_timeouts = ld(&s->head_timeouts);
	srv_db_totals(s, &v->db_queries, &v->db_time_ns, &nworkers);
	v->db_workers = (uint64_t)nworkers;
	v->db_threads = (uint64_t)s->cfg.db_threads;
}

/* The rows of group g in list order, into r[SRV_NROWS]; returns how many. */
static size_t
srv_rows(struct srv *s, const struct srv_snap *v, enum srv_group g,
	 struct hs_metric *r)
{
	const struct srv_stats *st = &s->stats;
	size_t n = 0;

#define SRV_ROW(val, grp, json, prom, type, unit, help)                 \
	if (g == SRV_G_##grp)                                           \
		r[n++] = (struct hs_metric){ json,           prom,      \
					     help,           HS_##type, \
					     HS_UNIT_##unit, NULL,      \
					     (int64_t)(val) };
#define SRV_ROW_S(f, ...) SRV_ROW(ld(&st->f), __VA_ARGS__)
	SRV_METRICS(SRV_ROW_S, SRV_ROW)
#undef SRV_ROW_S
#undef SRV_ROW
	return n;
}

void
srv_h_stats(struct srv_ctx *c, struct srv_resp *r)
{
	struct srv *s = c->srv;
	struct srv_stats *st = &s->stats;
	struct hs_buf *b = &r->body;
	struct hs_metric rows[SRV_NROWS];
	struct srv_snap v;
	const char *pretty;
	size_t nr;

	snap_take(s, &v);
	hs_buf_puts(b, "{\"id\":");
	hs_buf_json_str(b, s->cfg.id);
	hs_buf_printf(b, ",\"cache_mode\":\"%s\"", cache_mode(s));
	nr = srv_rows(s, &v, SRV_G_TOP, rows);
	hs_metrics_json(b, rows, nr, 0);
	/* How connections are served; "busy": blocking workers holding a
	   connection (the rest of the clients wait in the listen backlog). */
	if (s->cfg.io == SRV_IO_BLOCKING)
		hs_buf_printf(b,
			      ",\"io\":{\"model\":\"blocking\","
			      "\"workers\":%d,\"busy\":%u}",
			      s->cfg.threads,
			      __atomic_load_n(&s->blocking_busy,
					      __ATOMIC_RELAXED));
	else
		hs_buf_puts(b, ",\"io\":{\"model\":\"event\"}");
	/* An object in every mode; its "mode" says lease, naive or off.  Our
	   own timers are its last members. */
	hs_buf_puts(b, ",\"cache\":");
	nr = srv_rows(s, &v, SRV_G_CACHE, rows);
	if (s->cfg.cache != NULL) {
		cache_stats_json(s->cfg.cache, b, rows, nr);
	} else {
		hs_buf_puts(b, "{\"mode\":\"off\",\"health\":\"off\","
			       "\"hits\":0,\"misses\":0");
		hs_metrics_json(b, rows, nr, 0);
		hs_buf_puts(b, "}");
	}
	hs_buf_puts(b, ",\"db\":{");
	nr = srv_rows(s, &v, SRV_G_DB, rows);
	hs_metrics_json(b, rows, nr, 1);
	hs_buf_printf(b, ",\"durability\":\"%s\"", stats_durability(c->w));
	nr = srv_rows(s, &v, SRV_G_REPL, rows);
	srv_replicas_stats(c->w, b, rows, nr);
	hs_buf_puts(b, "}");
	hs_buf_printf(b,
		      ",\"data\":{\"products\":%" PRId64
		      ",\"categories\":%" PRId64 "}",
		      s->cfg.products, s->cfg.categories);
	hs_buf_puts(b, ",\"status\":{");
	int first = 1;
	for (int i = 100; i < 600; i++) {
		uint64_t n = ld(&st->by_status[i]);

		if (n == 0)
			continue;
		hs_buf_printf(b, "%s\"%d\":%" PRIu64, first ? "" : ",", i, n);
		first = 0;
	}
	hs_buf_puts(b, "},\"routes\":{");
	first = 1;
	for (int rt = 0; rt < SRV_R_COUNT; rt++) {
		uint64_t n = 0;

		for (int k = 1; k < 6; k++)
			n += ld(&st->by_class[rt][k]);
		if (n == 0)
			continue;
		hs_buf_printf(b, "%s", first ? "" : ",");
		first = 0;
		hs_buf_json_str(b, route_names[rt]);
		hs_buf_printf(b, ":{\"requests\":%" PRIu64 ",\"status\":{", n);
		int f2 = 1;
		for (int k = 1; k < 6; k++) {
			uint64_t m = ld(&st->by_class[rt][k]);

			if (m == 0)
				continue;
			hs_buf_printf(b, "%s\"%s\":%" PRIu64, f2 ? "" : ",",
				      cls[k], m);
			f2 = 0;
		}
		hs_buf_puts(b, "},\"latency\":");
		hs_hist_json(b, &st->latency[rt]);
		hs_buf_puts(b, "}");
	}
	hs_buf_puts(b, "}}");
	r->status = 200;
	pretty = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND,
					     "pretty");
	if (pretty != NULL && strcmp(pretty, "0") != 0)
		json_indent(b);
}

void
srv_h_metrics(struct srv_ctx *c, struct srv_resp *r)
{
	struct srv *s = c->srv;
	struct srv_stats *st = &s->stats;
	struct hs_buf *b = &r->body;
	struct hs_metric rows[SRV_NROWS];
	struct srv_snap v;
	char labels[128];
	size_t n;

	snap_take(s, &v);
	hs_metrics_prom_head(b, "hs_", "info", "Instance of hs-server.",
			     "gauge");
	hs_buf_puts(b, "hs_info{id=");
	hs_buf_json_str(b, s->cfg.id);
	hs_buf_printf(b, ",cache=\"%s\"} 1\n", cache_mode(s));
	n = srv_rows(s, &v, SRV_G_TOP, rows);
	hs_metrics_prom(b, "hs_", rows, n);
	n = srv_rows(s, &v, SRV_G_DB, rows);
	hs_metrics_prom(b, "hs_", rows, n);
	if (s->reps != NULL) {
		n = srv_rows(s, &v, SRV_G_REPL, rows);
		hs_metrics_prom(b, "hs_", rows, n);
		srv_replicas_prom(c->w, b);
	}
	if (s->cfg.cache != NULL) {
		cache_stats_prom(s->cfg.cache, b);
		n = srv_rows(s, &v, SRV_G_CACHE, rows);
		hs_metrics_prom(b, "hs_", rows, n);
	}
	hs_metrics_prom_head(b, "hs_", "requests_total",
			     "Requests by route and status class.", "counter");
	for (int rt = 0; rt < SRV_R_COUNT; rt++)
		for (int k = 1; k < 6; k++) {
			uint64_t m = ld(&st->by_class[rt][k]);

			if (m == 0)
				continue;
			hs_buf_printf(
				b,
				"hs_requests_total{route=\"%s\",code=\"%s\"} "
				"%" PRIu64 "\n",
				route_names[rt], cls[k], m);
		}
	hs_metrics_prom_head(b, "hs_", "responses_total",
			     "Responses by status.", "counter");
	for (int i = 100; i < 600; i++) {
		uint64_t m = ld(&st->by_status[i]);

		if (m)
			hs_buf_printf(b,
				      "hs_responses_total{status=\"%d\"} %" PRIu64
				      "\n",
				      i, m);
	}
	hs_metrics_prom_head(b, "hs_", "request_duration_seconds",
			     "Time to answer, by route.", "histogram");
	for (int rt = 0; rt < SRV_R_COUNT; rt++) {
		if (hs_hist_count(&st->latency[rt]) == 0)
			continue;
		snprintf(labels, sizeof(labels), "route=\"%s\"",
			 route_names[rt]);
		hs_hist_prom(b, &st->latency[rt], "hs_request_duration_seconds",
			     labels);
	}
	r->status = 200;
	r->ctype = "text/plain; version=0.0.4; charset=utf-8";
}
