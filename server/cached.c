/*
 * The server's cache step over hs_cache (memcached cache-aside with leases):
 * cacheable GETs through cache_fetch (one row, or many through one
 * multi-get), the loop's read batcher, and invalidation after committed
 * writes.
 *
 * Cached values are final response bodies, so a hit costs neither database
 * work nor JSON encoding: the body memcached returned becomes the response
 * buffer as it is.  Without a cache (--cache off) every route answers from
 * the database with X-Cache: BYPASS.
 *
 * Time in memcached is counted here (the library times reads per request but
 * not deletes): /stats "cache.time_ms" is the memcached time of reads and
 * invalidations, "cache.wait_ms" the time readers slept on another reader's
 * lease.  With the read batcher, "cache.batch_queue_ms" is the time parked
 * reads waited for their multi-get to start (the rest of their loop's
 * pass), "cache.resume_wait_ms" the time answered reads waited to be served.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "hs_log.h"
#include "hs_util.h"
#include "srv_cached.h"
#include "srv_core.h"
#include "srv_req.h"
#include "srv_resp.h"

static void
count_time(struct srv *s, uint64_t cache_us, uint64_t wait_us)
{
	if (cache_us)
		__atomic_fetch_add(&s->stats.cache_ns, cache_us * 1000,
				   __ATOMIC_RELAXED);
	if (wait_us)
		__atomic_fetch_add(&s->stats.cache_wait_ns, wait_us * 1000,
				   __ATOMIC_RELAXED);
}

/* Makes a malloc'd cache value the response body, without a copy. */
static void
adopt_body(struct srv_resp *r, struct cache_value *v)
{
	hs_buf_free(&r->body);
	if (v->body == NULL) {
		srv_error(r, 500, "cache returned no body");
		return;
	}
	/* cache_value bodies are NUL-terminated: len + 1 bytes are ours. */
	r->body.data = v->body;
	r->body.len = v->len;
	r->body.cap = v->len + 1;
	r->status = v->status;
	v->body = NULL;
	v->len = 0;
}

/* A builder's body as a malloc'd string for the cache library. */
static void
hand_over(struct hs_buf *b, char **body, size_t *len)
{
	*body = hs_buf_steal(b, len);
	if (*body == NULL) {
		*body = hs_xstrdup("");
		*len = 0;
	}
}

struct fill_one {
	struct srv_worker *w;
	srv_build_fn build;
	int64_t id;
};

/* The miss path: the route's database read and JSON build. */
static int
fill_one(void *arg, size_t idx, char **body, size_t *len)
{
	struct fill_one *f = arg;
	struct hs_buf b = HS_BUF_INIT;
	int status;

	(void)idx;
	status = f->build(f->w, f->id, &b);
	hand_over(&b, body, len);
	return status;
}

/* From the loop's cache_batcher_run: the answer is in. */
static void
batch_done(struct cache_batch_req *b)
{
	srv_phase_set(b->arg, SRV_PH_BATCHED);
}

/*
 * Parks the read (its key already in rq->batch.key) until the loop's
 * batcher runs, after this pass over the ready connections.  The request
 * gets no response yet; MHD calls the handler again on its next pass.
 * Returns 0, without parking, when there is no batcher to take it
 * (--cache-batch 0, or off the loop threads): the caller then reads on its
 * own.
 */
static int
batch_park(struct srv_ctx *c)
{
	struct cache_batcher *b = c->loop != NULL ? c->loop->batcher : NULL;
	struct srv_req *rq = c->rq;

	if (b == NULL || rq->phase != SRV_PH_LOOP)
		return 0;
	rq->batch.done = batch_done;
	rq->batch.arg = rq;
	if (cache_batch_submit(b, &rq->batch) < 0)
		return 0;
	rq->batcher = b;
	srv_phase_set(rq, SRV_PH_PARKED);
	return 1;
}

