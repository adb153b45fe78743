/* The cache step over hs_cache (cached.c). */
#ifndef HS_SRV_CACHED_H
#define HS_SRV_CACHED_H

#include <stdint.h>

#include "hs_buf.h"
#include "srv_req.h"

/*
 * A cacheable GET: key -> (status, body).  The builder writes the whole
 * response body (a JSON error for non-200 statuses) and returns the HTTP
 * status; 503 means a database failure (never to be cached).  A cache
 * layer calls the builder on a miss and stores the body.
 */
typedef int (*srv_build_fn)(struct srv_worker *w, int64_t key,
			    struct hs_buf *out);
/* Writes the memcached key of id (cache_key_product etc.); returns its length. */
typedef int (*srv_key_fn)(char *buf, int64_t id);

/*
 * Serves a cacheable GET: through cache_fetch when the cache is on (X-Cache
 * HIT / MISS / BYPASS), else straight from build (BYPASS).  With the read
 * batcher on, the loop's first run parks the request (SRV_PH_PARKED) until
 * its loop's batcher runs; the run after it (SRV_PH_BATCHED -> LOOP) serves
 * the batcher's hit as it is, or goes through cache_fetch, on a database
 * thread when there are any (SRV_PH_OFFLOAD).
 */
void srv_serve_cacheable(struct srv_ctx *c, struct srv_resp *r,
			 srv_build_fn build, srv_key_fn keyfn, int64_t key);
/*
 * n cacheable rows in one response, the JSON array of their bodies (or the
 * first non-200 body): one multi-get when the cache is on (X-Cache the
 * worst of them), else each built in turn (BYPASS).
 */
void srv_serve_cacheable_rows(struct srv_ctx *c, struct srv_resp *r,
			      srv_build_fn build, srv_key_fn keyfn,
			      const int64_t *keys, int n);
/*
 * After a committed product write: deletes the product's body and its
 * category's top list (category_id <= 0: the product key only).
 */
void srv_cache_invalidate_product(struct srv_ctx *c, struct srv_resp *r,
				  int64_t id, int64_t category_id);
/* After a committed /updates: deletes the world rows' bodies. */
void srv_cache_invalidate_world(struct srv_ctx *c, struct srv_resp *r,
				const int32_t *ids, int n);

#endif
