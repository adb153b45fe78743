/*
 * Product and category routes: the two cacheable reads (product detail,
 * category top list) as key -> (status, body) builders, and the writes
 * (PUT, POST review, DELETE) with their input validation.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "cache.h"
#include "hs_log.h"
#include "db.h"
#include "srv_cached.h"
#include "srv_handlers.h"
#include "srv_req.h"
#include "srv_resp.h"
#include "srv_worker.h"

/* A write committed: reads of the product and its category wait for
   replicas to replay it (srv_replica.h). */
static void
mark_written(struct srv_ctx *c, int64_t product_id, int64_t category_id)
{
	uint64_t keys[2] = { srv_key_product(product_id),
			     srv_key_category(category_id) };

	srv_read_wrote(c->w, keys, 2);
}

static void
product_fields(struct hs_buf *b, const struct db_product *p)
{
	hs_buf_printf(b, "\"id\":%lld,\"category_id\":%lld,\"name\":",
		      (long long)p->id, (long long)p->category_id);
	hs_buf_json_str(b, p->name);
	hs_buf_puts(b, ",\"description\":");
	hs_buf_json_str(b, p->description);
	hs_buf_printf(b,
		      ",\"price_cents\":%lld,\"stock\":%lld,\"version\":%lld,"
		      "\"updated_at\":%lld",
		      (long long)p->price_cents, (long long)p->stock,
		      (long long)p->version, (long long)p->updated_at);
}

int
srv_product_body(struct srv_worker *w, int64_t id, struct hs_buf *out)
{
	struct db_product_detail d;
	const struct db_review_summary *s = &d.summary;
	uint64_t key = srv_key_product(id);
	struct db *db;
	int res, ri;

	do {
		db = srv_read_db(w, key, &ri);
		res = db ? db_product_detail(db, id, &d) : DB_ERR;
	} while (srv_read_retry(w, key, ri, res));

	if (res != DB_OK)
		return srv_db_fail_body(w, res, "product detail",
					"product not found", out);
	hs_buf_reset(out);
	hs_buf_reserve(out, 2048);
	hs_buf_puts(out, "{");
	product_fields(out, &d.product);
	hs_buf_printf(out, ",\"review_summary\":{\"count\":%lld,\"average\":",
		      (long long)s->count);
	srv_json_avg(out, s->average);
	hs_buf_printf(out, ",\"histogram\":[%lld,%lld,%lld,%lld,%lld]}",
		      (long long)s->histogram[0], (long long)s->histogram[1],
		      (long long)s->histogram[2], (long long)s->histogram[3],
		      (long long)s->histogram[4]);
	hs_buf_puts(out, ",\"recent_reviews\":[");
	for (int i = 0; i < d.nrecent && i < DB_RECENT_N; i++) {
		const struct db_review *rv = &d.recent[i];

		hs_buf_printf(out, "%s{\"id\":%lld,\"rating\":%d,\"body\":",
			      i ? "," : "", (long long)rv->id, rv->rating);
		hs_buf_json_str(out, rv->body);
		hs_buf_printf(out, ",\"created_at\":%lld}",
			      (long long)rv->created_at);
	}
	hs_buf_puts(out, "]}");
	return 200;
}

int
srv_category_top_body(struct srv_worker *w, int64_t id, struct hs_buf *out)
{
	struct db_category_top t;
	uint64_t key = srv_key_category(id);
	struct db *db;
	int res, ri;

	do {
		db = srv_read_db(w, key, &ri);
		res = db ? db_category_top(db, id, &t) : DB_ERR;
	} while (srv_read_retry(w, key, ri, res));

	if (res != DB_OK)
		return srv_db_fail_body(w, res, "category top",
					"category not found", out);
	hs_buf_reset(out);
	hs_buf_printf(out, "{\"category_id\":%lld,\"name\":",
		      (long long)t.category_id);
	hs_buf_json_str(out, t.name);
	hs_buf_puts(out, ",\"top\":[");
	for (int i = 0; i < t.n && i < DB_TOP_N; i++) {
		const struct db_top_entry *e = &t.top[i];

		hs_buf_printf(out, "%s{\"id\":%lld,\"name\":", i ? "," : "",
			      (long long)e->product_id);
		hs_buf_json_str(out, e->name);
		hs_buf_printf(out,
			      ",\"price_cents\":%lld,\"review_count\":%lld,"
			      "\"average\":",
			      (long long)e->price_cents,
			      (long long)e->review_count);
		srv_json_avg(out, e->average);
		hs_buf_puts(out, "}");
	}
	hs_buf_puts(out, "]}");
	return 200;
}

void
srv_h_product_get(struct srv_ctx *c, struct srv_resp *r)
{
	srv_serve_cacheable(c, r, srv_product_body, cache_key_product,
			    c->rq->id);
}

