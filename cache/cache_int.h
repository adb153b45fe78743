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
	atomic_uint fails;             /* consecutive errors while closed */
	atomic_uint_fast64_t until_ns; /* open until / probe deadline */
	char name[80];                 /* "HOST:PORT" */
	char host[64];                 /* where mc.c connects */
	int port;
};

/* Relaxed atomics: counters need no ordering, only no lost updates. */
struct cache_counters {
#define CACHE_CNT_FIELD(name, help) atomic_uint_fast64_t name;
	CACHE_COUNTERS(CACHE_CNT_FIELD)
#undef CACHE_CNT_FIELD
};

#define CNT_INC(s, f) \
	atomic_fetch_add_explicit(&(s)->cnt.f, 1, memory_order_relaxed)

struct cache_shared {
	struct cache_opts o;
	char *servers;       /* o.servers points here */
	memcached_st *proto; /* configured once, cloned per handle */
	pthread_mutex_t mu;  /* guards proto cloning and the handle list */
	pthread_key_t tkey;
	LIST_HEAD(, cache) thandles;
	unsigned nbrk;
	struct cache_breaker *brk;
	struct cache_counters cnt;
	struct hs_hist fetch_hist; /* memcached time per fetch */
};

struct mc_conn;

struct cache {
	struct cache_shared *sh;
	memcached_st *mc;      /* key distribution only; I/O is mc.c's */
	struct mc_conn *conns; /* one per server, in brk order */
	uint64_t rng;          /* hs_rng.h state: jitter, lease tokens */
	bool is_thread;
	LIST_ENTRY(cache) link;
	char err[160];
};

/*
 * mc.c: the memcached text protocol, strict (see there why not
 * libmemcached's I/O).  Results are memcached_return_t so that callers keep
 * one vocabulary: SUCCESS, the answers (NOTSTORED, DATA_EXISTS, NOTFOUND),
 * or a failure (TIMEOUT, CONNECTION_FAILURE, PROTOCOL_ERROR, SERVER_ERROR,
 * ...), after which that server's connection is already closed.
 */
#define CACHE_VALUE_MAX (16u << 20) /* the largest value a reply may carry */

enum cache_mc_verb { CACHE_MC_SET, CACHE_MC_ADD, CACHE_MC_CAS };

struct cache_mc_item {
	size_t idx;      /* index of the key in the request */
	const char *key; /* the key (NUL-terminated), as asked */
	size_t klen;
	uint32_t flags;
	uint64_t cas;
	char *value; /* malloc'd, NUL-terminated; take it by setting
				value to NULL, else it is freed after cb */
	size_t vlen;
};
typedef void (*cache_mc_item_fn)(void *arg, struct cache_mc_item *it);

struct mc_conn *cache_mc_conns_new(unsigned n);
void cache_mc_conns_free(struct mc_conn *v, unsigned n);
void cache_mc_close_all(struct cache *c);
/* The server index (brk order) of a key: libmemcached's ketama. */
unsigned cache_mc_server_of(struct cache *c, const char *key, size_t klen);
memcached_return_t cache_mc_store(struct cache *c, enum cache_mc_verb verb,
				  const char *key, size_t klen, const char *val,
				  size_t vlen, uint32_t flags, unsigned exptime,
				  uint64_t cas);
/* DELETED is SUCCESS; NOT_FOUND is NOTFOUND. */
memcached_return_t cache_mc_delete(struct cache *c, const char *key,
				   size_t klen);
/*
 * gets for n keys over their servers.  srv_rc (one per server, or NULL)
 * receives each server's result (SUCCESS when its whole reply checked out,
 * also for servers not asked).  cb sees each item found, only from servers whose
 * reply was complete and valid.  Returns SUCCESS or the first failure.
 */
memcached_return_t cache_mc_gets(struct cache *c, const char *const *keys,
				 const size_t *lens, size_t n,
				 memcached_return_t *srv_rc,
				 cache_mc_item_fn cb, void *arg);

/* fetch.c: the pieces of the read protocol that mget.c reuses */
/* Runs expr (libmemcached calls) and adds its duration to info->cache_us. */
#define TIMED(info, expr)                              \
	do {                                           \
		uint64_t t0_ = hs_now_us();            \
		expr;                                  \
		(info)->cache_us += hs_now_us() - t0_; \
	} while (0)

enum lease_res { L_DONE, L_LOST, L_ERR, L_ERR_FILLED };

struct cache_breaker *cache_brk_of(struct cache *c, const char *key,
				   size_t klen);
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

/* breaker.c: the circuit breaker */
bool cache_brk_allow(struct cache_shared *s, struct cache_breaker *b);
void cache_brk_ok(struct cache_breaker *b);
void cache_brk_fail(struct cache_shared *s, struct cache_breaker *b);
const char *cache_brk_state_name(int st);

#endif
