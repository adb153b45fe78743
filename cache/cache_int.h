/*
 * Internals shared by the cache library's files: the shared and per-thread
 * structures, the counters, the per-server circuit breaker, and the pieces
 * of the read protocol that the multi-get reuses.
 */
#ifndef HS_CACHE_INT_H
#define HS_CACHE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/queue.h>

#include <libmemcached/memcached.h>

#include "cache.h"
#include "hs_hist.h"
#include "hs_util.h"

/* memcached flags of a stored item: the HTTP status, or a lease marker. */
#define CACHE_FLAG_LEASE 1u

enum { BRK_CLOSED = 0, BRK_OPEN = 1, BRK_HALF = 2 };

struct cache_breaker {
	atomic_int state;
	atomic_uint fails;       /* consecutive errors while closed */
	atomic_uint_fast64_t until_ns; /* open until / probe deadline */
	char name[80];           /* "HOST:PORT" */
};

/* Relaxed atomics: counters need no ordering, only no lost updates. */
struct cache_counters {
	atomic_uint_fast64_t hits, negative_hits, misses, fills, sets, set_errors;
	atomic_uint_fast64_t lease_wins, lease_waits, lease_fallbacks;
	atomic_uint_fast64_t fill_conflicts, invalidations, invalidation_retries;
	atomic_uint_fast64_t invalidation_failures, errors, bypasses;
	atomic_uint_fast64_t breaker_opens;
	atomic_uint_fast64_t batches, batch_keys;
};

#define CNT_INC(s, f) atomic_fetch_add_explicit(&(s)->cnt.f, 1, memory_order_relaxed)

struct cache_shared {
	struct cache_opts o;
	char *servers;           /* o.servers points here */
	memcached_st *proto;     /* configured once, cloned per handle */
	pthread_mutex_t mu;      /* guards proto cloning and the handle list */
	pthread_key_t tkey;
	LIST_HEAD(, cache) thandles;
	unsigned nbrk;
	struct cache_breaker *brk;
	struct cache_counters cnt;
	struct hs_hist fetch_hist; /* memcached time per fetch */
	atomic_uint_fast64_t last_warn_ns; /* rate limit for failure logs */
};

struct cache {
	struct cache_shared *sh;
	memcached_st *mc;
	uint64_t rng;
	bool is_thread;
	LIST_ENTRY(cache) link;
	char err[160];
};

/* cache.c */
uint64_t cache_rng_next(uint64_t *s);

/* fetch.c: the pieces of the read protocol that mget.c reuses */
/* Runs expr (libmemcached calls) and adds its duration to info->cache_us. */
#define TIMED(info, expr)                                                     \
	do {                                                                  \
		uint64_t t0_ = hs_now_us();                                   \
		expr;                                                         \
		(info)->cache_us += hs_now_us() - t0_;                        \
	} while (0)

enum lease_res { L_DONE, L_LOST, L_ERR, L_ERR_FILLED };

struct cache_breaker *cache_brk_of(struct cache *c, const char *key, size_t klen);
void cache_drop_conns(struct cache *c);
void cache_run_fill(struct cache *c, cache_fill_fn fill, void *arg, size_t idx,
		    struct cache_value *out, struct cache_fetch_info *info);
void cache_naive_fill(struct cache *c, struct cache_breaker *b, const char *key,
		      size_t klen, cache_fill_fn fill, void *arg, size_t idx,
		      struct cache_value *out, struct cache_fetch_info *info);
enum lease_res cache_lease_try(struct cache *c, struct cache_breaker *b,
			       const char *key, size_t klen, cache_fill_fn fill,
			       void *arg, size_t idx, struct cache_value *out,
			       struct cache_fetch_info *info);
void cache_count_res(struct cache *c, enum cache_res r,
		     const struct cache_value *v);

/* mget.c: one multi-get round; res[i] HIT / MISS / ERR, times into info. */
size_t cache_mget_timed(struct cache *c, const char *const *keys, size_t n,
			struct cache_value *out, enum cache_res *res,
			struct cache_fetch_info *info);

/* stats.c: the breaker */
bool cache_brk_allow(struct cache_shared *s, struct cache_breaker *b);
void cache_brk_ok(struct cache_breaker *b);
void cache_brk_fail(struct cache_shared *s, struct cache_breaker *b);
const char *cache_brk_state_name(int st);

#endif
