/*
 * The admin listener: GET /stats (JSON) and GET /metrics (Prometheus text)
 * over the counters of every backend ever configured (removed ones say so)
 * and the global connection counters.  libevent's evhttp serves it: this
 * port is for operators, not the proxied traffic, so its lenient parser is
 * acceptable here.
 */
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bal.h"
#include "hs_buf.h"
#include "hs_log.h"
#include "hs_metrics.h"
#include "hs_util.h"

struct bal_admin {
	struct bal_app *app;
	struct evhttp *http;
};

static const char *const class_names[6] = { "none", "1xx", "2xx",
					    "3xx",  "4xx", "5xx" };

/* The BAL_COUNTERS / BAL_BACKEND_COUNTERS rows of one object (p->f). */
#define BAL_ROW(f, ctype, json, prom, type, unit, help) \
	r[n++] = (struct hs_metric){ json,              \
				     prom,              \
				     help,              \
				     HS_##type,         \
				     HS_UNIT_##unit,    \
				     labels,            \
				     (int64_t)BAL_GET(&p->f) };

static size_t
app_rows(struct bal_app *p, struct hs_metric *r)
{
	const char *labels = NULL;
	size_t n = 0;

	BAL_COUNTERS(BAL_ROW)
	return n;
}

/* labels: the backend's, for /metrics (NULL for /stats). */
static size_t
backend_rows(struct bal_backend *p, const char *labels, struct hs_metric *r)
{
	size_t n = 0;

	BAL_BACKEND_COUNTERS(BAL_ROW)
	return n;
}
#undef BAL_ROW

#define BAL_ONE(...) +1
enum {
	BAL_NROWS = 0 BAL_COUNTERS(BAL_ONE),
	BAL_NBROWS = 0 BAL_BACKEND_COUNTERS(BAL_ONE),
};
#undef BAL_ONE

void
bal_stats_json(struct bal_app *app, struct hs_buf *out)
{
	struct hs_metric rows[BAL_NROWS > BAL_NBROWS ? BAL_NROWS : BAL_NBROWS];
	struct bal_backend *b;
	int first = 1;

	hs_buf_printf(out, "{\"algorithm\":\"%s\",\"workers\":%d",
		      app->policy->name, app->nworkers);
	hs_metrics_json(out, rows, app_rows(app, rows), 0);
	hs_buf_puts(out, ",\"errors\":{");
	for (int i = 0; i < BAL_NERR; i++)
		hs_buf_printf(out, "%s\"%d\":%lld", i ? "," : "",
			      bal_err_status[i],
			      (long long)BAL_GET(&app->errors[i]));
	hs_buf_puts(out, "},\"backends\":[");
	TAILQ_FOREACH(b, &app->backends, all)
	{
		hs_buf_printf(out, "%s{\"name\":", first ? "" : ",");
		first = 0;
		hs_buf_json_str(out, b->name);
		hs_metrics_json(out, rows, backend_rows(b, NULL, rows), 0);
		hs_buf_puts(out, ",\"responses\":{");
		for (int k = 1; k < 6; k++)
			hs_buf_printf(out, "%s\"%s\":%lld", k > 1 ? "," : "",
				      class_names[k],
				      (long long)BAL_GET(&b->resp[k]));
		hs_buf_puts(out, "},\"latency\":");
		hs_hist_json(out, &b->lat);
		hs_buf_puts(out, "}");
	}
	hs_buf_puts(out, "]}\n");
}

typedef char bal_label[BAL_HOST_MAX + 48];

/*
 * Families must be contiguous in Prometheus text, so the per-backend rows
 * are gathered column by column: row k of every backend, then row k + 1.
 */
