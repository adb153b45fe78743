/*
 * The cache library's set-up: options and their checks, libmemcached
 * behaviours, the shared state and per-thread handles, key naming and TTL
 * jitter.  The protocol itself is in fetch.c and mget.c, summed up in
 * cache.h and DESIGN.md ("Cache protocol").
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cache_int.h"
#include "hs_log.h"
#include "hs_rng.h"
#include "hs_util.h"

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
	case CACHE_HIT:
		return "HIT";
	case CACHE_MISS:
		return "MISS";
	default:
		return "BYPASS";
	}
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
	ttl -= (unsigned)(hs_rng_next(rng) % ((uint64_t)span + 1));
	return ttl ? ttl : 1;
}

static int
key_fmt(char *buf, const char *kind, int64_t id)
{
	return snprintf(buf, CACHE_KEY_MAX, CACHE_KEY_PREFIX "%s:%" PRId64,
			kind, id);
}

int
cache_key_product(char *buf, int64_t id)
{
	return key_fmt(buf, "p", id);
}
int
cache_key_category(char *buf, int64_t id)
{
	return key_fmt(buf, "c", id);
}
int
cache_key_world(char *buf, int64_t id)
{
	return key_fmt(buf, "w", id);
}
int
cache_key_marker(char *buf, uint64_t slot)
{
	return snprintf(buf, CACHE_KEY_MAX, CACHE_KEY_PREFIX "rm:%" PRIu64,
			slot);
}

/* ---- options and handles ---------------------------------------------- */

static int
check_opts(const struct cache_opts *o, char *err, size_t errlen)
{
#define BAD(...)                                    \
	do {                                        \
		snprintf(err, errlen, __VA_ARGS__); \
		return -1;                          \
	} while (0)
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

/*
 * libmemcached only maps keys to servers here (mc.c does the I/O, with the
 * connect and I/O timeouts of the options): ketama, libketama-compatible,
 * MD5 keys on a weighted continuum.  Servers are never ejected: remapping
 * a dead server's keys to a live one and back would serve bodies that
 * missed deletes meanwhile (the breaker bypasses a dead server instead).
 */
static memcached_return_t
set_behaviors(memcached_st *mc)
{
	memcached_return_t rc;

	rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
	if (memcached_failed(rc))
		return rc;
	return memcached_behavior_set(mc,
				      MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS,
				      0);
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
			snprintf(err, errlen,
				 "cache: bad memcached address '%s' "
				 "(want HOST:PORT[,HOST:PORT...])",
				 tok);
			goto out;
		}
		if (memcached_failed(memcached_server_add(s->proto, host,
							  (in_port_t)port))) {
			snprintf(err, errlen,
				 "cache: cannot add server '%s': %s", tok,
				 memcached_last_error_message(s->proto));
			goto out;
		}
		/* libmemcached keeps servers in insertion order. */
		snprintf(s->brk[s->nbrk].name, sizeof(s->brk[0].name), "%s:%d",
			 host, port);
		snprintf(s->brk[s->nbrk].host, sizeof(s->brk[0].host), "%s",
			 host);
		s->brk[s->nbrk].port = port;
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
	rc = set_behaviors(s->proto);
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
	c->conns = cache_mc_conns_new(s->nbrk);
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
	cache_mc_conns_free(c->conns, c->sh->nbrk);
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
