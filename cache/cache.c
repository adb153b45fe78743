/*
 * The cache library's core: options, the shared state and per-thread
 * libmemcached handles, and the read protocols (lease and naive
 * cache-aside), multi-get, invalidation and key naming.  The protocol is
 * summed up in cache.h and DESIGN.md ("Cache protocol").
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include "cache_int.h"
#include "hs_log.h"
#include "hs_util.h"

#define LEASE_PREFIX "hs-lease:"
/* memcached treats an exptime above 30 days as an absolute Unix time. */
#define TTL_MAX (30u * 24 * 3600)

void
cache_opts_default(struct cache_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->servers = "127.0.0.1:11211";
	o->mode = CACHE_MODE_LEASE;
	o->ttl_s = 300;
	o->ttl_jitter = 0.1;
	o->neg_ttl_s = 5;
	o->lease_ttl_s = 3;
	o->lease_wait_ms = 300;
	o->lease_poll_ms = 5;
	o->connect_timeout_ms = 50;
	o->io_timeout_ms = 50;
	o->breaker_errors = 5;
	o->breaker_open_ms = 250;
	o->fill_delay_ms = 0;
}

int
cache_mode_parse(const char *s, enum cache_mode *out)
{
	if (strcmp(s, "lease") == 0)
		*out = CACHE_MODE_LEASE;
	else if (strcmp(s, "naive") == 0)
		*out = CACHE_MODE_NAIVE;
	else
		return -1;
	return 0;
}

const char *
cache_mode_name(enum cache_mode m)
{
	return m == CACHE_MODE_NAIVE ? "naive" : "lease";
}

const char *
cache_res_name(enum cache_res r)
{
	switch (r) {
	case CACHE_HIT: return "HIT";
	case CACHE_MISS: return "MISS";
	default: return "BYPASS";
	}
}

const char *
cache_strerror(const struct cache *c)
{
	return c->err;
}

void
cache_value_release(struct cache_value *v)
{
	if (v == NULL)
		return;
	free(v->body);
	v->body = NULL;
	v->len = 0;
	v->status = 0;
}

