/*
 * The cache's single-key operations: the lease and naive read protocols
 * (cache_fetch), plain stores, and invalidation with bounded retries.  The
 * helpers here are shared with the multi-get in mget.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache_int.h"
#include "hs_log.h"
#include "hs_rng.h"
#include "hs_util.h"

#define LEASE_PREFIX "hs-lease:"

/* ---- per-operation helpers -------------------------------------------- */

/* Results that are answers, not failures of the server (mc.c returns
   only these for a reply it accepted). */
static bool
rc_is_answer(memcached_return_t rc)
{
	switch (rc) {
	case MEMCACHED_SUCCESS:
	case MEMCACHED_NOTFOUND:
	case MEMCACHED_NOTSTORED:
	case MEMCACHED_DATA_EXISTS:
		return true;
	default:
		return false;
	}
}

struct cache_breaker *
cache_brk_of(struct cache *c, const char *key, size_t klen)
{
	return &c->sh->brk[cache_mc_server_of(c, key, klen)];
}

/* Feeds one memcached result to the breaker and the error counter. */
static bool
note_rc(struct cache *c, struct cache_breaker *b, memcached_return_t rc)
{
	if (rc_is_answer(rc)) {
		cache_brk_ok(b);
		return true;
	}
	snprintf(c->err, sizeof(c->err), "%s: %s", b->name,
		 memcached_strerror(c->mc, rc));
	CNT_INC(c->sh, errors);
	/* A key the protocol refuses is the caller's bug, not the server's. */
	if (rc != MEMCACHED_BAD_KEY_PROVIDED)
		cache_brk_fail(c->sh, b);
	log_debug("cache: %s", c->err);
	return false;
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static bool
storable(int status)
{
	return status == 200 || status == 404;
}

static unsigned
ttl_for(struct cache *c, int status)
{
	if (status == 404)
		return c->sh->o.neg_ttl_s;
	return cache_ttl_jitter(c->sh->o.ttl_s, c->sh->o.ttl_jitter, &c->rng);
}

enum get_kind { G_VALUE, G_LEASE, G_MISS, G_ERR };

/* What a one-key gets found; cache_mc_gets has checked that it is the key
   asked for. */
struct get1 {
	bool found;
	uint32_t flags;
	uint64_t cas;
	char *value;
	size_t vlen;
};

static void
get1_item(void *arg, struct cache_mc_item *it)
{
	struct get1 *g = arg;

	free(g->value);
	g->found = true;
	g->flags = it->flags;
	g->cas = it->cas;
	g->value = it->value;
	g->vlen = it->vlen;
	it->value = NULL;
}

static memcached_return_t
get_one(struct cache *c, const char *key, size_t klen, struct get1 *g)
{
	memset(g, 0, sizeof(*g));
	return cache_mc_gets(c, &key, &klen, 1, NULL, get1_item, g);
}

/* get k: a servable value (status 200/404), a lease marker, a miss, an error. */
static enum get_kind
do_get(struct cache *c, struct cache_breaker *b, const char *key, size_t klen,
       struct cache_value *out, struct cache_fetch_info *info)
{
	memcached_return_t rc;
	struct get1 g;

	TIMED(info, rc = get_one(c, key, klen, &g));
	if (!note_rc(c, b, rc)) {
		free(g.value);
		return G_ERR;
	}
	if (!g.found)
		return G_MISS;
	if (g.flags != 200 && g.flags != 404) {
		/* A lease marker (or a foreign item): never served. */
		free(g.value);
		return G_LEASE;
	}
	out->status = (int)g.flags;
	out->body = g.value;
	out->len = g.vlen;
	return G_VALUE;
}

void
cache_run_fill(struct cache *c, cache_fill_fn fill, void *arg, size_t idx,
	       struct cache_value *out, struct cache_fetch_info *info)
{
	uint64_t t0 = hs_now_us();

	out->body = NULL;
	out->len = 0;
	out->status = fill(arg, idx, &out->body, &out->len);
	if (out->body == NULL) {
		out->body = hs_xstrdup("");
		out->len = 0;
	}
	info->fill_us += hs_now_us() - t0;
	info->filled = true;
	CNT_INC(c->sh, fills);
}

/* The window a talk widens to show the stale-set race. */
static void
fill_delay(struct cache *c)
{
	if (c->sh->o.fill_delay_ms)
		sleep_ms(c->sh->o.fill_delay_ms);
}

/*
 * After a timeout the text protocol may still deliver the late answer on
 * that socket; closing the handle's connections guarantees the next
 * command never reads it as its own.
 */
void
cache_drop_conns(struct cache *c)
{
	cache_mc_close_all(c);
}

/* gets k: our lease's CAS if the item is still the marker we added. */
static memcached_return_t
lease_cas(struct cache *c, const char *key, size_t klen, const char *token,
	  size_t tlen, uint64_t *cas, bool *have)
{
	memcached_return_t rc;
	struct get1 g;

	rc = get_one(c, key, klen, &g);
	if (rc == MEMCACHED_SUCCESS && g.found && g.flags == CACHE_FLAG_LEASE &&
	    g.vlen == tlen && memcmp(g.value, token, tlen) == 0) {
		*cas = g.cas;
		*have = true;
	}
	free(g.value);
	return rc;
}

/*
 * add k <token>: on a win, take our CAS with gets, fill, wait fill_delay,
 * and cas the body in.  out is filled unless L_LOST or L_ERR is returned.
 */
enum lease_res
cache_lease_try(struct cache *c, struct cache_breaker *b, const char *key,
		size_t klen, cache_fill_fn fill, void *arg, size_t idx,
		struct cache_value *out, struct cache_fetch_info *info)
{
	struct cache_shared *s = c->sh;
	char token[64];
	size_t tlen;
	memcached_return_t rc;
	uint64_t cas = 0;
	bool have_cas = false;

	tlen = (size_t)snprintf(token, sizeof(token),
				LEASE_PREFIX "%016" PRIx64,
				hs_rng_next(&c->rng));
	TIMED(info, rc = cache_mc_store(c, CACHE_MC_ADD, key, klen, token, tlen,
					CACHE_FLAG_LEASE, s->o.lease_ttl_s, 0));
	if (!note_rc(c, b, rc)) {
		cache_drop_conns(c);
		return L_ERR;
	}
	if (rc != MEMCACHED_SUCCESS)
		return L_LOST;
	info->lease_won = true;
	CNT_INC(s, lease_wins);

	/*
	 * A delete between our add and this gets, or a newer lease after
	 * ours expired, leaves us without our marker: fill but never store.
	 */
	TIMED(info, rc = lease_cas(c, key, klen, token, tlen, &cas, &have_cas));
	if (!note_rc(c, b, rc)) {
		cache_drop_conns(c);
		cache_run_fill(c, fill, arg, idx, out, info);
		return L_ERR_FILLED;
	}
	cache_run_fill(c, fill, arg, idx, out, info);
	if (!storable(out->status)) {
		/* Release the waiters now rather than at lease expiry. */
		if (have_cas) {
			TIMED(info, rc = cache_mc_delete(c, key, klen));
			if (!note_rc(c, b, rc))
				cache_drop_conns(c);
		}
		return L_DONE;
	}
	fill_delay(c);
	if (!have_cas) {
		info->fill_conflict = true;
		CNT_INC(s, fill_conflicts);
		return L_DONE;
	}
	TIMED(info, rc = cache_mc_store(c, CACHE_MC_CAS, key, klen, out->body,
					out->len, (uint32_t)out->status,
					ttl_for(c, out->status), cas));
	if (rc == MEMCACHED_SUCCESS) {
		cache_brk_ok(b);
		info->stored = true;
		CNT_INC(s, sets);
	} else if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND) {
		/* An update deleted our lease: this body may be stale. */
		cache_brk_ok(b);
		info->fill_conflict = true;
		CNT_INC(s, fill_conflicts);
	} else {
		note_rc(c, b, rc);
		cache_drop_conns(c);
		CNT_INC(s, set_errors);
	}
	return L_DONE;
}