/* A batched read is back: its time in the batcher's queue and after it. */
static void
batch_account(struct srv *s, const struct cache_batch_req *b)
{
	uint64_t parked = hs_now_ns() - b->submit_us * 1000;
	uint64_t q = b->queue_us * 1000, rt = b->cache_us * 1000;

	__atomic_fetch_add(&s->stats.batch_queue_ns, q, __ATOMIC_RELAXED);
	if (parked > q + rt)
		__atomic_fetch_add(&s->stats.resume_wait_ns, parked - q - rt,
				   __ATOMIC_RELAXED);
}

void
srv_serve_cacheable(struct srv_ctx *c, struct srv_resp *r, srv_build_fn build,
		    srv_key_fn keyfn, int64_t key)
{
	struct cache_shared *cs = c->srv->cfg.cache;
	struct srv_req *rq = c->rq;
	struct fill_one f = { c->w, build, key };
	struct cache_fetch_info info;
	struct cache_value v;
	char *k = rq->batch.key;
	/* The batcher answered its first get (a parked read comes back in
	   SRV_PH_BATCHED -> LOOP, perhaps then on to a database thread). */
	int batched = rq->batcher != NULL;
	enum cache_res res;

	if (cs != NULL && !batched) {
		keyfn(k, key);
		if (batch_park(c))
			return;
	}
	/* Its one run on the loop after the multi-get. */
	if (batched && rq->phase == SRV_PH_LOOP)
		batch_account(c->srv, &rq->batch);
	/* Anything but a batched hit needs the database or may wait on a
	   lease: a database thread runs it, when there are any. */
	if (c->loop != NULL && c->srv->pool != NULL &&
	    !(batched && rq->batch.res == CACHE_HIT)) {
		srv_phase_set(rq, SRV_PH_OFFLOAD);
		return;
	}
	if (cs == NULL) {
		r->status = build(c->w, key, &r->body);
		r->xcache = "BYPASS";
	} else if (batched && rq->batch.res == CACHE_HIT) {
		/* The batcher's multi-get found it (counted there). */
		adopt_body(r, &rq->batch.value);
		r->xcache = "HIT";
		r->cache_ns = rq->batch.cache_us * 1000;
		count_time(c->srv, rq->batch.cache_us, 0);
	} else {
		struct cache *ch = cache_thread_handle(cs);
		uint64_t batch_us = batched ? rq->batch.cache_us : 0;

		/* A batched miss goes on from the lease: no second get. */
		if (batched && rq->batch.res == CACHE_MISS)
			res = cache_fetch_missed(ch, k, fill_one, &f, &v,
						 &info);
		else
			res = cache_fetch(ch, k, fill_one, &f, &v, &info);
		adopt_body(r, &v);
		cache_value_release(&v);
		r->xcache = cache_res_name(res);
		r->cache_ns = (batch_us + info.cache_us + info.wait_us) * 1000;
		count_time(c->srv, batch_us + info.cache_us, info.wait_us);
	}
	if (r->status == 503)
		r->retry_after = 1;
}

/* Deletes keys after a commit; the time goes to Server-Timing and /stats. */
static void
invalidate(struct srv_ctx *c, struct srv_resp *r, const char *const *keys,
	   size_t n)
{
	uint64_t t0 = hs_now_ns(), dt;
	size_t failed;

	failed = cache_invalidate(cache_thread_handle(c->srv->cfg.cache), keys,
				  n);
	dt = hs_now_ns() - t0;
	r->cache_ns += dt;
	count_time(c->srv, dt / 1000, 0);
	/* The library counts and logs failures; the TTL bounds the staleness. */
	if (failed)
		log_debug("cache: %zu of %zu deletes failed", failed, n);
}

void
srv_cache_invalidate_product(struct srv_ctx *c, struct srv_resp *r, int64_t id,
			     int64_t category_id)
{
	char kp[CACHE_KEY_MAX], kc[CACHE_KEY_MAX];
	const char *keys[2] = { kp, kc };

	if (c->srv->cfg.cache == NULL)
		return;
	cache_key_product(kp, id);
	if (category_id > 0)
		cache_key_category(kc, category_id);
	invalidate(c, r, keys, category_id > 0 ? 2 : 1);
}