static uint64_t
rng_next(uint64_t *s)
{
	/* splitmix64: tiny, good enough for jitter and lease tokens. */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

unsigned
cache_ttl_jitter(unsigned ttl, double frac, uint64_t *rng)
{
	unsigned span;

	if (ttl == 0)
		return 0;
	if (frac <= 0)
		return ttl;
	if (frac > 1)
		frac = 1;
	/* Only downwards: the configured TTL stays the bound on staleness. */
	span = (unsigned)((double)ttl * frac);
	ttl -= (unsigned)(rng_next(rng) % ((uint64_t)span + 1));
	return ttl ? ttl : 1;
}

static int
key_fmt(char *buf, const char *kind, int64_t id)
{
	return snprintf(buf, CACHE_KEY_MAX, CACHE_KEY_PREFIX "%s:%" PRId64, kind, id);
}

int cache_key_product(char *buf, int64_t id) { return key_fmt(buf, "p", id); }
int cache_key_category(char *buf, int64_t id) { return key_fmt(buf, "c", id); }
int cache_key_world(char *buf, int64_t id) { return key_fmt(buf, "w", id); }

/* ---- options and handles ---------------------------------------------- */

static int
check_opts(const struct cache_opts *o, char *err, size_t errlen)
{
#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)
	if (o->servers == NULL || o->servers[0] == '\0')
		BAD("cache: empty memcached server list");
	if (o->mode != CACHE_MODE_LEASE && o->mode != CACHE_MODE_NAIVE)
		BAD("cache: bad mode");
	if (o->ttl_s < 1 || o->ttl_s > TTL_MAX)
		BAD("cache: ttl must be 1..%u s", TTL_MAX);
	if (o->neg_ttl_s < 1 || o->neg_ttl_s > TTL_MAX)
		BAD("cache: negative ttl must be 1..%u s", TTL_MAX);
	if (o->lease_ttl_s < 1 || o->lease_ttl_s > 60)
		BAD("cache: lease ttl must be 1..60 s");
	if (!(o->ttl_jitter >= 0 && o->ttl_jitter <= 0.9))
		BAD("cache: ttl jitter must be 0..0.9");
	if (o->lease_wait_ms > 60000 || o->lease_poll_ms < 1 ||
	    o->lease_poll_ms > 1000)
		BAD("cache: lease wait must be 0..60000 ms, poll 1..1000 ms");
	if (o->connect_timeout_ms < 1 || o->connect_timeout_ms > 10000 ||
	    o->io_timeout_ms < 1 || o->io_timeout_ms > 10000)
		BAD("cache: timeouts must be 1..10000 ms");
	if (o->breaker_errors < 1 || o->breaker_open_ms > 600000)
		BAD("cache: breaker needs >= 1 error and <= 600000 ms open");
	if (o->fill_delay_ms > 60000)
		BAD("cache: fill delay must be <= 60000 ms");
	return 0;
#undef BAD
}

static memcached_return_t
set_behaviors(memcached_st *mc, const struct cache_opts *o)
{
	static const struct {
		memcached_behavior_t b;
		int what; /* 0 constant, 1 connect ms, 2 io ms, 3 io us */
		uint64_t v;
	} tab[] = {
		/* ketama, libketama-compatible: MD5 keys on a weighted continuum. */
		{ MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 0, 1 },
		{ MEMCACHED_BEHAVIOR_TCP_NODELAY, 0, 1 },
		{ MEMCACHED_BEHAVIOR_NO_BLOCK, 0, 1 },
		/* "gets" everywhere: the winner of a lease needs its CAS. */
		{ MEMCACHED_BEHAVIOR_SUPPORT_CAS, 0, 1 },
		{ MEMCACHED_BEHAVIOR_VERIFY_KEY, 0, 1 },
		{ MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, 1, 0 },
		{ MEMCACHED_BEHAVIOR_POLL_TIMEOUT, 2, 0 },
		{ MEMCACHED_BEHAVIOR_SND_TIMEOUT, 3, 0 },
		{ MEMCACHED_BEHAVIOR_RCV_TIMEOUT, 3, 0 },
		/*
		 * After an error libmemcached refuses a server until
		 * next_retry < now in whole seconds; 0 makes that "the next
		 * second", so a restarted memcached is reconnected within 1 s.
		 * Our breaker does the fast failing in between.
		 */
		{ MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 0, 0 },
		{ MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, 0, 1000000 },
		/*
		 * Never eject: remapping a dead server's keys to a live one
		 * and back would serve bodies that missed deletes meanwhile.
		 */
		{ MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 0, 0 },
		{ MEMCACHED_BEHAVIOR_DEAD_TIMEOUT, 0, 0 },
	};
	memcached_return_t rc;

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		uint64_t v = tab[i].v;

		if (tab[i].what == 1)
			v = o->connect_timeout_ms;
		else if (tab[i].what == 2)
			v = o->io_timeout_ms;
		else if (tab[i].what == 3)
			v = (uint64_t)o->io_timeout_ms * 1000;
		rc = memcached_behavior_set(mc, tab[i].b, v);
		if (memcached_failed(rc))
			return rc;
	}
	return MEMCACHED_SUCCESS;
}

/* Parses the server list into mc and the breaker names. */
static int
add_servers(struct cache_shared *s, char *err, size_t errlen)
{
	char *list = hs_xstrdup(s->servers), *rest = list, *tok;
	char host[64];
	int port, ret = -1;
	unsigned n = 1;

	for (const char *p = list; *p; p++)
		n += *p == ',';
	s->brk = hs_xcalloc(n, sizeof(*s->brk));
	while ((tok = strsep(&rest, ",")) != NULL) {
		if (hs_parse_hostport(tok, host, sizeof(host), &port) < 0 ||
		    port == 0) {
			snprintf(err, errlen, "cache: bad memcached address '%s' "
				 "(want HOST:PORT[,HOST:PORT...])", tok);
			goto out;
		}
		if (memcached_failed(memcached_server_add(s->proto, host,
							  (in_port_t)port))) {
			snprintf(err, errlen, "cache: cannot add server '%s': %s",
				 tok, memcached_last_error_message(s->proto));
			goto out;
		}
		/* libmemcached keeps servers in insertion order. */
		snprintf(s->brk[s->nbrk].name, sizeof(s->brk[0].name), "%s:%d",
			 host, port);
		s->nbrk++;
	}
	if (s->nbrk == 0) {
		snprintf(err, errlen, "cache: empty memcached server list");
		goto out;
	}
	ret = 0;
out:
	free(list);
	return ret;
}