/* naive: fill, fill_delay, set; no protection against a concurrent update. */
void
cache_naive_fill(struct cache *c, struct cache_breaker *b, const char *key,
		 size_t klen, cache_fill_fn fill, void *arg, size_t idx,
		 struct cache_value *out, struct cache_fetch_info *info)
{
	memcached_return_t rc;

	cache_run_fill(c, fill, arg, idx, out, info);
	if (!storable(out->status))
		return;
	fill_delay(c);
	TIMED(info, rc = cache_mc_store(c, CACHE_MC_SET, key, klen, out->body,
					out->len, (uint32_t)out->status,
					ttl_for(c, out->status), 0));
	if (note_rc(c, b, rc)) {
		info->stored = true;
		CNT_INC(c->sh, sets);
	} else {
		cache_drop_conns(c);
		CNT_INC(c->sh, set_errors);
	}
}

void
cache_count_res(struct cache *c, enum cache_res r, const struct cache_value *v)
{
	if (r == CACHE_HIT) {
		CNT_INC(c->sh, hits);
		if (v->status == 404)
			CNT_INC(c->sh, negative_hits);
	} else if (r == CACHE_MISS) {
		CNT_INC(c->sh, misses);
	} else {
		CNT_INC(c->sh, bypasses);
	}
}

