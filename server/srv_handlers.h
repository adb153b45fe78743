/*
 * The route handlers: each fills r from c (srv_req.h).  router.c holds
 * the table from route to handler.
 */
#ifndef HS_SRV_HANDLERS_H
#define HS_SRV_HANDLERS_H

#include <stdint.h>

#include "hs_buf.h"
#include "srv_req.h"

/* --- products.c --- */
int srv_product_body(struct srv_worker *w, int64_t id, struct hs_buf *out);
int srv_category_top_body(struct srv_worker *w, int64_t id, struct hs_buf *out);
void srv_h_product_get(struct srv_ctx *c, struct srv_resp *r);
void srv_h_product_put(struct srv_ctx *c, struct srv_resp *r);
void srv_h_product_delete(struct srv_ctx *c, struct srv_resp *r);
void srv_h_review_post(struct srv_ctx *c, struct srv_resp *r);
void srv_h_category_top(struct srv_ctx *c, struct srv_resp *r);

/* --- tfb.c: TechEmpower test types --- */
void srv_h_json(struct srv_ctx *c, struct srv_resp *r);
void srv_h_db(struct srv_ctx *c, struct srv_resp *r);
void srv_h_queries(struct srv_ctx *c, struct srv_resp *r);
void srv_h_updates(struct srv_ctx *c, struct srv_resp *r);
/* GET /cached-queries?count=N: world rows via one multi-get. */
void srv_h_cached_queries(struct srv_ctx *c, struct srv_resp *r);
/* The N of ?queries=N: clamped to 1..500, missing or not a number -> 1. */
int srv_tfb_count(const char *arg);
/* One world row as the spec writes it: {"id":N,"randomNumber":N}. */
void srv_world_json(struct hs_buf *b, int32_t id, int32_t n);

/* --- stats.c --- */
void srv_h_healthz(struct srv_ctx *c, struct srv_resp *r);
void srv_h_stats(struct srv_ctx *c, struct srv_resp *r);
void srv_h_catalog(struct srv_ctx *c, struct srv_resp *r);
void srv_h_metrics(struct srv_ctx *c, struct srv_resp *r);

#endif