static void
thread_handle_dtor(void *p)
{
	cache_free(p);
}

struct cache_shared *
cache_shared_new(const struct cache_opts *o, char *err, size_t errlen)
{
	struct cache_shared *s = NULL;
	memcached_return_t rc;

	if (check_opts(o, err, errlen) < 0)
		return NULL;
	s = hs_xcalloc(1, sizeof(*s));
	s->o = *o;
	s->servers = hs_xstrdup(o->servers);
	s->o.servers = s->servers;
	LIST_INIT(&s->thandles);
	pthread_mutex_init(&s->mu, NULL);
	if (pthread_key_create(&s->tkey, thread_handle_dtor) != 0) {
		snprintf(err, errlen, "cache: pthread_key_create failed");
		pthread_mutex_destroy(&s->mu);
		free(s->servers);
		free(s);
		return NULL;
	}
	s->proto = memcached_create(NULL);
	if (s->proto == NULL) {
		snprintf(err, errlen, "cache: memcached_create failed");
		goto fail;
	}
	rc = set_behaviors(s->proto, &s->o);
	if (memcached_failed(rc)) {
		snprintf(err, errlen, "cache: libmemcached setup: %s",
			 memcached_strerror(s->proto, rc));
		goto fail;
	}
	if (add_servers(s, err, errlen) < 0)
		goto fail;
	return s;
fail:
	cache_shared_free(s);
	return NULL;
}

void
cache_shared_free(struct cache_shared *s)
{
	struct cache *c;

	if (s == NULL)
		return;
	/* After key deletion no destructor runs, so we free the rest here. */
	pthread_key_delete(s->tkey);
	while ((c = LIST_FIRST(&s->thandles)) != NULL) {
		LIST_REMOVE(c, link);
		c->is_thread = false;
		cache_free(c);
	}
	if (s->proto)
		memcached_free(s->proto);
	pthread_mutex_destroy(&s->mu);
	free(s->brk);
	free(s->servers);
	free(s);
}

struct cache *
cache_new(struct cache_shared *s)
{
	struct cache *c = hs_xcalloc(1, sizeof(*c));
	uint64_t seed = 0;

	c->sh = s;
	pthread_mutex_lock(&s->mu);
	c->mc = memcached_clone(NULL, s->proto);
	pthread_mutex_unlock(&s->mu);
	if (c->mc == NULL)
		fatalx("cache: memcached_clone failed (out of memory)");
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = hs_now_ns();
	c->rng = seed ^ (uint64_t)(uintptr_t)c;
	return c;
}

void
cache_free(struct cache *c)
{
	if (c == NULL)
		return;
	if (c->is_thread) {
		pthread_mutex_lock(&c->sh->mu);
		LIST_REMOVE(c, link);
		pthread_mutex_unlock(&c->sh->mu);
	}
	memcached_free(c->mc);
	free(c);
}

struct cache *
cache_thread_handle(struct cache_shared *s)
{
	struct cache *c = pthread_getspecific(s->tkey);

	if (c != NULL)
		return c;
	c = cache_new(s);
	c->is_thread = true;
	pthread_mutex_lock(&s->mu);
	LIST_INSERT_HEAD(&s->thandles, c, link);
	pthread_mutex_unlock(&s->mu);
	if (pthread_setspecific(s->tkey, c) != 0)
		fatalx("cache: pthread_setspecific failed");
	return c;
}