void
srv_cache_invalidate_world(struct srv_ctx *c, struct srv_resp *r,
			   const int32_t *ids, int n)
{
	char(*kbuf)[CACHE_KEY_MAX];
	const char **keys;

	if (c->srv->cfg.cache == NULL || n <= 0)
		return;
	kbuf = hs_xmalloc((size_t)n * sizeof(*kbuf));
	keys = hs_xmalloc((size_t)n * sizeof(*keys));
	for (int i = 0; i < n; i++) {
		cache_key_world(kbuf[i], ids[i]);
		keys[i] = kbuf[i];
	}
	invalidate(c, r, keys, (size_t)n);
	free(keys);
	free(kbuf);
}

/* --- many rows through one multi-get ----------------------------------- */

struct fill_rows {
	struct srv_worker *w;
	srv_build_fn build;
	const int64_t *keys;
};

static int
fill_rows(void *arg, size_t idx, char **body, size_t *len)
{
	struct fill_rows *f = arg;
	struct hs_buf b = HS_BUF_INIT;
	int status = f->build(f->w, f->keys[idx], &b);

	hand_over(&b, body, len);
	return status;
}

/* The first non-200 value answers for the whole request, else the array. */
static void
join_rows(struct srv_resp *r, struct cache_value *v, int n)
{
	size_t total = 2;

	for (int i = 0; i < n; i++) {
		if (v[i].status != 200) {
			adopt_body(r, &v[i]);
			return;
		}
		total += v[i].len + 1;
	}
	hs_buf_reserve(&r->body, total);
	hs_buf_puts(&r->body, "[");
	for (int i = 0; i < n; i++) {
		if (i)
			hs_buf_puts(&r->body, ",");
		hs_buf_append(&r->body, v[i].body, v[i].len);
	}
	hs_buf_puts(&r->body, "]");
	r->status = 200;
}

/* Every row through one cache_mfetch; sets X-Cache and the cache time. */
static void
mfetch_rows(struct srv_ctx *c, struct srv_resp *r, struct fill_rows *f,
	    srv_key_fn keyfn, struct cache_value *v, int n)
{
	char(*kbuf)[CACHE_KEY_MAX] = hs_xmalloc((size_t)n * sizeof(*kbuf));
	const char **keys = hs_xmalloc((size_t)n * sizeof(*keys));
	enum cache_res *res = hs_xmalloc((size_t)n * sizeof(*res));
	struct cache_fetch_info info;

	for (int i = 0; i < n; i++) {
		keyfn(kbuf[i], f->keys[i]);
		keys[i] = kbuf[i];
	}
	r->xcache = cache_res_name(
		cache_mfetch(cache_thread_handle(c->srv->cfg.cache), keys,
			     (size_t)n, fill_rows, f, v, res, &info));
	r->cache_ns = (info.cache_us + info.wait_us) * 1000;
	count_time(c->srv, info.cache_us, info.wait_us);
	free(res);
	free(keys);
	free(kbuf);
}

void
srv_serve_cacheable_rows(struct srv_ctx *c, struct srv_resp *r,
			 srv_build_fn build, srv_key_fn keyfn,
			 const int64_t *keys, int n)
{
	struct cache_value *v = hs_xcalloc((size_t)n, sizeof(*v));
	struct fill_rows f = { c->w, build, keys };

	if (c->srv->cfg.cache == NULL) {
		for (int i = 0; i < n; i++) {
			struct hs_buf b = HS_BUF_INIT;

			v[i].status = build(c->w, keys[i], &b);
			v[i].body = hs_buf_steal(&b, &v[i].len);
			if (v[i].status != 200)
				break;
		}
		r->xcache = "BYPASS";
	} else {
		mfetch_rows(c, r, &f, keyfn, v, n);
	}
	join_rows(r, v, n);
	if (r->status == 503)
		r->retry_after = 1;
	for (int i = 0; i < n; i++)
		cache_value_release(&v[i]);
	free(v);
}
