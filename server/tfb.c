/*
 * The TechEmpower Framework Benchmarks test types, to their public spec:
 * /json, /db (one random world row), /queries?queries=N (N random rows),
 * /updates?queries=N (N random rows, each given a new random number and
 * persisted in one transaction before answering).  N is clamped to 1..500
 * and a missing or non-numeric N counts as 1; /cached-queries?count=N
 * (N random rows, each a cached body, through one multi-get).  /plaintext
 * is answered by h_plaintext in router.c, like any other handler.
 */
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "db.h"
#include "hs_util.h"
#include "srv_cached.h"
#include "srv_handlers.h"
#include "srv_req.h"
#include "srv_resp.h"
#include "srv_worker.h"

#define TFB_MAX 500

int
srv_tfb_count(const char *arg)
{
	int64_t n;

	if (arg == NULL || hs_parse_i64(arg, INT64_MIN, INT64_MAX, &n) < 0) {
		/* Huge all-digit values are "many", not "bad". */
		if (arg != NULL && *arg != '\0' &&
		    strspn(arg, "0123456789") == strlen(arg))
			return TFB_MAX;
		return 1;
	}
	if (n < 1)
		return 1;
	if (n > TFB_MAX)
		return TFB_MAX;
	return (int)n;
}

void
srv_h_json(struct srv_ctx *c, struct srv_resp *r)
{
	r->status = 200;
	hs_buf_puts(&r->body, "{\"message\":\"Hello, World!\"}");
}

void
srv_world_json(struct hs_buf *b, int32_t id, int32_t n)
{
	hs_buf_printf(b, "{\"id\":%d,\"randomNumber\":%d}", (int)id, (int)n);
}

void
srv_h_db(struct srv_ctx *c, struct srv_resp *r)
{
	struct db *db = srv_worker_db(c->w);
	int32_t id = srv_rand_range(c->w, 1, DB_WORLD_ROWS), n = 0;
	int res = db ? db_world_get(db, id, &n) : DB_ERR;

	if (res != DB_OK) {
		srv_db_fail(c->w, r, res, "world get", "world row not found");
		return;
	}
	r->status = 200;
	srv_world_json(&r->body, id, n);
}

/*
 * Picks n distinct random ids (distinct so that the numbers /updates
 * answers are exactly the ones stored) and reads their rows.
 */
static int
read_rows(struct srv_ctx *c, struct srv_resp *r, int32_t *ids, int32_t *nums,
	  int n)
{
	uint8_t seen[DB_WORLD_ROWS / 8 + 1];
	struct db *db = srv_worker_db(c->w);

	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < n; i++) {
		int32_t id;
		int res;

		do
			id = srv_rand_range(c->w, 1, DB_WORLD_ROWS);
		while (seen[id / 8] & (1u << (id % 8)));
		seen[id / 8] |= (uint8_t)(1u << (id % 8));
		ids[i] = id;
		res = db ? db_world_get(db, id, &nums[i]) : DB_ERR;
		if (res != DB_OK) {
			srv_db_fail(c->w, r, res, "world get",
				    "world row not found");
			return -1;
		}
	}
	return 0;
}

static void
rows_json(struct hs_buf *b, const int32_t *ids, const int32_t *nums, int n)
{
	hs_buf_reserve(b, (size_t)n * 36 + 2);
	hs_buf_puts(b, "[");
	for (int i = 0; i < n; i++) {
		if (i)
			hs_buf_puts(b, ",");
		srv_world_json(b, ids[i], nums[i]);
	}
	hs_buf_puts(b, "]");
}

static int
query_count(struct srv_ctx *c)
{
	return srv_tfb_count(MHD_lookup_connection_value(c->conn,
							 MHD_GET_ARGUMENT_KIND,
							 "queries"));
}

void
srv_h_queries(struct srv_ctx *c, struct srv_resp *r)
{
	int32_t ids[TFB_MAX], nums[TFB_MAX];
	int n = query_count(c);

	if (read_rows(c, r, ids, nums, n) < 0)
		return;
	r->status = 200;
	rows_json(&r->body, ids, nums, n);
}

void
srv_h_updates(struct srv_ctx *c, struct srv_resp *r)
{
	int32_t ids[TFB_MAX], nums[TFB_MAX];
	int n = query_count(c), res;

	if (read_rows(c, r, ids, nums, n) < 0)
		return;
	for (int i = 0; i < n; i++) {
		int32_t old = nums[i];

		/* A new number, so that every update is a real change. */
		do
			nums[i] = srv_rand_range(c->w, 1, DB_WORLD_ROWS);
		while (nums[i] == old);
	}
	res = db_world_update(srv_worker_db(c->w), ids, nums, n);
	if (res != DB_OK) {
		srv_db_fail(c->w, r, res, "world update",
			    "world row not found");
		return;
	}
	/* Committed: the cached world rows (/cached-queries) are now stale. */
	srv_cache_invalidate_world(c, r, ids, n);
	r->status = 200;
	rows_json(&r->body, ids, nums, n);
}

/* One world row's body, {"id":N,"randomNumber":N}, as /db answers it. */
static int
world_body(struct srv_worker *w, int64_t id, struct hs_buf *out)
{
	struct db *db = srv_worker_db(w);
	int32_t n = 0;
	int res = db ? db_world_get(db, (int32_t)id, &n) : DB_ERR;

	if (res != DB_OK)
		return srv_db_fail_body(w, res, "world get",
					"world row not found", out);
	srv_world_json(out, (int32_t)id, n);
	return 200;
}

void
srv_h_cached_queries(struct srv_ctx *c, struct srv_resp *r)
{
	int n = srv_tfb_count(MHD_lookup_connection_value(c->conn,
							  MHD_GET_ARGUMENT_KIND,
							  "count"));
	int64_t ids[TFB_MAX];

	/* The spec picks ids at random; repeats are allowed (and filled once). */
	for (int i = 0; i < n; i++)
		ids[i] = srv_rand_range(c->w, 1, DB_WORLD_ROWS);
	srv_serve_cacheable_rows(c, r, world_body, cache_key_world, ids, n);
}
