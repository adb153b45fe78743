/*
 * hs_cache: cache-aside over memcached (classic text protocol, spoken by mc.c;
 * libmemcached for ketama key distribution)
 * for final HTTP response bodies, with leases against the stale-set race and
 * the thundering herd, delete-on-update invalidation with bounded retries,
 * negative caching of 404s, ketama consistent hashing over several servers,
 * and a per-server circuit breaker so that a down or slow memcached costs a
 * request a few milliseconds at most and never fails it.
 *
 * Threads: one struct cache_shared per process (options, counters, breakers;
 * thread-safe) and one struct cache per thread (a libmemcached connection
 * set; NOT thread-safe).  cache_thread_handle() hands out the calling
 * thread's handle lazily, so worker threads need no start-up hook.
 *
 * Lease protocol (mode lease), see DESIGN.md "Cache protocol":
 *   get k -> value: serve (a lease marker is "being filled", never served).
 *   miss  -> add k <lease token> ttl=lease
 *            won:  gets k (our CAS), fill, cas k body  (NOTFOUND/EXISTS when
 *                  an invalidation deleted the lease meanwhile: serve the
 *                  fresh body, do not store)
 *            lost: re-get every poll interval up to the wait bound, then
 *                  fill without storing.
 * Mode naive is get / miss / fill / set, kept to demonstrate the race.
 *
 * Use from a server:
 *   start:    cache_opts_default(&o); set servers, mode, fill_delay_ms;
 *             s = cache_shared_new(&o, err, sizeof(err)) (NULL: exit 2).
 *   GET:      c = cache_thread_handle(s); cache_key_product(k, id);
 *             r = cache_fetch(c, k, fill, arg, &v, &info);
 *             serve v.status / v.body; X-Cache: cache_res_name(r);
 *             Server-Timing cache = info.cache_us + info.wait_us;
 *             cache_value_release(&v).
 *   batched:  one b = cache_batcher_new(s, 64, ...) per event loop; per
 *             GET fill a cache_batch_req (key, done) and
 *             cache_batch_submit(b, r); after each pass of the loop,
 *             cache_batcher_run(b).  In done: a HIT is served from
 *             r->value, a MISS goes through cache_fetch_missed, an ERR
 *             through cache_fetch, as above.
 *   write:    after COMMIT, cache_invalidate(c, keys, n) (never before).
 *   stats:    cache_stats_json / cache_stats_prom; /healthz: cache_health.
 *   stop:     after the worker threads are gone, cache_shared_free(s).
 */
#ifndef HS_CACHE_H
#define HS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hs_buf.h"
#include "hs_metrics.h"

struct cache_shared;
struct cache;

/* A miss is not an error; CACHE_ERR means "memcached not usable, bypassed". */
enum cache_res { CACHE_HIT = 0, CACHE_MISS = 1, CACHE_ERR = 2 };

enum cache_mode { CACHE_MODE_LEASE = 0, CACHE_MODE_NAIVE = 1 };

struct cache_opts {
	const char *servers;    /* "HOST:PORT[,HOST:PORT...]"; copied */
	enum cache_mode mode;   /* lease */
	unsigned ttl_s;         /* 300: TTL of 200 bodies */
	double ttl_jitter;      /* 0.1: TTL drawn from [ttl*(1-j), ttl] */
	unsigned neg_ttl_s;     /* 5: TTL of 404 bodies (negative entries) */
	unsigned lease_ttl_s;   /* 3: lifetime of a lease marker */
	unsigned lease_wait_ms; /* 300: longest a loser waits for the winner */
	unsigned lease_poll_ms; /* 5: longest pause between a loser's re-gets
				      (they start at 0.5 ms and double) */
	unsigned connect_timeout_ms; /* 50 */
	unsigned io_timeout_ms;      /* 50: poll / send / receive timeout */
	unsigned breaker_errors; /* 5: consecutive errors that open a breaker */
	unsigned breaker_open_ms; /* 250: open time before a half-open probe */
	unsigned fill_delay_ms; /* 0: sleep between fill and store (tests/talks) */
};