void
bal_stats_prom(struct bal_app *app, struct hs_buf *out)
{
	struct hs_metric rows[BAL_NROWS > BAL_NBROWS ? BAL_NROWS : BAL_NBROWS];
	struct bal_backend *b;
	size_t nb = 0, i;
	struct hs_metric *fam;
	bal_label *lab;

	TAILQ_FOREACH(b, &app->backends, all)
	nb++;
	fam = hs_xcalloc(nb * 5 + BAL_NERR, sizeof(*fam));
	lab = hs_xcalloc(nb * 6 + BAL_NERR, sizeof(*lab));
	hs_metrics_prom(out, "hs_balancer_", rows, app_rows(app, rows));
	for (i = 0; i < BAL_NERR; i++) {
		snprintf(lab[i], sizeof(lab[i]), "status=\"%d\"",
			 bal_err_status[i]);
		fam[i] = (struct hs_metric){
			NULL,
			"errors_total",
			"Error answers made by the balancer itself, by status.",
			HS_COUNTER,
			HS_UNIT_COUNT,
			lab[i],
			BAL_GET(&app->errors[i])
		};
	}
	hs_metrics_prom(out, "hs_balancer_", fam, BAL_NERR);
	i = 0;
	TAILQ_FOREACH(b, &app->backends, all)
	snprintf(lab[i++], sizeof(lab[0]), "backend=\"%s\"", b->name);
	for (int k = 0; k < BAL_NBROWS; k++) {
		i = 0;
		TAILQ_FOREACH(b, &app->backends, all)
		{
			backend_rows(b, lab[i], rows);
			fam[i++] = rows[k];
		}
		hs_metrics_prom(out, "hs_balancer_", fam, i);
	}
	i = 0;
	TAILQ_FOREACH(b, &app->backends, all)
	for (int k = 1; k < 6; k++, i++) {
		snprintf(lab[nb + i], sizeof(lab[0]),
			 "backend=\"%s\",class=\"%s\"", b->name,
			 class_names[k]);
		fam[i] = (struct hs_metric){
			NULL,
			"backend_responses_total",
			"Responses from the backend, by status class.",
			HS_COUNTER,
			HS_UNIT_COUNT,
			lab[nb + i],
			BAL_GET(&b->resp[k])
		};
	}
	hs_metrics_prom(out, "hs_balancer_", fam, i);
	hs_metrics_prom_head(out, "hs_balancer_", "backend_latency_seconds",
			     "Time to the backend's answer, by backend.",
			     "histogram");
	TAILQ_FOREACH(b, &app->backends, all)
	{
		char labels[BAL_HOST_MAX + 32];
		snprintf(labels, sizeof(labels), "backend=\"%s\"", b->name);
		hs_hist_prom(out, &b->lat,
			     "hs_balancer_backend_latency_seconds", labels);
	}
	free(lab);
	free(fam);
}

static void
send_buf(struct evhttp_request *req, int code, const char *ctype,
	 struct hs_buf *b)
{
	struct evbuffer *eb = evbuffer_new();

	evbuffer_add(eb, b->data, b->len);
	evhttp_add_header(evhttp_request_get_output_headers(req),
			  "Content-Type", ctype);
	evhttp_send_reply(req, code, code == 200 ? "OK" : "Not Found", eb);
	evbuffer_free(eb);
}

static void
admin_cb(struct evhttp_request *req, void *arg)
{
	struct bal_admin *a = arg;
	const char *path =
		evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	struct hs_buf b = HS_BUF_INIT;

	if (path != NULL && strcmp(path, "/stats") == 0) {
		bal_stats_json(a->app, &b);
		send_buf(req, 200, "application/json", &b);
	} else if (path != NULL && strcmp(path, "/metrics") == 0) {
		bal_stats_prom(a->app, &b);
		send_buf(req, 200, "text/plain; version=0.0.4", &b);
	} else {
		hs_buf_puts(&b, "{\"error\":\"not found\",\"status\":404}\n");
		send_buf(req, 404, "application/json", &b);
	}
	hs_buf_free(&b);
}

struct bal_admin *
bal_admin_new(struct bal_app *app, const char *host, int port, int *bound)
{
	struct bal_admin *a = hs_xcalloc(1, sizeof(*a));
	int fd = -1;

	a->app = app;
	a->http = evhttp_new(app->base);
	if (a->http == NULL)
		goto fail;
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(a->http, admin_cb, a);
	if ((fd = hs_listen_tcp(host, port, 128, 1, bound)) < 0) {
		log_error("cannot listen on %s:%d (admin): %s", host, port,
			  strerror(errno));
		goto fail;
	}
	if (evhttp_accept_socket(a->http, fd) < 0) {
		log_warnx("evhttp_accept_socket failed");
		close(fd);
		goto fail;
	}
	return a;
fail:
	bal_admin_free(a);
	return NULL;
}

void
bal_admin_free(struct bal_admin *a)
{
	if (a == NULL)
		return;
	if (a->http)
		evhttp_free(a->http);
	free(a);
}