int
cache_server_of(struct cache *c, const char *key, char *buf, size_t len)
{
	memcached_return_t rc;
	const memcached_instance_st *in;

	in = memcached_server_by_key(c->mc, key, strlen(key), &rc);
	if (in == NULL)
		return -1;
	snprintf(buf, len, "%s:%d", memcached_server_name(in),
		 (int)memcached_server_port(in));
	return 0;
}

/* ---- per-operation helpers -------------------------------------------- */

/* Results that are answers, not failures of the server. */
static bool
rc_is_answer(memcached_return_t rc)
{
	switch (rc) {
	case MEMCACHED_SUCCESS:
	case MEMCACHED_NOTFOUND:
	case MEMCACHED_NOTSTORED:
	case MEMCACHED_DATA_EXISTS:
	case MEMCACHED_STORED:
	case MEMCACHED_DELETED:
	case MEMCACHED_END:
		return true;
	default:
		return false;
	}
}

static struct cache_breaker *
brk_of(struct cache *c, const char *key, size_t klen)
{
	uint32_t i;

	if (c->sh->nbrk == 1)
		return &c->sh->brk[0];
	i = memcached_generate_hash(c->mc, key, klen);
	return &c->sh->brk[i < c->sh->nbrk ? i : 0];
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

/* Runs expr (libmemcached calls) and adds its duration to info->cache_us. */
#define TIMED(info, expr)                                                     \
	do {                                                                  \
		uint64_t t0_ = hs_now_us();                                   \
		expr;                                                         \
		(info)->cache_us += hs_now_us() - t0_;                        \
	} while (0)

enum get_kind { G_VALUE, G_LEASE, G_MISS, G_ERR };

/* get k: a servable value (status 200/404), a lease marker, a miss, an error. */
static enum get_kind
do_get(struct cache *c, struct cache_breaker *b, const char *key, size_t klen,
       struct cache_value *out, struct cache_fetch_info *info)
{
	memcached_return_t rc;
	uint32_t flags = 0;
	size_t vlen = 0;
	char *v;

	TIMED(info, v = memcached_get(c->mc, key, klen, &vlen, &flags, &rc));
	if (!note_rc(c, b, rc)) {
		free(v);
		return G_ERR;
	}
	if (rc == MEMCACHED_NOTFOUND)
		return G_MISS;
	if (flags != 200 && flags != 404) {
		/* A lease marker (or a foreign item): never served. */
		free(v);
		return G_LEASE;
	}
	if (v == NULL)
		v = hs_xstrdup("");
	out->status = (int)flags;
	out->body = v;
	out->len = vlen;
	return G_VALUE;
}

static void
run_fill(struct cache *c, cache_fill_fn fill, void *arg, size_t idx,
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
static void
drop_conns(struct cache *c)
{
	memcached_quit(c->mc);
}

enum lease_res { L_DONE, L_LOST, L_ERR, L_ERR_FILLED };

/* gets k: our lease's CAS if the item is still the marker we added. */
static memcached_return_t
lease_cas(struct cache *c, const char *key, size_t klen, const char *token,
	  size_t tlen, uint64_t *cas, bool *have)
{
	const char *keys[1] = { key };
	size_t lens[1] = { klen };
	memcached_result_st res;
	memcached_return_t rc, frc = MEMCACHED_END;

	rc = memcached_mget(c->mc, keys, lens, 1);
	if (!memcached_success(rc))
		return rc;
	memcached_result_create(c->mc, &res);
	while (memcached_fetch_result(c->mc, &res, &frc) != NULL) {
		if (memcached_result_flags(&res) == CACHE_FLAG_LEASE &&
		    memcached_result_length(&res) == tlen &&
		    memcmp(memcached_result_value(&res), token, tlen) == 0) {
			*cas = memcached_result_cas(&res);
			*have = true;
		}
	}
	memcached_result_free(&res);
	if (frc == MEMCACHED_END || frc == MEMCACHED_NOTFOUND)
		frc = MEMCACHED_SUCCESS;
	return frc;
}

/*
 * add k <token>: on a win, take our CAS with gets, fill, wait fill_delay,
 * and cas the body in.  out is filled unless L_LOST or L_ERR is returned.
 */
static enum lease_res
lease_try(struct cache *c, struct cache_breaker *b, const char *key, size_t klen,
	  cache_fill_fn fill, void *arg, size_t idx, struct cache_value *out,
	  struct cache_fetch_info *info)
{
	struct cache_shared *s = c->sh;
	char token[64];
	size_t tlen;
	memcached_return_t rc;
	uint64_t cas = 0;
	bool have_cas = false;

	tlen = (size_t)snprintf(token, sizeof(token), LEASE_PREFIX "%016" PRIx64,
				rng_next(&c->rng));
	TIMED(info, rc = memcached_add(c->mc, key, klen, token, tlen,
				       (time_t)s->o.lease_ttl_s, CACHE_FLAG_LEASE));
	if (!note_rc(c, b, rc)) {
		drop_conns(c);
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
		drop_conns(c);
		run_fill(c, fill, arg, idx, out, info);
		return L_ERR_FILLED;
	}
	run_fill(c, fill, arg, idx, out, info);
	if (!storable(out->status)) {
		/* Release the waiters now rather than at lease expiry. */
		if (have_cas)
			TIMED(info, rc = memcached_delete(c->mc, key, klen, 0));
		return L_DONE;
	}
	fill_delay(c);
	if (!have_cas) {
		info->fill_conflict = true;
		CNT_INC(s, fill_conflicts);
		return L_DONE;
	}
	TIMED(info, rc = memcached_cas(c->mc, key, klen, out->body, out->len,
				       (time_t)ttl_for(c, out->status),
				       (uint32_t)out->status, cas));
	if (rc == MEMCACHED_SUCCESS || rc == MEMCACHED_STORED) {
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
		drop_conns(c);
		CNT_INC(s, set_errors);
	}
	return L_DONE;
}

/* naive: fill, fill_delay, set; no protection against a concurrent update. */
static void
naive_fill(struct cache *c, struct cache_breaker *b, const char *key,
	   size_t klen, cache_fill_fn fill, void *arg, size_t idx,
	   struct cache_value *out, struct cache_fetch_info *info)
{
	memcached_return_t rc;

	run_fill(c, fill, arg, idx, out, info);
	if (!storable(out->status))
		return;
	fill_delay(c);
	TIMED(info, rc = memcached_set(c->mc, key, klen, out->body, out->len,
				       (time_t)ttl_for(c, out->status),
				       (uint32_t)out->status));
	if (note_rc(c, b, rc)) {
		info->stored = true;
		CNT_INC(c->sh, sets);
	} else {
		drop_conns(c);
		CNT_INC(c->sh, set_errors);
	}
}

static void
count_res(struct cache *c, enum cache_res r, const struct cache_value *v)
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
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000L };

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
	uint64_t now = hs_now_us(), max_us = (uint64_t)c->sh->o.lease_poll_ms * 1000;
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

enum cache_res
cache_fetch(struct cache *c, const char *key, cache_fill_fn fill, void *arg,
	    struct cache_value *out, struct cache_fetch_info *info_opt)
{
	struct cache_fetch_info local, *info = info_opt ? info_opt : &local;
	size_t klen = strlen(key);
	struct cache_breaker *b = brk_of(c, key, klen);
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
		g = do_get(c, b, key, klen, out, info);
		if (g == G_VALUE) {
			r = CACHE_HIT;
			info->negative = out->status == 404;
			goto done;
		}
		if (g == G_ERR) {
			drop_conns(c);
			goto bypass;
		}
		r = CACHE_MISS;
		if (c->sh->o.mode == CACHE_MODE_NAIVE) {
			naive_fill(c, b, key, klen, fill, arg, 0, out, info);
			goto done;
		}
		/*
		 * A miss (first time, or while waiting: the winner gave up or
		 * an update deleted its lease) means we try to fill; a marker
		 * means someone else is filling.
		 */
		if (g == G_MISS) {
			switch (lease_try(c, b, key, klen, fill, arg, 0, out, info)) {
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
			run_fill(c, fill, arg, 0, out, info);
			goto done;
		}
	}
bypass:
	run_fill(c, fill, arg, 0, out, info);
	r = CACHE_ERR;
done:
	info->res = r;
	count_res(c, r, out);
	if (!info->breaker_open)
		hs_hist_record(&c->sh->fetch_hist, info->cache_us);
	return r;
}

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

/* Hands a fetched result to every request slot of its key. */
static size_t
mget_deliver(memcached_result_st *res, struct kref *refs, size_t m,
	     struct cache_value *out, enum cache_res *r)
{
	struct kref probe = { memcached_result_key_value(res),
			      memcached_result_key_length(res), 0 };
	struct kref *hit = bsearch(&probe, refs, m, sizeof(*refs), kref_cmp);
	uint32_t flags = memcached_result_flags(res);
	size_t got = 0, vlen = memcached_result_length(res);
	char *v = NULL;

	if (hit == NULL || (flags != 200 && flags != 404))
		return 0; /* a lease marker counts as a miss */
	while (hit > refs && kref_cmp(hit - 1, &probe) == 0)
		hit--;
	for (; hit < refs + m && kref_cmp(hit, &probe) == 0; hit++) {
		size_t i = hit->idx;

		if (r[i] == CACHE_HIT)
			continue;
		if (v == NULL) {
			/* take_value leaves the result empty: length read above. */
			v = memcached_result_take_value(res);
			if (v == NULL)
				v = hs_xstrdup("");
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
	return got;
}

static size_t
mget_timed(struct cache *c, const char *const *keys, size_t n,
	   struct cache_value *out, enum cache_res *r,
	   struct cache_fetch_info *info)
{
	struct cache_shared *s = c->sh;
	struct kref *refs = hs_xcalloc(n ? n : 1, sizeof(*refs));
	const char **ks = hs_xcalloc(n ? n : 1, sizeof(*ks));
	size_t *ls = hs_xcalloc(n ? n : 1, sizeof(*ls));
	bool *answered = hs_xcalloc(s->nbrk, sizeof(*answered));
	bool *asked = hs_xcalloc(s->nbrk, sizeof(*asked));
	memcached_return_t rc, frc = MEMCACHED_END;
	memcached_result_st res;
	size_t m = 0, hits = 0;

	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(keys[i]);
		struct cache_breaker *b = brk_of(c, keys[i], len);

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
	memcached_result_create(c->mc, &res);
	TIMED(info, {
		rc = memcached_mget(c->mc, ks, ls, m);
		if (rc == MEMCACHED_SUCCESS || rc == MEMCACHED_SOME_ERRORS) {
			while (memcached_fetch_result(c->mc, &res, &frc) != NULL) {
				const char *k = memcached_result_key_value(&res);
				size_t kl = memcached_result_key_length(&res);

				answered[brk_of(c, k, kl) - s->brk] = true;
				hits += mget_deliver(&res, refs, m, out, r);
			}
		}
	});
	memcached_result_free(&res);
	if (rc == MEMCACHED_SUCCESS &&
	    (frc == MEMCACHED_END || frc == MEMCACHED_SUCCESS ||
	     frc == MEMCACHED_NOTFOUND)) {
		for (unsigned j = 0; j < s->nbrk; j++)
			if (asked[j])
				cache_brk_ok(&s->brk[j]);
		goto out;
	}
	/*
	 * Some server failed, and the text protocol does not say which keys
	 * were lost: keys of servers that answered nothing become ERR.
	 */
	snprintf(c->err, sizeof(c->err), "mget: %s",
		 memcached_strerror(c->mc, rc != MEMCACHED_SUCCESS ? rc : frc));
	CNT_INC(s, errors);
	for (unsigned j = 0; j < s->nbrk; j++) {
		if (!asked[j])
			continue;
		if (answered[j])
			cache_brk_ok(&s->brk[j]);
		else
			cache_brk_fail(s, &s->brk[j]);
	}
	for (size_t i = 0; i < m; i++) {
		size_t idx = refs[i].idx;
		struct cache_breaker *b = brk_of(c, refs[i].key, refs[i].len);

		if (r[idx] == CACHE_MISS && !answered[b - s->brk])
			r[idx] = CACHE_ERR;
	}
	drop_conns(c);
out:
	free(asked);
	free(answered);
	free(ls);
	free(ks);
	free(refs);
	return hits;
}

size_t
cache_mget(struct cache *c, const char *const *keys, size_t n,
	   struct cache_value *out, enum cache_res *res)
{
	struct cache_fetch_info info;

	memset(&info, 0, sizeof(info));
	return mget_timed(c, keys, n, out, res, &info);
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
	struct cache_breaker *b = brk_of(c, key, klen);

	if (!cache_brk_allow(s, b)) {
		run_fill(c, fill, arg, i, out, info);
		return CACHE_ERR;
	}
	if (s->o.mode == CACHE_MODE_NAIVE) {
		naive_fill(c, b, key, klen, fill, arg, i, out, info);
		return CACHE_MISS;
	}
	switch (lease_try(c, b, key, klen, fill, arg, i, out, info)) {
	case L_DONE:
		return CACHE_MISS;
	case L_ERR:
		run_fill(c, fill, arg, i, out, info);
		return CACHE_ERR;
	case L_ERR_FILLED:
		return CACHE_ERR;
	case L_LOST:
		break;
	}
	/* A batch does not wait on single keys: fill without storing. */
	info->lease_fallback = true;
	CNT_INC(s, lease_fallbacks);
	run_fill(c, fill, arg, i, out, info);
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
	mget_timed(c, keys, n, out, res, info);
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
			run_fill(c, fill, arg, i, &out[i], info);
		} else if (res[i] == CACHE_MISS) {
			res[i] = mfetch_one(c, keys[i], fill, arg, i, &out[i], info);
		}
		count_res(c, res[i], &out[i]);
		any_err |= res[i] == CACHE_ERR;
		all_hit &= res[i] == CACHE_HIT;
	}
	free(first);
	info->res = any_err ? CACHE_ERR : all_hit ? CACHE_HIT : CACHE_MISS;
	hs_hist_record(&c->sh->fetch_hist, info->cache_us);
	return info->res;
}

int
cache_store(struct cache *c, const char *key, int status, const char *body,
	    size_t len)
{
	size_t klen = strlen(key);
	struct cache_breaker *b = brk_of(c, key, klen);
	memcached_return_t rc;

	if (!storable(status) || !cache_brk_allow(c->sh, b))
		return -1;
	rc = memcached_set(c->mc, key, klen, body, len,
			   (time_t)ttl_for(c, status), (uint32_t)status);
	if (!note_rc(c, b, rc)) {
		drop_conns(c);
		CNT_INC(c->sh, set_errors);
		return -1;
	}
	CNT_INC(c->sh, sets);
	return 0;
}

/* ---- invalidation ----------------------------------------------------- */

/* One line per second at most: an outage must not flood the log. */
static void __attribute__((format(printf, 2, 3)))
warn_limited(struct cache_shared *s, const char *fmt, ...)
{
	uint64_t now = hs_now_ns(), last = atomic_load(&s->last_warn_ns);
	char msg[320];
	va_list ap;

	if (last != 0 && now - last < 1000000000ull)
		return;
	if (!atomic_compare_exchange_strong(&s->last_warn_ns, &last, now))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warnx("%s", msg);
}

size_t
cache_invalidate(struct cache *c, const char *const *keys, size_t n)
{
	static const unsigned backoff_ms[] = { 1, 5, 25 };
	struct cache_shared *s = c->sh;
	size_t failed = 0;

	for (size_t i = 0; i < n; i++) {
		size_t klen = strlen(keys[i]);
		struct cache_breaker *b = brk_of(c, keys[i], klen);
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
			rc = memcached_delete(c->mc, keys[i], klen, 0);
			if (note_rc(c, b, rc))
				done = true;
			else
				drop_conns(c);
		}
		if (done) {
			CNT_INC(s, invalidations);
		} else {
			CNT_INC(s, invalidation_failures);
			failed++;
			warn_limited(s, "cache: delete %s failed: %s (counted in "
				     "invalidation_failures)", keys[i], c->err);
		}
	}
	return failed;
}
