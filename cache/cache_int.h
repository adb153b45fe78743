/*
 * Internals shared by the cache library's files: the shared and per-thread
 * structures, the counters and the per-server circuit breaker.
 */
#ifndef HS_CACHE_INT_H
#define HS_CACHE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/queue.h>

#include <libmemcached/memcached.h>

#include "cache.h"
#include "hs_hist.h"

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

/* breaker.c */
bool cache_brk_allow(struct cache_shared *s, struct cache_breaker *b);
void cache_brk_ok(struct cache_breaker *b);
void cache_brk_fail(struct cache_shared *s, struct cache_breaker *b);
const char *cache_brk_state_name(int st);

#endif
