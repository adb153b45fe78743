/*
 * The cache's per-server circuit breaker: closed until breaker_errors
 * consecutive memcached errors on a server, then open (requests for that
 * server's keys bypass memcached without a network call) for
 * breaker_open_ms, then half-open: exactly one request probes memcached;
 * success closes, failure reopens.  A probe that never reports back is
 * replaced after another breaker_open_ms.
 */
#include <stdatomic.h>

#include "cache_int.h"
#include "hs_log.h"
#include "hs_util.h"

const char *
cache_brk_state_name(int st)
{
	switch (st) {
	case BRK_CLOSED:
		return "closed";
	case BRK_OPEN:
		return "open";
	default:
		return "half-open";
	}
}

bool
cache_brk_allow(struct cache_shared *s, struct cache_breaker *b)
{
	int st = atomic_load_explicit(&b->state, memory_order_acquire);
	uint64_t now;

	if (st == BRK_CLOSED)
		return true;
	now = hs_now_ns();
	if (now < atomic_load_explicit(&b->until_ns, memory_order_acquire))
		return false;
	/* Open time over (or a probe went silent): one caller becomes the probe. */
	if (atomic_compare_exchange_strong(&b->state, &st, BRK_HALF)) {
		atomic_store(&b->until_ns,
			     now + (uint64_t)s->o.breaker_open_ms * 1000000u);
		return true;
	}
	return false;
}

void
cache_brk_ok(struct cache_breaker *b)
{
	if (atomic_load_explicit(&b->fails, memory_order_relaxed) != 0)
		atomic_store_explicit(&b->fails, 0, memory_order_relaxed);
	int st = atomic_load_explicit(&b->state, memory_order_relaxed);

	if (st != BRK_CLOSED &&
	    atomic_compare_exchange_strong(&b->state, &st, BRK_CLOSED))
		log_info_rl("cache: memcached %s answers again; breaker closed",
			    b->name);
}

void
cache_brk_fail(struct cache_shared *s, struct cache_breaker *b)
{
	uint64_t until =
		hs_now_ns() + (uint64_t)s->o.breaker_open_ms * 1000000u;
	int st = atomic_load(&b->state);

	if (st == BRK_HALF) {
		atomic_store(&b->until_ns, until);
		if (atomic_compare_exchange_strong(&b->state, &st, BRK_OPEN))
			CNT_INC(s, breaker_opens);
		return;
	}
	if (st != BRK_CLOSED)
		return;
	if (atomic_fetch_add(&b->fails, 1) + 1 < s->o.breaker_errors)
		return;
	atomic_store(&b->until_ns, until);
	if (atomic_compare_exchange_strong(&b->state, &st, BRK_OPEN)) {
		atomic_store(&b->fails, 0);
		CNT_INC(s, breaker_opens);
		log_warnx_rl("cache: memcached %s failing; breaker open, reads "
			     "bypass it (probe every %u ms)",
			     b->name, s->o.breaker_open_ms);
	}
}
