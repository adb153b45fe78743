/*
 * Multi-get (one gets round trip for a batch of keys, e.g. the
 * TechEmpower /cached-queries world rows) and the batch fill of its misses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_int.h"
#include "hs_util.h"

/* ---- multi-get -------------------------------------------------------- */

struct kref {
	const char *key;
	size_t len;
	size_t idx;
};

static int
kref_cmp(const void *a, const void *b)
{
	const struct kref *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int d = memcmp(x->key, y->key, n);

	if (d)
		return d;
	return (x->len > y->len) - (x->len < y->len);
}

struct mget_ctx {
	struct kref *refs;
	size_t m;
	struct cache_value *out;
	enum cache_res *r;
	size_t hits;
};

/* Hands a fetched item to every request slot of its key. */
static void
mget_deliver(void *arg, struct cache_mc_item *it)
{
	struct mget_ctx *x = arg;
	struct kref *refs = x->refs;
	size_t m = x->m;
	struct cache_value *out = x->out;
	enum cache_res *r = x->r;
	struct kref probe = { it->key, it->klen, 0 };
	struct kref *hit = bsearch(&probe, refs, m, sizeof(*refs), kref_cmp);
	uint32_t flags = it->flags;
	size_t got = 0, vlen = it->vlen;
	char *v = NULL;

	if (hit == NULL || (flags != 200 && flags != 404))
		return; /* a lease marker counts as a miss */
	while (hit > refs && kref_cmp(hit - 1, &probe) == 0)
		hit--;
	for (; hit < refs + m && kref_cmp(hit, &probe) == 0; hit++) {
		size_t i = hit->idx;

		if (r[i] == CACHE_HIT)
			continue;
		if (v == NULL) {
			v = it->value;
			it->value = NULL;
			out[i].body = v;
		} else {
			out[i].body = hs_xmalloc(vlen + 1);
			memcpy(out[i].body, v, vlen + 1);
		}
		out[i].len = vlen;
		out[i].status = (int)flags;
		r[i] = CACHE_HIT;
		got++;
	}
	x->hits += got;
}

size_t
cache_mget_timed(struct cache *c, const char *const *keys, size_t n,
		 struct cache_value *out, enum cache_res *r,
		 struct cache_fetch_info *info)
{
	struct cache_shared *s = c->sh;
	struct kref *refs = hs_xcalloc(n ? n : 1, sizeof(*refs));
	const char **ks = hs_xcalloc(n ? n : 1, sizeof(*ks));
	size_t *ls = hs_xcalloc(n ? n : 1, sizeof(*ls));
	memcached_return_t *srv_rc = hs_xcalloc(s->nbrk, sizeof(*srv_rc));
	bool *asked = hs_xcalloc(s->nbrk, sizeof(*asked));
	memcached_return_t rc;
	struct mget_ctx x = { refs, 0, out, r, 0 };
	size_t m = 0;

	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(keys[i]);
		struct cache_breaker *b = cache_brk_of(c, keys[i], len);

		memset(&out[i], 0, sizeof(out[i]));
		r[i] = CACHE_MISS;
		if (!cache_brk_allow(s, b)) {
			r[i] = CACHE_ERR;
			info->breaker_open = true;
			continue;
		}
		asked[b - s->brk] = true;
		refs[m] = (struct kref){ keys[i], len, i };
		ks[m] = keys[i];
		ls[m] = len;
		m++;
	}
	if (m == 0)
		goto out;
	qsort(refs, m, sizeof(*refs), kref_cmp);
	x.m = m;
	TIMED(info, rc = cache_mc_gets(c, ks, ls, m, srv_rc, mget_deliver, &x));
	if (rc == MEMCACHED_SUCCESS) {
		for (unsigned j = 0; j < s->nbrk; j++)
			if (asked[j])
				cache_brk_ok(&s->brk[j]);
		goto out;
	}
	/*
	 * A server failed (its connection is closed already): its keys are
	 * ERR and nothing of its reply was used; the others answered.
	 */
	snprintf(c->err, sizeof(c->err), "mget: %s",
		 memcached_strerror(c->mc, rc));
	CNT_INC(s, errors);
	for (unsigned j = 0; j < s->nbrk; j++) {
		if (!asked[j])
			continue;
		if (srv_rc[j] == MEMCACHED_SUCCESS)
			cache_brk_ok(&s->brk[j]);
		else if (srv_rc[j] != MEMCACHED_BAD_KEY_PROVIDED)
			cache_brk_fail(s, &s->brk[j]);
	}
	for (size_t i = 0; i < m; i++) {
		size_t idx = refs[i].idx;
		unsigned j = cache_mc_server_of(c, refs[i].key, refs[i].len);

		if (r[idx] == CACHE_MISS && srv_rc[j] != MEMCACHED_SUCCESS)
			r[idx] = CACHE_ERR;
	}