struct lease_wait {
	uint64_t deadline_us;
	uint64_t poll_us;
};

static void
sleep_us(uint64_t us)
{
	struct timespec ts = { (time_t)(us / 1000000),
			       (long)(us % 1000000) * 1000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * A lease is held elsewhere: the first call starts the wait clock.  Polls
 * start at 0.5 ms and double up to lease_poll_ms, so a fast fill is picked
 * up quickly and a slow one does not hammer memcached.
 */
static bool
wait_turn(struct cache *c, struct lease_wait *w, struct cache_fetch_info *info)
{
	uint64_t now = hs_now_us(),
		 max_us = (uint64_t)c->sh->o.lease_poll_ms * 1000;
	uint64_t us;

	if (!info->lease_waited) {
		info->lease_waited = true;
		CNT_INC(c->sh, lease_waits);
		w->deadline_us = now + (uint64_t)c->sh->o.lease_wait_ms * 1000;
		w->poll_us = 500 < max_us ? 500 : max_us;
	}
	if (now >= w->deadline_us)
		return false;
	us = w->poll_us;
	if (us > w->deadline_us - now)
		us = w->deadline_us - now;
	sleep_us(us);
	w->poll_us = w->poll_us * 2 < max_us ? w->poll_us * 2 : max_us;
	info->wait_us += hs_now_us() - now;
	return true;
}

/* The read protocol; missed: a get just answered "not found" (a batch's),
   so the first round starts at the lease instead of asking again. */
static enum cache_res
fetch(struct cache *c, const char *key, cache_fill_fn fill, void *arg,
      struct cache_value *out, struct cache_fetch_info *info_opt, bool missed)
{
	struct cache_fetch_info local, *info = info_opt ? info_opt : &local;
	size_t klen = strlen(key);
	struct cache_breaker *b = cache_brk_of(c, key, klen);
	enum cache_res r;
	struct lease_wait lw = { 0, 0 };

	memset(info, 0, sizeof(*info));
	memset(out, 0, sizeof(*out));
	for (;;) {
		enum get_kind g;

		if (!cache_brk_allow(c->sh, b)) {
			info->breaker_open = true;
			goto bypass;
		}
		g = missed ? G_MISS : do_get(c, b, key, klen, out, info);
		missed = false;
		if (g == G_VALUE) {
			r = CACHE_HIT;
			info->negative = out->status == 404;
			goto done;
		}
		if (g == G_ERR) {
			cache_drop_conns(c);
			goto bypass;
		}
		r = CACHE_MISS;
		if (c->sh->o.mode == CACHE_MODE_NAIVE) {
			cache_naive_fill(c, b, key, klen, fill, arg, 0, out,
					 info);
			goto done;
		}
		/*
		 * A miss (first time, or while waiting: the winner gave up or
		 * an update deleted its lease) means we try to fill; a marker
		 * means someone else is filling.
		 */
		if (g == G_MISS) {
			switch (cache_lease_try(c, b, key, klen, fill, arg, 0,
						out, info)) {
			case L_DONE:
				goto done;
			case L_ERR:
				goto bypass;
			case L_ERR_FILLED:
				r = CACHE_ERR;
				goto done;
			case L_LOST:
				break;
			}
		}
		if (!wait_turn(c, &lw, info)) {
			info->lease_fallback = true;
			CNT_INC(c->sh, lease_fallbacks);
			cache_run_fill(c, fill, arg, 0, out, info);
			goto done;
		}
	}
bypass:
	cache_run_fill(c, fill, arg, 0, out, info);
	r = CACHE_ERR;
done:
	info->res = r;
	cache_count_res(c, r, out);
	if (!info->breaker_open)
		hs_hist_record(&c->sh->fetch_hist, info->cache_us);
	return r;
}

enum cache_res
cache_fetch(struct cache *c, const char *key, cache_fill_fn fill, void *arg,
	    struct cache_value *out, struct cache_fetch_info *info)
{
	return fetch(c, key, fill, arg, out, info, false);
}

enum cache_res
cache_fetch_missed(struct cache *c, const char *key, cache_fill_fn fill,
		   void *arg, struct cache_value *out,
		   struct cache_fetch_info *info)
{
	return fetch(c, key, fill, arg, out, info, true);
}

int
cache_store(struct cache *c, const char *key, int status, const char *body,
	    size_t len)
{
	size_t klen = strlen(key);
	struct cache_breaker *b = cache_brk_of(c, key, klen);
	memcached_return_t rc;

	if (!storable(status) || !cache_brk_allow(c->sh, b))
		return -1;
	rc = cache_mc_store(c, CACHE_MC_SET, key, klen, body, len,
			    (uint32_t)status, ttl_for(c, status), 0);
	if (!note_rc(c, b, rc)) {
		cache_drop_conns(c);
		CNT_INC(c->sh, set_errors);
		return -1;
	}
	CNT_INC(c->sh, sets);
	return 0;
}

/* ---- invalidation ----------------------------------------------------- */

size_t
cache_invalidate(struct cache *c, const char *const *keys, size_t n)
{
	static const unsigned backoff_ms[] = { 1, 5, 25 };
	struct cache_shared *s = c->sh;
	size_t failed = 0;

	for (size_t i = 0; i < n; i++) {
		size_t klen = strlen(keys[i]);
		struct cache_breaker *b = cache_brk_of(c, keys[i], klen);
		bool done = false;

		/*
		 * Always try once, even with the breaker open: a delete is
		 * what keeps readers correct, and libmemcached fails fast on
		 * a server it knows to be down.
		 */
		for (unsigned t = 0; t <= 3 && !done; t++) {
			memcached_return_t rc;

			if (t > 0) {
				if (atomic_load(&b->state) != BRK_CLOSED)
					break;
				CNT_INC(s, invalidation_retries);
				sleep_ms(backoff_ms[t - 1]);
			}
			rc = cache_mc_delete(c, keys[i], klen);
			if (note_rc(c, b, rc))
				done = true;
			else
				cache_drop_conns(c);
		}
		if (done) {
			CNT_INC(s, invalidations);
		} else {
			CNT_INC(s, invalidation_failures);
			failed++;
			log_warnx_rl("cache: delete %s failed: %s (counted in "
				     "invalidation_failures)",
				     keys[i], c->err);
		}
	}
	return failed;
}

/* ---- remote markers --------------------------------------------------- */

#define MARKER_FLAGS 2u /* neither an HTTP status nor a lease */
#define MARKER_TRIES 4

/* A marker's decimal value; false when it is not one. */
static bool
marker_parse(const char *v, size_t n, uint64_t *out)
{
	uint64_t x = 0;

	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint64_t d = (uint64_t)(v[i] - '0');

		if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - d) / 10)
			return false;
		x = x * 10 + d;
	}
	*out = x;
	return true;
}

