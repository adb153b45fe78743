/*
 * Response helpers shared by the handlers: JSON error bodies, the mapping
 * of data-layer failures to 503 / 404, request-body parsing (Content-Type
 * check, then jansson).  The cache step of cacheable GETs is in cached.c.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "hs_log.h"
#include "db.h"
#include "srv_core.h"
#include "srv_req.h"
#include "srv_resp.h"
#include "srv_worker.h"

int
srv_error_body(struct hs_buf *out, int status, const char *msg)
{
	hs_buf_reset(out);
	hs_buf_puts(out, "{\"error\":");
	hs_buf_json_str(out, msg);
	hs_buf_printf(out, ",\"status\":%d}", status);
	return status;
}

void
srv_error(struct srv_resp *r, int status, const char *msg)
{
	r->status = srv_error_body(&r->body, status, msg);
	r->ctype = "application/json";
	if (status == 503)
		r->retry_after = 1;
}

int
srv_db_fail_body(struct srv_worker *w, int res, const char *what,
		 const char *notfound_msg, struct hs_buf *out)
{
	if (res == DB_NOTFOUND)
		return srv_error_body(out, 404, notfound_msg);
	__atomic_fetch_add(&w->srv->stats.db_errors, 1, __ATOMIC_RELAXED);
	if (res == DB_BUSY) {
		log_error_rl("%s: database busy past the timeout: %s", what,
			     w->db ? db_errmsg(w->db) : "no connection");
		return srv_error_body(out, 503, "database busy");
	}
	if (res == DB_MOVED) {
		/* Nothing was written; the next request opens the path again. */
		log_error_rl("%s: %s: reopening", what, db_errmsg(w->db));
		srv_worker_db_reset(w);
		return srv_error_body(out, 503, "database file replaced");
	}
	log_error_rl("%s: database error: %s", what,
		     w->db ? db_errmsg(w->db) : "cannot open the database");
	/* A broken connection (file replaced, I/O error) is reopened next time. */
	srv_worker_db_reset(w);
	return srv_error_body(out, 503, "database unavailable");
}

void
srv_db_fail(struct srv_worker *w, struct srv_resp *r, int res, const char *what,
	    const char *notfound_msg)
{
	r->status = srv_db_fail_body(w, res, what, notfound_msg, &r->body);
	if (r->status == 503)
		r->retry_after = 1;
}

void
srv_json_avg(struct hs_buf *b, double v)
{
	hs_buf_printf(b, "%.15g", round(v * 100.0) / 100.0);
}

/* application/json, optionally followed by parameters (; charset=utf-8). */
static int
is_json_type(const char *ct)
{
	static const char want[] = "application/json";
	size_t n = sizeof(want) - 1;

	if (ct == NULL)
		return 0;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	if (strncasecmp(ct, want, n) != 0)
		return 0;
	ct += n;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	return *ct == '\0' || *ct == ';';
}

json_t *
srv_parse_json_object(struct srv_ctx *c, struct srv_resp *r)
{
	const char *ct =
		MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
					    MHD_HTTP_HEADER_CONTENT_TYPE);
	json_error_t jerr;
	json_t *j;
	char msg[256];

	if (!is_json_type(ct)) {
		srv_error(r, 415, "Content-Type must be application/json");
		return NULL;
	}
	j = json_loadb(c->rq->body.data ? c->rq->body.data : "",
		       c->rq->body.len,
		       JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (j == NULL) {
		snprintf(msg, sizeof(msg), "malformed JSON: %s", jerr.text);
		srv_error(r, 400, msg);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		srv_error(r, 422, "the body must be a JSON object");
		return NULL;
	}
	return j;
}