out:
	free(asked);
	free(srv_rc);
	free(ls);
	free(ks);
	free(refs);
	return x.hits;
}

size_t
cache_mget(struct cache *c, const char *const *keys, size_t n,
	   struct cache_value *out, enum cache_res *res)
{
	struct cache_fetch_info info;

	memset(&info, 0, sizeof(info));
	return cache_mget_timed(c, keys, n, out, res, &info);
}

/*
 * first[i] = the lowest index whose key equals keys[i], so that a key
 * asked twice in one batch is filled once (a second lease attempt would
 * only lose to our own store).
 */
static size_t *
first_of_keys(const char *const *keys, size_t n)
{
	struct kref *refs = hs_xcalloc(n ? n : 1, sizeof(*refs));
	size_t *first = hs_xcalloc(n ? n : 1, sizeof(*first));

	for (size_t i = 0; i < n; i++)
		refs[i] = (struct kref){ keys[i], strlen(keys[i]), i };
	qsort(refs, n, sizeof(*refs), kref_cmp);
	for (size_t i = 0; i < n;) {
		size_t j = i, lo = refs[i].idx;

		while (j < n && kref_cmp(&refs[j], &refs[i]) == 0) {
			lo = refs[j].idx < lo ? refs[j].idx : lo;
			j++;
		}
		for (; i < j; i++)
			first[refs[i].idx] = lo;
	}
	free(refs);
	return first;
}

/* Resolves one missing key of a batch (lease without waiting, or naive). */
static enum cache_res
mfetch_one(struct cache *c, const char *key, cache_fill_fn fill, void *arg,
	   size_t i, struct cache_value *out, struct cache_fetch_info *info)
{
	struct cache_shared *s = c->sh;
	size_t klen = strlen(key);
	struct cache_breaker *b = cache_brk_of(c, key, klen);

	if (!cache_brk_allow(s, b)) {
		cache_run_fill(c, fill, arg, i, out, info);
		return CACHE_ERR;
	}
	if (s->o.mode == CACHE_MODE_NAIVE) {
		cache_naive_fill(c, b, key, klen, fill, arg, i, out, info);
		return CACHE_MISS;
	}
	switch (cache_lease_try(c, b, key, klen, fill, arg, i, out, info)) {
	case L_DONE:
		return CACHE_MISS;
	case L_ERR:
		cache_run_fill(c, fill, arg, i, out, info);
		return CACHE_ERR;
	case L_ERR_FILLED:
		return CACHE_ERR;
	case L_LOST:
		break;
	}
	/* A batch does not wait on single keys: fill without storing. */
	info->lease_fallback = true;
	CNT_INC(s, lease_fallbacks);
	cache_run_fill(c, fill, arg, i, out, info);
	return CACHE_MISS;
}

enum cache_res
cache_mfetch(struct cache *c, const char *const *keys, size_t n,
	     cache_fill_fn fill, void *arg, struct cache_value *out,
	     enum cache_res *res, struct cache_fetch_info *info_opt)
{
	struct cache_fetch_info local, *info = info_opt ? info_opt : &local;
	bool any_err = false, all_hit = true;
	size_t *first;

	memset(info, 0, sizeof(*info));
	cache_mget_timed(c, keys, n, out, res, info);
	first = first_of_keys(keys, n);
	for (size_t i = 0; i < n; i++) {
		size_t f = first[i];

		if (res[i] != CACHE_HIT && f != i) {
			/* Same key earlier in the batch: share its answer. */
			res[i] = res[f];
			out[i].status = out[f].status;
			out[i].len = out[f].len;
			out[i].body = hs_xmalloc(out[f].len + 1);
			memcpy(out[i].body, out[f].body, out[f].len + 1);
		} else if (res[i] == CACHE_ERR) {
			cache_run_fill(c, fill, arg, i, &out[i], info);
		} else if (res[i] == CACHE_MISS) {
			res[i] = mfetch_one(c, keys[i], fill, arg, i, &out[i],
					    info);
		}
		cache_count_res(c, res[i], &out[i]);
		any_err |= res[i] == CACHE_ERR;
		all_hit &= res[i] == CACHE_HIT;
	}
	free(first);
	info->res = any_err ? CACHE_ERR : all_hit ? CACHE_HIT : CACHE_MISS;
	hs_hist_record(&c->sh->fetch_hist, info->cache_us);
	return info->res;
}