/* Fills o with the defaults above (servers = "127.0.0.1:11211"). */
void cache_opts_default(struct cache_opts *o);
/* "lease" or "naive"; returns 0 or -1. ("off" is the caller's business.) */
int cache_mode_parse(const char *s, enum cache_mode *out);
const char *cache_mode_name(enum cache_mode m);

/*
 * Creates the shared state and checks the options (server list syntax,
 * ranges).  Does not connect: memcached may come up later.  Returns NULL
 * with a one-line reason in err on bad options.
 */
struct cache_shared *cache_shared_new(const struct cache_opts *o, char *err,
				      size_t errlen);
/*
 * Frees the shared state and every handle cache_thread_handle() created.
 * Handles from cache_new() must be freed by their owner first.  No thread
 * may be using the cache any more.  NULL is a no-op.
 */
void cache_shared_free(struct cache_shared *s);

/* A new handle for one thread at a time; free with cache_free.  NULL-safe free. */
struct cache *cache_new(struct cache_shared *s);
void cache_free(struct cache *c);
/*
 * The calling thread's handle, created on first use and freed when the
 * thread exits (or by cache_shared_free).  Never NULL.
 */
struct cache *cache_thread_handle(struct cache_shared *s);

/* A response body with its HTTP status (200 or 404 from the cache). */
struct cache_value {
	int status;
	char *body; /* malloc'd, owned by the holder; NUL-terminated */
	size_t len;
};
/* Frees v->body (free(3) works too) and zeroes v.  NULL-safe. */
void cache_value_release(struct cache_value *v);

/*
 * The database work for a miss: returns the HTTP status and hands over the
 * response body in *body (malloc'd; the cache takes ownership and passes it
 * to the caller in out).  idx is the key's index (0 for cache_fetch).  Only
 * 200 (ttl) and 404 (neg_ttl) are stored; any other status is served but
 * never cached.
 */
typedef int (*cache_fill_fn)(void *arg, size_t idx, char **body, size_t *len);

struct cache_fetch_info {
	enum cache_res res;  /* same as the return value */
	bool negative;       /* served a cached 404 */
	bool filled;         /* fill was called */
	bool stored;         /* the filled body went into memcached */
	bool lease_won;      /* this call filled under its own lease */
	bool lease_waited;   /* found another filler's lease and waited */
	bool lease_fallback; /* waited out the bound, filled without storing */
	bool fill_conflict;  /* cas refused: an update deleted our lease */
	bool breaker_open;   /* bypassed without asking memcached */
	uint64_t cache_us;   /* time in memcached calls */
	uint64_t wait_us;    /* time sleeping on another filler's lease */
	uint64_t fill_us;    /* time in fill (without fill_delay_ms) */
};

/*
 * Cache-aside read of key.  out always receives a response to serve (from
 * memcached or from fill); the caller releases it with cache_value_release.
 * Returns CACHE_HIT (X-Cache: HIT), CACHE_MISS (filled; X-Cache: MISS) or
 * CACHE_ERR (memcached unusable, filled; X-Cache: BYPASS).  info may be NULL.
 */
enum cache_res cache_fetch(struct cache *c, const char *key, cache_fill_fn fill,
			   void *arg, struct cache_value *out,
			   struct cache_fetch_info *info);
/*
 * cache_fetch for a key that a get has just found missing (a read batcher's
 * CACHE_MISS): the same protocol, without asking again first.  It starts at
 * the lease (or, naive, at the fill); a lease marker the batch saw as a miss
 * only makes the add fail, and the reader then waits its turn as usual.
 */
enum cache_res cache_fetch_missed(struct cache *c, const char *key,
				  cache_fill_fn fill, void *arg,
				  struct cache_value *out,
				  struct cache_fetch_info *info);

/*
 * Multi-key variant (one gets round trip for all keys, then one fill
 * per missing key under a lease; a key whose lease is held elsewhere is
 * filled without storing and without waiting).  out[n] and res[n] receive
 * one value / result per key (duplicates allowed).  Returns CACHE_HIT when
 * every key hit, CACHE_ERR when any key was bypassed, else CACHE_MISS.
 * info (may be NULL) sums the times; its flags are ORed over the keys.
 */
enum cache_res cache_mfetch(struct cache *c, const char *const *keys, size_t n,
			    cache_fill_fn fill, void *arg,
			    struct cache_value *out, enum cache_res *res,
			    struct cache_fetch_info *info);

