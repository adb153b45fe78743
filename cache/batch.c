/*
 * The read batcher (see cache.h): a queue that its owner thread fills and
 * empties, up to max_keys keys per multi-get.  The batch size follows the
 * load: the reads one pass of the event loop found, one key when idle,
 * dozens under load.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_int.h"
#include "hs_util.h"

struct cache_batcher {
	struct cache *c; /* the batcher's own connections */
	unsigned max_keys;
	struct cache_batch_req *head, **tail;
	bool stopping; /* no new requests */
	/* scratch arrays, max_keys each */
	struct cache_batch_req **reqs;
	const char **keys;
	struct cache_value *out;
	enum cache_res *res;
};

static void
run_batch(struct cache_batcher *b, size_t n)
{
	struct cache_fetch_info info;
	uint64_t start = hs_now_us();

	memset(&info, 0, sizeof(info));
	for (size_t i = 0; i < n; i++)
		b->keys[i] = b->reqs[i]->key;
	cache_mget_timed(b->c, b->keys, n, b->out, b->res, &info);
	CNT_INC(b->c->sh, batches);
	atomic_fetch_add_explicit(&b->c->sh->cnt.batch_keys, n,
				  memory_order_relaxed);
	for (size_t i = 0; i < n; i++) {
		struct cache_batch_req *r = b->reqs[i];

		r->res = b->res[i];
		r->value = b->out[i];
		r->cache_us = info.cache_us;
		r->queue_us = start > r->submit_us ? start - r->submit_us : 0;
		r->batch_size = (unsigned)n;
		if (r->res == CACHE_HIT) {
			cache_count_res(b->c, CACHE_HIT, &r->value);
			hs_hist_record(&b->c->sh->fetch_hist, info.cache_us);
		}
		r->done(r); /* r may be gone from here on */
	}
}

size_t
cache_batcher_run(struct cache_batcher *b)
{
	size_t total = 0;

	while (b->head != NULL) {
		size_t n = 0;

		while (b->head != NULL && n < b->max_keys) {
			b->reqs[n++] = b->head;
			b->head = b->head->next;
		}
		if (b->head == NULL)
			b->tail = &b->head;
		run_batch(b, n);
		total += n;
	}
	return total;
}

struct cache_batcher *
cache_batcher_new(struct cache_shared *s, unsigned max_keys, char *err,
		  size_t errlen)
{
	struct cache_batcher *b;

	if (max_keys < 1 || max_keys > 1000) {
		snprintf(err, errlen, "cache: batch size must be 1..1000");
		return NULL;
	}
	b = hs_xcalloc(1, sizeof(*b));
	b->c = cache_new(s);
	b->max_keys = max_keys;
	b->tail = &b->head;
	b->reqs = hs_xcalloc(max_keys, sizeof(*b->reqs));
	b->keys = hs_xcalloc(max_keys, sizeof(*b->keys));
	b->out = hs_xcalloc(max_keys, sizeof(*b->out));
	b->res = hs_xcalloc(max_keys, sizeof(*b->res));
	return b;
}

int
cache_batch_submit(struct cache_batcher *b, struct cache_batch_req *r)
{
	if (b->stopping)
		return -1;
	r->next = NULL;
	r->submit_us = hs_now_us();
	*b->tail = r;
	b->tail = &r->next;
	return 0;
}

void
cache_batch_cancel(struct cache_batcher *b, struct cache_batch_req *r)
{
	struct cache_batch_req **pp = &b->head;

	while (*pp != NULL && *pp != r)
		pp = &(*pp)->next;
	if (*pp == NULL)
		return;
	*pp = r->next;
	if (b->tail == &r->next)
		b->tail = pp;
}

void
cache_batcher_stop(struct cache_batcher *b)
{
	if (b == NULL)
		return;
	b->stopping = true;
	cache_batcher_run(b);
}

void
cache_batcher_free(struct cache_batcher *b)
{
	if (b == NULL)
		return;
	cache_batcher_stop(b);
	cache_free(b->c);
	free(b->res);
	free(b->out);
	free(b->keys);
	free(b->reqs);
	free(b);
}