void
srv_h_category_top(struct srv_ctx *c, struct srv_resp *r)
{
	srv_serve_cacheable(c, r, srv_category_top_body, cache_key_category,
			    c->rq->id);
}

/* A non-negative JSON integer field; -1 (and r filled) when invalid. */
static int
get_count(json_t *v, const char *field, int64_t *out, struct srv_resp *r)
{
	char msg[128];

	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		snprintf(msg, sizeof(msg), "%s must be an integer >= 0", field);
		srv_error(r, 422, msg);
		return -1;
	}
	*out = json_integer_value(v);
	return 0;
}

void
srv_h_product_put(struct srv_ctx *c, struct srv_resp *r)
{
	struct db_product_change ch;
	struct db_product after;
	json_t *j = srv_parse_json_object(c, r), *v;
	struct db *db;
	int res;

	if (j == NULL)
		return;
	memset(&ch, 0, sizeof(ch));
	if ((v = json_object_get(j, "name")) != NULL) {
		size_t n = json_is_string(v) ? json_string_length(v) : 0;

		if (!json_is_string(v) || n < 1 || n > DB_NAME_MAX) {
			srv_error(r, 422,
				  "name must be a string of 1..200 bytes");
			goto out;
		}
		ch.has_name = 1;
		ch.name = json_string_value(v);
	}
	if ((v = json_object_get(j, "price_cents")) != NULL) {
		if (get_count(v, "price_cents", &ch.price_cents, r) < 0)
			goto out;
		ch.has_price = 1;
	}
	if ((v = json_object_get(j, "stock")) != NULL) {
		if (get_count(v, "stock", &ch.stock, r) < 0)
			goto out;
		ch.has_stock = 1;
	}
	if (!ch.has_name && !ch.has_price && !ch.has_stock) {
		srv_error(r, 422,
			  "nothing to change: give name, price_cents or stock");
		goto out;
	}
	db = srv_worker_db(c->w);
	res = db ? db_product_update(db, c->rq->id, &ch, &after) : DB_ERR;
	if (res != DB_OK) {
		srv_db_fail(c->w, r, res, "product update",
			    "product not found");
		goto out;
	}
	/* Committed: now (never before) drop the cached bodies it changed,
	   once the keys are marked (a fill after the drop must not read a
	   replica that has not replayed this write). */
	mark_written(c, c->rq->id, after.category_id);
	srv_cache_invalidate_product(c, r, c->rq->id, after.category_id);
	r->status = 200;
	hs_buf_puts(&r->body, "{");
	product_fields(&r->body, &after);
	hs_buf_puts(&r->body, "}");
out:
	json_decref(j);
}

void
srv_h_review_post(struct srv_ctx *c, struct srv_resp *r)
{
	struct db_review rv;
	int64_t category_id = 0;
	const char *body = "";
	json_t *j = srv_parse_json_object(c, r), *v;
	struct db *db;
	json_int_t rating;
	int res;

	if (j == NULL)
		return;
	v = json_object_get(j, "rating");
	if (!json_is_integer(v) || (rating = json_integer_value(v)) < 1 ||
	    rating > 5) {
		srv_error(r, 422, "rating must be an integer 1..5");
		goto out;
	}
	if ((v = json_object_get(j, "body")) != NULL) {
		if (!json_is_string(v) || json_string_length(v) > DB_BODY_MAX) {
			srv_error(r, 422,
				  "body must be a string of at most 2000 bytes");
			goto out;
		}
		body = json_string_value(v);
	}
	db = srv_worker_db(c->w);
	res = db ? db_review_add(db, c->rq->id, (int)rating, body, &rv,
				 &category_id)
		 : DB_ERR;
	if (res != DB_OK) {
		srv_db_fail(c->w, r, res, "review add", "product not found");
		goto out;
	}
	/* The ratings changed: the detail and the category's top list. */
	mark_written(c, c->rq->id, category_id);
	srv_cache_invalidate_product(c, r, c->rq->id, category_id);
	r->status = 201;
	hs_buf_printf(&r->body,
		      "{\"id\":%lld,\"product_id\":%lld,\"rating\":%d,\"body\":",
		      (long long)rv.id, (long long)rv.product_id, rv.rating);
	hs_buf_json_str(&r->body, rv.body);
	hs_buf_printf(&r->body, ",\"created_at\":%lld}",
		      (long long)rv.created_at);
out:
	json_decref(j);
}

void
srv_h_product_delete(struct srv_ctx *c, struct srv_resp *r)
{
	struct db *db = srv_worker_db(c->w);
	int64_t category_id = 0;
	int res = db ? db_product_delete(db, c->rq->id, &category_id) : DB_ERR;

	if (res != DB_OK) {
		srv_db_fail(c->w, r, res, "product delete",
			    "product not found");
		return;
	}
	mark_written(c, c->rq->id, category_id);
	srv_cache_invalidate_product(c, r, c->rq->id, category_id);
	r->status = 204;
	hs_buf_reset(&r->body);
}
