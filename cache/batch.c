/*
 * The read batcher (see cache.h): a queue guarded by a mutex, one thread
 * that takes everything queued (up to max_keys), sends it as one multi-get
 * and calls every request back.  While a multi-get is on the wire the next
 * batch gathers in the queue, so the batch size follows the load: one key
 * when idle, dozens under load.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_int.h"
#include "hs_log.h"
#include "hs_util.h"

struct cache_batcher {
	struct cache *c;                 /* the thread's own connections */
	unsigned max_keys;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct cache_batch_req *head, **tail;  /* guarded by mu */
	bool idle;                       /* the thread waits on cv (mu) */
	bool stopping;                   /* no new requests (mu) */
	bool joined;
	/* the thread's scratch arrays, max_keys each */
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
		r->done(r);   /* r may be gone from here on */
	}
}

static void *
batch_main(void *arg)
{
	struct cache_batcher *b = arg;

	pthread_mutex_lock(&b->mu);
	for (;;) {
		size_t n = 0;

		while (b->head == NULL && !b->stopping) {
			b->idle = true;
			pthread_cond_wait(&b->cv, &b->mu);
		}
		b->idle = false;
		if (b->head == NULL)
			break; /* stopping, and nothing left to answer */
		while (b->head != NULL && n < b->max_keys) {
			b->reqs[n++] = b->head;
			b->head = b->head->next;
		}
		if (b->head == NULL)
			b->tail = &b->head;
		pthread_mutex_unlock(&b->mu);
		run_batch(b, n);
		pthread_mutex_lock(&b->mu);
	}
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

struct cache_batcher *
cache_batcher_new(struct cache_shared *s, unsigned max_keys, char *err,
		  size_t errlen)
{
	struct cache_batcher *b;
	int rc;

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
	pthread_mutex_init(&b->mu, NULL);
	pthread_cond_init(&b->cv, NULL);
	rc = pthread_create(&b->thread, NULL, batch_main, b);
	if (rc != 0) {
		snprintf(err, errlen, "cache: cannot start the batcher: %s",
			 strerror(rc));
		b->joined = true;
		cache_batcher_free(b);
		return NULL;
	}
	return b;
}

int
cache_batch_submit(struct cache_batcher *b, struct cache_batch_req *r)
{
	bool wake;

	r->next = NULL;
	r->submit_us = hs_now_us();
	pthread_mutex_lock(&b->mu);
	if (b->stopping) {
		pthread_mutex_unlock(&b->mu);
		return -1;
	}
	*b->tail = r;
	b->tail = &r->next;
	/* One wake-up per idle period: later submitters find it cleared. */
	wake = b->idle;
	b->idle = false;
	pthread_mutex_unlock(&b->mu);
	if (wake)
		pthread_cond_signal(&b->cv);
	return 0;
}

void
cache_batcher_stop(struct cache_batcher *b)
{
	if (b == NULL)
		return;
	pthread_mutex_lock(&b->mu);
	b->stopping = true;
	pthread_mutex_unlock(&b->mu);
	pthread_cond_signal(&b->cv);
	if (!b->joined) {
		pthread_join(b->thread, NULL);
		b->joined = true;
	}
}

void
cache_batcher_free(struct cache_batcher *b)
{
	if (b == NULL)
		return;
	cache_batcher_stop(b);
	pthread_cond_destroy(&b->cv);
	pthread_mutex_destroy(&b->mu);
	cache_free(b->c);
	free(b->res);
	free(b->out);
	free(b->keys);
	free(b->reqs);
	free(b);
}