enum cache_res
cache_marker_get(struct cache *c, const char *key, uint64_t *val)
{
	size_t klen = strlen(key);
	struct cache_breaker *b = cache_brk_of(c, key, klen);
	memcached_return_t rc;
	struct get1 g;
	bool ok;

	if (!cache_brk_allow(c->sh, b))
		return CACHE_ERR;
	rc = get_one(c, key, klen, &g);
	if (!note_rc(c, b, rc)) {
		free(g.value);
		cache_drop_conns(c);
		return CACHE_ERR;
	}
	if (!g.found)
		return CACHE_MISS;
	ok = marker_parse(g.value, g.vlen, val);
	free(g.value);
	/* Not ours to read: as good as no answer. */
	return ok ? CACHE_HIT : CACHE_ERR;
}

/*
 * One try at raising key to at least val: add when absent, else cas the
 * larger of the two (which also restarts its TTL).  SUCCESS, or
 * NOTSTORED / DATA_EXISTS / NOTFOUND when another writer got in between
 * (try again), or a failure.
 */
static memcached_return_t
marker_raise_once(struct cache *c, const char *key, size_t klen, uint64_t val,
		  unsigned ttl_s)
{
	memcached_return_t rc;
	char buf[24];
	uint64_t cur;
	struct get1 g;
	int n;

	rc = get_one(c, key, klen, &g);
	if (rc != MEMCACHED_SUCCESS) {
		free(g.value);
		return rc;
	}
	if (g.found && marker_parse(g.value, g.vlen, &cur) && cur > val)
		val = cur;
	free(g.value);
	n = snprintf(buf, sizeof(buf), "%" PRIu64, val);
	if (!g.found)
		return cache_mc_store(c, CACHE_MC_ADD, key, klen, buf,
				      (size_t)n, MARKER_FLAGS, ttl_s, 0);
	return cache_mc_store(c, CACHE_MC_CAS, key, klen, buf, (size_t)n,
			      MARKER_FLAGS, ttl_s, g.cas);
}

int
cache_marker_raise(struct cache *c, const char *key, uint64_t val,
		   unsigned ttl_s)
{
	size_t klen = strlen(key);
	struct cache_breaker *b = cache_brk_of(c, key, klen);
	memcached_return_t rc = MEMCACHED_FAILURE;

	/* Tried even with the breaker open, as a delete is: readers that
	   find memcached usable rely on it. */
	for (int t = 0; t < MARKER_TRIES; t++) {
		rc = marker_raise_once(c, key, klen, val, ttl_s);
		if (rc == MEMCACHED_SUCCESS) {
			cache_brk_ok(b);
			return 0;
		}
		if (!note_rc(c, b, rc)) {
			cache_drop_conns(c);
			return -1;
		}
	}
	/* Writers kept racing on the key: the largest value there is safe
	   (it sends every reader to the primary) and needs no compare. */
	rc = cache_mc_store(c, CACHE_MC_SET, key, klen, "18446744073709551615",
			    20, MARKER_FLAGS, ttl_s, 0);
	if (!note_rc(c, b, rc)) {
		cache_drop_conns(c);
		return -1;
	}
	return 0;
}
