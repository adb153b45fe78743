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

#include "hs_util.h"
#include "srv_int.h"

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
		srv_db_fail(c->w, r, res, "health check", "database unavailable");
		r->status = 503;
		hs_buf_reset(&r->body);
		hs_buf_puts(&r->body, "{\"status\":\"error\",\"db\":\"error\","
				      "\"error\":\"database unavailable\",");
	}
	/* memcached down is "degraded", not unready: reads bypass it. */
	hs_buf_printf(&r->body, "\"cache\":\"%s\",\"id\":",
		      srv_cache_health(c->srv));
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
	hs_buf_printf(&r->body, "{\"products\":%" PRId64
		      ",\"categories\":%" PRId64 "}",
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

void
srv_h_stats(struct srv_ctx *c, struct srv_resp *r)
{
	struct srv *s = c->srv;
	struct srv_stats *st = &s->stats;
	struct hs_buf *b = &r->body;
	const char *pretty;
	uint64_t q, t, total = 0;
	int nworkers;
	static const char *const cls[6] = { "", "1xx", "2xx", "3xx", "4xx",
					    "5xx" };

	srv_db_totals(s, &q, &t, &nworkers);
	for (int i = 100; i < 600; i++)
		total += ld(&st->by_status[i]);
	hs_buf_puts(b, "{\"id\":");
	hs_buf_json_str(b, s->cfg.id);
	hs_buf_printf(b,
		      ",\"uptime_s\":%.3f,\"threads\":%d,\"cache_mode\":\"%s\","
		      "\"requests\":%" PRIu64 ",\"inflight\":%" PRIu64
		      ",\"connections\":%u,\"connections_refused\":%" PRIu64
		      ",\"head_timeouts\":%" PRIu64,
		      (double)(hs_now_ns() - s->started_ns) / 1e9,
		      s->cfg.threads, srv_cache_mode(s), total,
		      ld(&st->inflight),
		      __atomic_load_n(&s->open_conns, __ATOMIC_RELAXED),
		      ld(&s->refused), ld(&s->head_timeouts));
	/* How connections are served; "busy": blocking workers holding a
	   connection (the rest of the clients wait in the listen backlog). */
	if (s->cfg.io == SRV_IO_BLOCKING)
		hs_buf_printf(b, ",\"io\":{\"model\":\"blocking\","
			      "\"workers\":%d,\"busy\":%u}", s->cfg.threads,
			      srv_blocking_busy(s->blocking));
	else
		hs_buf_puts(b, ",\"io\":{\"model\":\"event\"}");
	/* An object in every mode; its "mode" says lease, naive or off. */
	hs_buf_puts(b, ",\"cache\":");
	srv_cache_stats_json(s, b);
	hs_buf_printf(b,
		      ",\"db\":{\"queries\":%" PRIu64 ",\"time_ms\":%.3f,"
		      "\"errors\":%" PRIu64 ",\"workers\":%d,\"threads\":%d,"
		      "\"jobs\":%" PRIu64 ",\"queue_ms\":%.3f,"
		      "\"durability\":\"%s\"}",
		      q, (double)t / 1e6, ld(&st->db_errors), nworkers,
		      s->cfg.db_threads, ld(&st->db_jobs),
		      (double)ld(&st->db_queue_ns) / 1e6, stats_durability(c->w));
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
	uint64_t q, t;
	char labels[128];
	static const char *const cls[6] = { "", "1xx", "2xx", "3xx", "4xx",
					    "5xx" };

	srv_db_totals(s, &q, &t, NULL);
	hs_buf_puts(b, "# HELP hs_info Instance of hs-server.\n"
		       "# TYPE hs_info gauge\nhs_info{id=");
	hs_buf_json_str(b, s->cfg.id);
	hs_buf_printf(b, ",cache=\"%s\"} 1\n", srv_cache_mode(s));
	hs_buf_printf(b,
		      "# HELP hs_uptime_seconds Seconds since start.\n"
		      "# TYPE hs_uptime_seconds gauge\nhs_uptime_seconds %.3f\n",
		      (double)(hs_now_ns() - s->started_ns) / 1e9);
	hs_buf_printf(b,
		      "# HELP hs_inflight_requests Requests being served.\n"
		      "# TYPE hs_inflight_requests gauge\n"
		      "hs_inflight_requests %" PRIu64 "\n"
		      "# HELP hs_open_connections Client connections open.\n"
		      "# TYPE hs_open_connections gauge\n"
		      "hs_open_connections %u\n"
		      "# HELP hs_connections_refused_total Clients answered "
		      "503 at --max-conns or --max-conns-per-ip.\n"
		      "# TYPE hs_connections_refused_total counter\n"
		      "hs_connections_refused_total %" PRIu64 "\n"
		      "# HELP hs_head_timeouts_total Connections closed with "
		      "408: no request head within --header-timeout-ms.\n"
		      "# TYPE hs_head_timeouts_total counter\n"
		      "hs_head_timeouts_total %" PRIu64 "\n",
		      ld(&st->inflight),
		      __atomic_load_n(&s->open_conns, __ATOMIC_RELAXED),
		      ld(&s->refused), ld(&s->head_timeouts));
	hs_buf_printf(b,
		      "# HELP hs_db_queries_total SQL statements run.\n"
		      "# TYPE hs_db_queries_total counter\n"
		      "hs_db_queries_total %" PRIu64 "\n"
		      "# HELP hs_db_time_seconds_total Time spent in SQLite.\n"
		      "# TYPE hs_db_time_seconds_total counter\n"
		      "hs_db_time_seconds_total %.6f\n"
		      "# HELP hs_db_errors_total Requests answered 503 after a "
		      "database failure.\n"
		      "# TYPE hs_db_errors_total counter\n"
		      "hs_db_errors_total %" PRIu64 "\n"
		      "# HELP hs_db_jobs_total Requests run on the database "
		      "threads.\n"
		      "# TYPE hs_db_jobs_total counter\n"
		      "hs_db_jobs_total %" PRIu64 "\n"
		      "# HELP hs_db_queue_seconds_total Time requests waited "
		      "for a database thread.\n"
		      "# TYPE hs_db_queue_seconds_total counter\n"
		      "hs_db_queue_seconds_total %.6f\n",
		      q, (double)t / 1e9, ld(&st->db_errors), ld(&st->db_jobs),
		      (double)ld(&st->db_queue_ns) / 1e9);
	srv_cache_stats_prom(s, b);
	hs_buf_puts(b, "# HELP hs_requests_total Requests by route and status "
		       "class.\n# TYPE hs_requests_total counter\n");
	for (int rt = 0; rt < SRV_R_COUNT; rt++)
		for (int k = 1; k < 6; k++) {
			uint64_t m = ld(&st->by_class[rt][k]);

			if (m == 0)
				continue;
			hs_buf_printf(b,
				      "hs_requests_total{route=\"%s\",code=\"%s\"} "
				      "%" PRIu64 "\n",
				      route_names[rt], cls[k], m);
		}
	hs_buf_puts(b, "# HELP hs_responses_total Responses by status.\n"
		       "# TYPE hs_responses_total counter\n");
	for (int i = 100; i < 600; i++) {
		uint64_t m = ld(&st->by_status[i]);

		if (m)
			hs_buf_printf(b,
				      "hs_responses_total{status=\"%d\"} %" PRIu64
				      "\n",
				      i, m);
	}
	hs_buf_puts(b, "# HELP hs_request_duration_seconds Time to answer, "
		       "by route.\n"
		       "# TYPE hs_request_duration_seconds histogram\n");
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