/*
 * Lower level: multi-get only.  res[i] is HIT (out[i] set), MISS (nothing,
 * or a lease marker) or ERR (server unusable).  Returns the count of hits.
 */
size_t cache_mget(struct cache *c, const char *const *keys, size_t n,
		  struct cache_value *out, enum cache_res *res);
/* Plain set with the TTL for status (200 or 404, else refused).  0 / -1. */
int cache_store(struct cache *c, const char *key, int status, const char *body,
		size_t len);

/*
 * Deletes keys after a database commit.  NOTFOUND counts as done; another
 * error is retried up to 3 times with 1, 5, 25 ms backoff (once only while
 * the key's breaker is open).  Returns how many keys could not be deleted
 * (counted in invalidation_failures; their TTL bounds the staleness).
 */
size_t cache_invalidate(struct cache *c, const char *const *keys, size_t n);

/*
 * Remote markers (Scaling Memcache at Facebook, section 5): small items
 * that say "this key was written at position V" so that servers other
 * than the writer can see it.  Values are decimal uint64; a marker is
 * raised, never lowered, so two writers racing leave the larger.
 *
 * cache_marker_get: HIT (*val set), MISS (no marker) or ERR (memcached
 * unusable: breaker open, an error, or an item that is not a marker).
 * One round trip.
 *
 * cache_marker_raise: makes key's value at least val with a TTL of ttl_s
 * (add, or gets then cas; a few tries, then a set of UINT64_MAX, which
 * is above any value).  Tried even while the key's breaker is open.
 * Returns 0, or -1 when memcached could not be told (counted in errors).
 */
enum cache_res cache_marker_get(struct cache *c, const char *key,
				uint64_t *val);
int cache_marker_raise(struct cache *c, const char *key, uint64_t val,
		       unsigned ttl_s);

/* X-Cache value of a result: "HIT", "MISS", "BYPASS". */
const char *cache_res_name(enum cache_res r);

/* Keys: a format version prefix so that a body format change starts cold. */
#define CACHE_KEY_PREFIX "hs1:"
#define CACHE_KEY_MAX    48
/* Write "hs1:p:<id>" etc. into buf (CACHE_KEY_MAX bytes); return the length. */
int cache_key_product(char *buf, int64_t id);
int cache_key_category(char *buf, int64_t id);
int cache_key_world(char *buf, int64_t id);
/* "hs1:rm:<slot>": the remote marker of a slot of keys. */
int cache_key_marker(char *buf, uint64_t slot);

/*
 * The read batcher: gathers the first `get` of many reads and asks memcached
 * for all of them in one multi-get.  It belongs to one thread (an event
 * loop) and is not thread-safe.  The loop submits the key of every cacheable
 * read it parks during a pass over its ready connections, and runs the batch
 * once the pass is over: under load one round trip (and one memcached
 * wake-up) serves every read of the pass; with one client it is one get, as
 * without the batcher.  The get is sent after the request was received, so
 * a batched read sees every invalidation acknowledged before it: the same
 * guarantee as cache_fetch's own get.
 *
 * Only the first get is batched.  A hit is served as it is; a miss (or a
 * lease marker) is the caller's to resolve with cache_fetch_missed, an
 * error with cache_fetch (which then runs the whole lease or naive
 * protocol, breaker included).  Hits are counted here, misses and bypasses
 * by those calls.
 */
struct cache_batcher;

struct cache_batch_req {
	/* set by the caller */
	char key[CACHE_KEY_MAX];
	/* Called by cache_batcher_run once the answer is in; the batcher's
	   last use of the request, which done may free. */
	void (*done)(struct cache_batch_req *r);
	void *arg;
	/* set by cache_batch_submit */
	uint64_t submit_us; /* when it was queued (hs_now_us) */
	/* the answer */
	enum cache_res res;       /* HIT: value is set; MISS (or a lease
				      marker); ERR (memcached unusable) */
	struct cache_value value; /* the caller releases it */
	uint64_t cache_us;        /* the round trip of the batch */
	uint64_t queue_us;        /* queued before that multi-get started */
	unsigned batch_size;      /* keys in that multi-get */
	/* private */
	struct cache_batch_req *next;
};

