/* Response helpers (resp.c): JSON errors, database failures, bodies. */
#ifndef HS_SRV_RESP_H
#define HS_SRV_RESP_H

#include "hs_buf.h"
#include "srv_req.h"

/* Sets r to the JSON error {"error": msg, "status": status}. */
void srv_error(struct srv_resp *r, int status, const char *msg);
/* Appends a JSON error body to out; returns status (for body builders). */
int srv_error_body(struct hs_buf *out, int status, const char *msg);
/*
 * Maps a failed db_* result to a response: DB_BUSY / DB_MOVED / DB_ERR ->
 * 503 with Retry-After (logged, counted; after DB_MOVED and DB_ERR the
 * thread's connection is closed and reopened on its next request),
 * DB_NOTFOUND -> 404 with notfound_msg.  Returns the status.
 */
int srv_db_fail_body(struct srv_worker *w, int res, const char *what,
		     const char *notfound_msg, struct hs_buf *out);
void srv_db_fail(struct srv_worker *w, struct srv_resp *r, int res,
		 const char *what, const char *notfound_msg);
/* Appends a number rounded to 2 decimals, shortest form. */
void srv_json_avg(struct hs_buf *b, double v);
/*
 * Checks the request's Content-Type is application/json and parses body
 * as a JSON object.  On failure fills r (415 / 400 / 422) and returns NULL.
 * The caller json_decref()s the result.
 */
struct json_t;
struct json_t *srv_parse_json_object(struct srv_ctx *c, struct srv_resp *r);

#endif
