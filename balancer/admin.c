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
#include "hs_util.h"

struct bal_admin {
	struct bal_app *app;
	struct evhttp *http;
};

static const char *const class_names[6] = { "none", "1xx", "2xx",
					    "3xx",  "4xx", "5xx" };

void
bal_stats_json(struct bal_app *app, struct hs_buf *out)
{
	struct bal_backend *b;
	int first = 1;

	hs_buf_printf(out,
		      "{\"algorithm\":\"%s\",\"workers\":%d,"
		      "\"connections\":%lld,\"accepted\":%lld,"
		      "\"rejected\":%lld,\"draining\":%s,\"errors\":{",
		      app->policy->name, app->nworkers,
		      (long long)BAL_GET(&app->conns),
		      (long long)BAL_GET(&app->accepted),
		      (long long)BAL_GET(&app->rejected),
		      BAL_GET(&app->draining) ? "true" : "false");
	for (int i = 0; i < BAL_NERR; i++)
		hs_buf_printf(out, "%s\"%d\":%lld", i ? "," : "",
			      bal_err_status[i],
			      (long long)BAL_GET(&app->errors[i]));
	hs_buf_puts(out, "},\"backends\":[");
	TAILQ_FOREACH(b, &app->backends, all) {
		hs_buf_printf(out, "%s{\"name\":", first ? "" : ",");
		first = 0;
		hs_buf_json_str(out, b->name);
		hs_buf_printf(
			out,
			",\"up\":%s,\"removed\":%s,\"weight\":%d,"
			"\"active\":%lld,\"connections\":%lld,"
			"\"requests\":%lld,\"failures\":%lld,\"retries\":%lld,"
			"\"responses\":{",
			BAL_GET(&b->up) ? "true" : "false",
			BAL_GET(&b->removed) ? "true" : "false", b->weight,
			(long long)BAL_GET(&b->active),
			(long long)BAL_GET(&b->conns),
			(long long)BAL_GET(&b->requests),
			(long long)BAL_GET(&b->failures),
			(long long)BAL_GET(&b->retries));
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

void
bal_stats_prom(struct bal_app *app, struct hs_buf *out)
{
	struct bal_backend *b;

	hs_buf_printf(out,
		      "# TYPE hs_balancer_connections gauge\n"
		      "hs_balancer_connections %lld\n"
		      "# TYPE hs_balancer_accepted_total counter\n"
		      "hs_balancer_accepted_total %lld\n"
		      "# TYPE hs_balancer_rejected_total counter\n"
		      "hs_balancer_rejected_total %lld\n",
		      (long long)BAL_GET(&app->conns),
		      (long long)BAL_GET(&app->accepted),
		      (long long)BAL_GET(&app->rejected));
	hs_buf_puts(out, "# TYPE hs_balancer_errors_total counter\n");
	for (int i = 0; i < BAL_NERR; i++)
		hs_buf_printf(out, "hs_balancer_errors_total{status=\"%d\"} %lld\n",
			      bal_err_status[i],
			      (long long)BAL_GET(&app->errors[i]));
	static const char *const gauges[] = { "up", "active_requests",
					      "connections" };
	static const char *const counters[] = { "requests", "failures",
						"retries" };
	for (int g = 0; g < 3; g++) {
		hs_buf_printf(out, "# TYPE hs_balancer_backend_%s gauge\n",
			      gauges[g]);
		TAILQ_FOREACH(b, &app->backends, all) {
			long long v = g == 0   ? BAL_GET(&b->up)
				      : g == 1 ? BAL_GET(&b->active)
					       : BAL_GET(&b->conns);
			hs_buf_printf(out,
				      "hs_balancer_backend_%s{backend=\"%s\"} "
				      "%lld\n",
				      gauges[g], b->name, v);
		}
	}
	for (int k = 0; k < 3; k++) {
		hs_buf_printf(out,
			      "# TYPE hs_balancer_backend_%s_total counter\n",
			      counters[k]);
		TAILQ_FOREACH(b, &app->backends, all) {
			long long v = k == 0   ? BAL_GET(&b->requests)
				      : k == 1 ? BAL_GET(&b->failures)
					       : BAL_GET(&b->retries);
			hs_buf_printf(out,
				      "hs_balancer_backend_%s_total"
				      "{backend=\"%s\"} %lld\n",
				      counters[k], b->name, v);
		}
	}
	hs_buf_puts(out, "# TYPE hs_balancer_backend_responses_total counter\n");
	TAILQ_FOREACH(b, &app->backends, all)
		for (int k = 1; k < 6; k++)
			hs_buf_printf(out,
				      "hs_balancer_backend_responses_total"
				      "{backend=\"%s\",class=\"%s\"} %lld\n",
				      b->name, class_names[k],
				      (long long)BAL_GET(&b->resp[k]));
	hs_buf_puts(out, "# TYPE hs_balancer_backend_latency_seconds "
			 "histogram\n");
	TAILQ_FOREACH(b, &app->backends, all) {
		char labels[BAL_HOST_MAX + 32];
		snprintf(labels, sizeof(labels), "backend=\"%s\"", b->name);
		hs_hist_prom(out, &b->lat, "hs_balancer_backend_latency_seconds",
			     labels);
	}
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
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
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