/* A batcher with its own memcached connections; max_keys (1..1000) bounds
   one multi-get.  NULL: error, in err. */
struct cache_batcher *cache_batcher_new(struct cache_shared *s,
					unsigned max_keys, char *err,
					size_t errlen);
/*
 * Queues r (r->done and r->key set).  Returns 0, or -1 once the batcher is
 * stopped: then done is never called, and the caller reads on its own.
 */
int cache_batch_submit(struct cache_batcher *b, struct cache_batch_req *r);
/* Takes r out of the queue, if it is still there: its request went away
   before the batch ran.  done is then never called. */
void cache_batch_cancel(struct cache_batcher *b, struct cache_batch_req *r);
/* Asks for everything queued, max_keys keys per multi-get, and calls every
   request's done.  Returns how many were answered. */
size_t cache_batcher_run(struct cache_batcher *b);
/* Refuses new requests and answers every queued one.  Idempotent;
   cache_batcher_free() calls it. */
void cache_batcher_stop(struct cache_batcher *b);
/* Stops (if needed) and frees b.  NULL is a no-op. */
void cache_batcher_free(struct cache_batcher *b);

/*
 * The cache's counters, one line each: X(name, help).  All are counters
 * (they only grow); this list is the struct below, the shared atomics
 * (cache_int.h), the getter and both exports (hs_cache_<name>_total), so
 * adding a counter is adding a line here and counting it.
 */
#define CACHE_COUNTERS(X)                                                  \
	X(hits, "Reads served from memcached (including negative hits)")   \
	X(negative_hits, "Reads served from a cached 404")                 \
	X(misses, "Reads that had to run the database fill")               \
	X(fills, "Database fills run by the cache")                        \
	X(sets, "Bodies stored in memcached")                              \
	X(set_errors, "Stores that failed with a memcached error")         \
	X(lease_wins, "Misses that won the fill lease")                    \
	X(lease_waits, "Reads that waited on another reader's lease")      \
	X(lease_fallbacks,                                                 \
	  "Lease waits that timed out and filled without storing")         \
	X(fill_conflicts,                                                  \
	  "Fills not stored because an update deleted the lease")          \
	X(invalidations, "Keys deleted after updates")                     \
	X(invalidation_retries, "Delete retries after memcached errors")   \
	X(invalidation_failures, "Deletes that failed after all retries")  \
	X(errors, "memcached operation errors")                            \
	X(bypasses,                                                        \
	  "Reads served from the database because memcached was unusable") \
	X(breaker_opens, "Times a circuit breaker opened")                 \
	X(batches, "Multi-gets sent by the read batcher")                  \
	X(batch_keys, "Keys asked for in the read batcher's multi-gets")   \
	X(protocol_errors,                                                 \
	  "memcached replies that broke the protocol "                     \
	  "(connection closed, read served from the database)")

/* Counters, summed over every handle of a cache_shared. */
struct cache_stats {
#define CACHE_STATS_FIELD(name, help) uint64_t name;
	CACHE_COUNTERS(CACHE_STATS_FIELD)
#undef CACHE_STATS_FIELD
	unsigned breakers_open; /* servers whose breaker is not closed now */
	unsigned servers;
};
void cache_stats_get(struct cache_shared *s, struct cache_stats *out);
/*
 * Appends one JSON object (counters, mode, per-server breaker state), with
 * the caller's extra rows (n of them, may be 0) as its last members.
 */
void cache_stats_json(struct cache_shared *s, struct hs_buf *b,
		      const struct hs_metric *extra, size_t n);
/* Appends Prometheus text (hs_cache_* metrics with HELP/TYPE lines). */
void cache_stats_prom(struct cache_shared *s, struct hs_buf *b);
/* "ok" when every breaker is closed, else "degraded" (for /healthz). */
const char *cache_health(struct cache_shared *s);

/* Diagnostics and tests: the "HOST:PORT" a key maps to (ketama). 0 / -1. */
int cache_server_of(struct cache *c, const char *key, char *buf, size_t len);
/* A TTL drawn uniformly from [ttl - floor(ttl*frac), ttl], at least 1. */
unsigned cache_ttl_jitter(unsigned ttl, double frac, uint64_t *rng);

#endif
