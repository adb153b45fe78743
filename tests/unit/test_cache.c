/*
 * Unit tests for cache/ against real memcached processes started here on
 * free loopback ports: hit after miss, negative caching, TTL jitter and
 * expiry, invalidation, the stale-set race (lease vs naive), the herd,
 * multi-get, ketama spread over three servers, and faults (memcached
 * killed, stopped, restarted on the same port).
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <jansson.h>

#include "cache.h"
#include "hs_buf.h"
#include "hs_util.h"

/* ---- memcached processes ------------------------------------------------ */

#define MAX_MC 8
static pid_t g_pids[MAX_MC];

static void
kill_all_mc(void)
{
	for (int i = 0; i < MAX_MC; i++)
		if (g_pids[i] > 0) {
			kill(g_pids[i], SIGKILL);
			waitpid(g_pids[i], NULL, 0);
			g_pids[i] = 0;
		}
}

static void
on_fatal_signal(int sig)
{
	for (int i = 0; i < MAX_MC; i++)
		if (g_pids[i] > 0)
			kill(g_pids[i], SIGKILL);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void
track_pid(pid_t pid)
{
	static int hooked;

	if (!hooked) {
		hooked = 1;
		atexit(kill_all_mc);
		signal(SIGABRT, on_fatal_signal);
		signal(SIGTERM, on_fatal_signal);
		signal(SIGINT, on_fatal_signal);
		signal(SIGSEGV, on_fatal_signal);
	}
	for (int i = 0; i < MAX_MC; i++)
		if (g_pids[i] == 0) {
			g_pids[i] = pid;
			return;
		}
}

static void
untrack_pid(pid_t pid)
{
	for (int i = 0; i < MAX_MC; i++)
		if (g_pids[i] == pid)
			g_pids[i] = 0;
}

static int
free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static int
can_connect(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)port);
	ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

/* Starts memcached on port (0: a free one); returns the pid, or -1. */
static pid_t
mc_start(int *port)
{
	for (int attempt = 0; attempt < 5; attempt++) {
		int p = *port ? *port : free_port();
		char pbuf[16];
		pid_t parent = getpid(), pid;

		snprintf(pbuf, sizeof(pbuf), "%d", p);
		pid = fork();
		if (pid < 0)
			return -1;
		if (pid == 0) {
			/* Die with the test, even if it is killed. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(1);
			freopen("/dev/null", "w", stdout);
			freopen("/dev/null", "w", stderr);
			if (geteuid() == 0)
				execl("/usr/bin/memcached", "memcached", "-l",
				      "127.0.0.1", "-p", pbuf, "-U", "0", "-t",
				      "1", "-m", "64", "-u", "nobody",
				      (char *)NULL);
			else
				execl("/usr/bin/memcached", "memcached", "-l",
				      "127.0.0.1", "-p", pbuf, "-U", "0", "-t",
				      "1", "-m", "64", (char *)NULL);
			_exit(127);
		}
		track_pid(pid);
		for (int i = 0; i < 500; i++) { /* up to 5 s */
			if (waitpid(pid, NULL, WNOHANG) == pid) {
				untrack_pid(pid);
				pid = -1;
				break;
			}
			if (can_connect(p)) {
				*port = p;
				return pid;
			}
			usleep(10000);
		}
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			untrack_pid(pid);
		}
		if (*port) /* a fixed port may still be in use: wait a little */
			usleep(200000);
	}
	return -1;
}

static void
mc_stop(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	untrack_pid(pid);
}

/* ---- fixtures ----------------------------------------------------------- */

struct group {
	int n;
	int port[3];
	pid_t pid[3];
	char servers[128];
};

static int
slow(void)
{
	const char *s = getenv("HS_SANITIZE");

	return s && strcmp(s, "1") == 0 ? 3 : 1;
}

static int
group_setup(void **state, int n)
{
	struct group *g = calloc(1, sizeof(*g));
	size_t off = 0;

	g->n = n;
	for (int i = 0; i < n; i++) {
		g->pid[i] = mc_start(&g->port[i]);
		if (g->pid[i] < 0)
			return -1;
		off += (size_t)snprintf(g->servers + off,
					sizeof(g->servers) - off,
					"%s127.0.0.1:%d", i ? "," : "",
					g->port[i]);
	}
	*state = g;
	return 0;
}

static int
setup1(void **state)
{
	return group_setup(state, 1);
}
static int
setup3(void **state)
{
	return group_setup(state, 3);
}

static int
group_teardown(void **state)
{
	struct group *g = *state;

	for (int i = 0; g && i < g->n; i++)
		mc_stop(g->pid[i]);
	free(g);
	return 0;
}

/* Options for tests: generous timeouts so a busy machine does not flake. */
static void
test_opts(struct cache_opts *o, const struct group *g)
{
	cache_opts_default(o);
	o->servers = g->servers;
	o->connect_timeout_ms = 500;
	o->io_timeout_ms = 500;
	o->lease_wait_ms = 3000;
}

static struct cache_shared *
mk_shared(const struct cache_opts *o)
{
	char err[256] = "";
	struct cache_shared *s = cache_shared_new(o, err, sizeof(err));

	if (s == NULL)
		fail_msg("cache_shared_new: %s", err);
	return s;
}

/* The "database": a versioned body, a status, a call counter, a delay. */
struct db {
	atomic_int calls;
	atomic_int version;
	int status;
	unsigned sleep_ms;
	int ids[600]; /* for multi-get: idx -> id */
};

static int
db_fill(void *arg, size_t idx, char **body, size_t *len)
{
	struct db *d = arg;
	char buf[96];
	int n;

	atomic_fetch_add(&d->calls, 1);
	n = snprintf(buf, sizeof(buf), "{\"id\":%d,\"version\":%d}",
		     d->ids[idx], atomic_load(&d->version));
	if (d->sleep_ms)
		usleep(d->sleep_ms * 1000);
	*body = hs_xstrdup(buf);
	*len = (size_t)n;
	return d->status ? d->status : 200;
}

static void
expect_body(const struct cache_value *v, int id, int version)
{
	char buf[96];

	snprintf(buf, sizeof(buf), "{\"id\":%d,\"version\":%d}", id, version);
	assert_non_null(v->body);
	assert_string_equal(v->body, buf);
	assert_int_equal(v->len, strlen(buf));
	assert_int_equal(v->body[v->len], '\0');
}

static uint64_t
ms_since(uint64_t t0)
{
	return (hs_now_ns() - t0) / 1000000;
}

/* ---- pure functions ----------------------------------------------------- */

static void
test_keys_and_opts(void **state)
{
	char k[CACHE_KEY_MAX], err[256];
	struct cache_opts o;
	enum cache_mode m;

	assert_int_equal(cache_key_product(k, 42), 8);
	assert_string_equal(k, "hs1:p:42");
	cache_key_category(k, 7);
	assert_string_equal(k, "hs1:c:7");
	cache_key_world(k, 10000);
	assert_string_equal(k, "hs1:w:10000");

	assert_int_equal(cache_mode_parse("lease", &m), 0);
	assert_int_equal(m, CACHE_MODE_LEASE);
	assert_int_equal(cache_mode_parse("naive", &m), 0);
	assert_int_equal(m, CACHE_MODE_NAIVE);
	assert_int_equal(cache_mode_parse("off", &m), -1);
	assert_string_equal(cache_res_name(CACHE_ERR), "BYPASS");

	cache_opts_default(&o);
	const char *bad[] = { "",      "127.0.0.1", "127.0.0.1:0",
			      "h:1,,", "x:99999",   "127.0.0.1:11211,nonsense" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		o.servers = bad[i];
		err[0] = '\0';
		assert_null(cache_shared_new(&o, err, sizeof(err)));
		assert_true(err[0] != '\0');
	}
	cache_opts_default(&o);
	o.ttl_jitter = 1.5;
	assert_null(cache_shared_new(&o, err, sizeof(err)));
	cache_opts_default(&o);
	o.lease_poll_ms = 0;
	assert_null(cache_shared_new(&o, err, sizeof(err)));
	cache_shared_free(NULL);
	cache_free(NULL);
	cache_value_release(NULL);
}

static void
test_ttl_jitter_bounds(void **state)
{
	uint64_t rng = 12345;
	unsigned lo = 1000, hi = 0;
	double sum = 0;
	int n = 20000;

	for (int i = 0; i < n; i++) {
		unsigned t = cache_ttl_jitter(300, 0.1, &rng);

		assert_in_range(t, 270, 300);
		lo = t < lo ? t : lo;
		hi = t > hi ? t : hi;
		sum += t;
	}
	/* Uniform over 31 values: both ends are reached, mean near 285. */
	assert_int_equal(lo, 270);
	assert_int_equal(hi, 300);
	assert_true(sum / n > 284 && sum / n < 286);
	assert_int_equal(cache_ttl_jitter(300, 0, &rng), 300);
	assert_int_equal(cache_ttl_jitter(1, 0.5, &rng), 1);
	for (int i = 0; i < 100; i++)
		assert_in_range(cache_ttl_jitter(2, 0.9, &rng), 1, 2);
}

/* ---- single server ------------------------------------------------------ */

static void
test_miss_then_hit(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	struct cache_value v;
	struct cache_fetch_info info;
	struct db d = { .ids = { 1 } };
	struct cache_stats st;

	test_opts(&o, g);
	s = mk_shared(&o);
	c = cache_new(s);
	atomic_store(&d.version, 1);
	assert_int_equal(cache_fetch(c, "t1:a", db_fill, &d, &v, &info),
			 CACHE_MISS);
	assert_true(info.lease_won && info.stored && info.filled);
	assert_int_equal(v.status, 200);
	expect_body(&v, 1, 1);
	cache_value_release(&v);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(cache_fetch(c, "t1:a", db_fill, &d, &v, &info),
				 CACHE_HIT);
		assert_false(info.filled);
		assert_int_equal(v.status, 200);
		expect_body(&v, 1, 1);
		cache_value_release(&v);
	}
	assert_int_equal(atomic_load(&d.calls), 1);
	cache_stats_get(s, &st);
	assert_int_equal(st.hits, 3);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.fills, 1);
	assert_int_equal(st.sets, 1);
	assert_int_equal(st.lease_wins, 1);
	assert_int_equal(st.errors, 0);
	assert_string_equal(cache_health(s), "ok");
	cache_free(c);
	cache_shared_free(s);
}

static void
test_negative_and_expiry(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	struct cache_value v;
	struct cache_fetch_info info;
	struct db nf = { .status = 404 }, ok = { .ids = { 2 } };
	struct db err500 = { .status = 500 };
	struct cache_stats st;

	test_opts(&o, g);
	o.neg_ttl_s = 1;
	o.ttl_s = 1;
	o.ttl_jitter = 0;
	s = mk_shared(&o);
	c = cache_new(s);

	/* 404 stored as a negative entry and served as 404. */
	assert_int_equal(cache_fetch(c, "t2:404", db_fill, &nf, &v, NULL),
			 CACHE_MISS);
	assert_int_equal(v.status, 404);
	cache_value_release(&v);
	assert_int_equal(cache_fetch(c, "t2:404", db_fill, &nf, &v, &info),
			 CACHE_HIT);
	assert_int_equal(v.status, 404);
	assert_true(info.negative);
	cache_value_release(&v);
	/* A 200 with a 1 s TTL. */
	assert_int_equal(cache_fetch(c, "t2:ok", db_fill, &ok, &v, NULL),
			 CACHE_MISS);
	cache_value_release(&v);
	assert_int_equal(cache_fetch(c, "t2:ok", db_fill, &ok, &v, NULL),
			 CACHE_HIT);
	cache_value_release(&v);

	/* 500s are never stored, and the lease is released at once. */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(cache_fetch(c, "t2:500", db_fill, &err500, &v,
					     &info),
				 CACHE_MISS);
		assert_int_equal(v.status, 500);
		assert_false(info.stored);
		assert_false(info.lease_waited);
		cache_value_release(&v);
	}
	assert_int_equal(atomic_load(&err500.calls), 2);

	/* memcached expires by whole seconds: after 2.2 s both are gone. */
	usleep(2200 * 1000);
	assert_int_equal(cache_fetch(c, "t2:404", db_fill, &nf, &v, NULL),
			 CACHE_MISS);
	cache_value_release(&v);
	assert_int_equal(cache_fetch(c, "t2:ok", db_fill, &ok, &v, NULL),
			 CACHE_MISS);
	cache_value_release(&v);
	assert_int_equal(atomic_load(&nf.calls), 2);
	assert_int_equal(atomic_load(&ok.calls), 2);
	cache_stats_get(s, &st);
	assert_int_equal(st.negative_hits, 1);
	cache_free(c);
	cache_shared_free(s);
}

static void
test_invalidate(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	struct cache_value v;
	struct db d = { .ids = { 3 } };
	const char *keys[] = { "t3:a", "t3:never-set" };
	struct cache_stats st;

	test_opts(&o, g);
	s = mk_shared(&o);
	c = cache_new(s);
	atomic_store(&d.version, 1);
	assert_int_equal(cache_fetch(c, "t3:a", db_fill, &d, &v, NULL),
			 CACHE_MISS);
	cache_value_release(&v);
	assert_int_equal(cache_fetch(c, "t3:a", db_fill, &d, &v, NULL),
			 CACHE_HIT);
	cache_value_release(&v);
	/* The update: commit, then delete (NOTFOUND is fine). */
	atomic_store(&d.version, 2);
	assert_int_equal(cache_invalidate(c, keys, 2), 0);
	assert_int_equal(cache_fetch(c, "t3:a", db_fill, &d, &v, NULL),
			 CACHE_MISS);
	expect_body(&v, 3, 2);
	cache_value_release(&v);
	assert_int_equal(cache_fetch(c, "t3:a", db_fill, &d, &v, NULL),
			 CACHE_HIT);
	expect_body(&v, 3, 2);
	cache_value_release(&v);
	cache_stats_get(s, &st);
	assert_int_equal(st.invalidations, 2);
	assert_int_equal(st.invalidation_failures, 0);
	cache_free(c);
	cache_shared_free(s);
}

/* Markers only go up (the larger of two racing writers stays), expire
   with their TTL, and anything memcached cannot vouch for is an error. */
static void
test_markers(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s, *dead;
	struct cache *c, *dc;
	char k[CACHE_KEY_MAX];
	uint64_t v = 7;

	test_opts(&o, g);
	s = mk_shared(&o);
	c = cache_new(s);
	assert_int_equal(cache_key_marker(k, 4095), (int)strlen("hs1:rm:4095"));
	assert_string_equal(k, "hs1:rm:4095");
	assert_int_equal(cache_marker_get(c, "tm:1", &v), CACHE_MISS);
	assert_int_equal(v, 7);
	assert_int_equal(cache_marker_raise(c, "tm:1", 100, 60), 0);
	assert_int_equal(cache_marker_get(c, "tm:1", &v), CACHE_HIT);
	assert_int_equal(v, 100);
	/* A writer whose commit came first but whose marker comes last. */
	assert_int_equal(cache_marker_raise(c, "tm:1", 90, 60), 0);
	assert_int_equal(cache_marker_get(c, "tm:1", &v), CACHE_HIT);
	assert_int_equal(v, 100);
	assert_int_equal(cache_marker_raise(c, "tm:1", UINT64_MAX, 60), 0);
	assert_int_equal(cache_marker_get(c, "tm:1", &v), CACHE_HIT);
	assert_true(v == UINT64_MAX);
	/* Not a marker: no answer. */
	assert_int_equal(cache_store(c, "tm:2", 200, "{}", 2), 0);
	assert_int_equal(cache_marker_get(c, "tm:2", &v), CACHE_ERR);
	/* The TTL bounds a marker's life. */
	assert_int_equal(cache_marker_raise(c, "tm:3", 5, 1), 0);
	assert_int_equal(cache_marker_get(c, "tm:3", &v), CACHE_HIT);
	usleep(2100 * 1000);
	assert_int_equal(cache_marker_get(c, "tm:3", &v), CACHE_MISS);

	/* A server that is not there. */
	o.servers = "127.0.0.1:1";
	dead = mk_shared(&o);
	dc = cache_new(dead);
	assert_int_equal(cache_marker_get(dc, "tm:1", &v), CACHE_ERR);
	assert_int_equal(cache_marker_raise(dc, "tm:1", 5, 60), -1);
	cache_free(dc);
	cache_shared_free(dead);
	cache_free(c);
	cache_shared_free(s);
}

struct racer {
	struct cache_shared *s;
	struct db *d;
	const char *key;
	struct cache_value v;
	enum cache_res r;
	struct cache_fetch_info info;
};

static void *
racer_main(void *p)
{
	struct racer *r = p;
	struct cache *c = cache_new(r->s);

	r->r = cache_fetch(c, r->key, db_fill, r->d, &r->v, &r->info);
	cache_free(c);
	return NULL;
}

/*
 * A reader reads version 1 from the database, and before it stores, an
 * update commits version 2 and deletes the key.  Returns the version the
 * next read serves, and whether that read was a hit.
 */
static int
run_race(struct group *g, enum cache_mode mode, const char *key, bool *hit,
	 struct cache_stats *st)
{
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	struct db d = { .ids = { 4 } };
	struct racer r;
	pthread_t th;
	struct cache_value v;
	int version;
	uint64_t t0;

	test_opts(&o, g);
	o.mode = mode;
	o.fill_delay_ms = 400;
	s = mk_shared(&o);
	c = cache_new(s);
	atomic_store(&d.version, 1);
	memset(&r, 0, sizeof(r));
	r.s = s;
	r.d = &d;
	r.key = key;
	assert_int_equal(pthread_create(&th, NULL, racer_main, &r), 0);
	t0 = hs_now_ns();
	while (atomic_load(&d.calls) == 0 && ms_since(t0) < 5000)
		usleep(1000);
	assert_int_equal(atomic_load(&d.calls), 1);
	/* The reader is now between its database read and its store. */
	atomic_store(&d.version, 2);
	assert_int_equal(cache_invalidate(c, &key, 1), 0);
	pthread_join(th, NULL);
	/* The racing read itself started before the update: v1 is fine. */
	assert_int_equal(r.r, CACHE_MISS);
	expect_body(&r.v, 4, 1);
	cache_value_release(&r.v);

	assert_int_not_equal(cache_fetch(c, key, db_fill, &d, &v, NULL),
			     CACHE_ERR);
	*hit = atomic_load(&d.calls) == 1;
	version = strstr(v.body, "\"version\":2") ? 2 : 1;
	cache_value_release(&v);
	cache_stats_get(s, st);
	cache_free(c);
	cache_shared_free(s);
	return version;
}

static void
test_race_lease_never_stale(void **state)
{
	struct cache_stats st;
	bool hit;

	assert_int_equal(run_race(*state, CACHE_MODE_LEASE, "t4:lease", &hit,
				  &st),
			 2);
	assert_false(hit);
	assert_int_equal(st.fill_conflicts, 1);
	assert_int_equal(st.sets, 1); /* only the fresh body was stored */
}

static void
test_race_naive_stale_set(void **state)
{
	struct cache_stats st;
	bool hit;

	/* The textbook pattern stores v1 after the delete: a stale hit. */
	assert_int_equal(run_race(*state, CACHE_MODE_NAIVE, "t4:naive", &hit,
				  &st),
			 1);
	assert_true(hit);
	assert_int_equal(st.fill_conflicts, 0);
	printf("race: naive served the stale version 1 from cache after the "
	       "update; lease served version 2\n");
}

/*
 * While one reader holds the lease, the marker is never served: a multi-get
 * sees a miss, and a reader with a short wait bound falls back to the
 * database without storing.
 */
/*
 * cache_fetch_missed: a batch's get saw the key missing.  Still cold: the
 * lease is taken at once and the fill stored.  Filled meanwhile: the add
 * fails, the reader waits its turn and gets the stored body, no fill.
 * Naive: fill and set.
 */
static void
test_fetch_missed(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	struct cache_value v;
	struct cache_fetch_info info;
	struct db d = { .ids = { 12 } };
	struct cache_stats st;

	test_opts(&o, g);
	s = mk_shared(&o);
	c = cache_new(s);
	atomic_store(&d.version, 1);
	assert_int_equal(cache_fetch_missed(c, "t12:a", db_fill, &d, &v, &info),
			 CACHE_MISS);
	assert_true(info.lease_won && info.stored && info.filled);
	expect_body(&v, 12, 1);
	cache_value_release(&v);
	assert_int_equal(cache_fetch(c, "t12:a", db_fill, &d, &v, &info),
			 CACHE_HIT);
	cache_value_release(&v);
	assert_int_equal(atomic_load(&d.calls), 1);

	/* Another reader stored version 1 after our batch missed. */
	atomic_store(&d.version, 2);
	assert_int_equal(cache_fetch_missed(c, "t12:a", db_fill, &d, &v, &info),
			 CACHE_HIT);
	assert_false(info.filled || info.stored || info.lease_won);
	expect_body(&v, 12, 1);
	cache_value_release(&v);
	assert_int_equal(atomic_load(&d.calls), 1);
	cache_stats_get(s, &st);
	assert_int_equal(st.fills, 1);
	assert_int_equal(st.lease_wins, 1);
	cache_free(c);
	cache_shared_free(s);

	o.mode = CACHE_MODE_NAIVE;
	s = mk_shared(&o);
	c = cache_new(s);
	assert_int_equal(cache_fetch_missed(c, "t12:n", db_fill, &d, &v, &info),
			 CACHE_MISS);
	assert_true(info.filled && info.stored && !info.lease_won);
	expect_body(&v, 12, 2);
	cache_value_release(&v);
	assert_int_equal(cache_fetch(c, "t12:n", db_fill, &d, &v, NULL),
			 CACHE_HIT);
	cache_value_release(&v);
	cache_free(c);
	cache_shared_free(s);
}

static void
test_lease_marker_and_fallback(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s, *s_short;
	struct cache *c;
	struct db d = { .ids = { 11 } }, d2 = { .ids = { 11 } };
	struct racer r;
	pthread_t th;
	struct cache_value v;
	struct cache_fetch_info info;
	enum cache_res res;
	const char *key = "t11:a";
	uint64_t t0;

	test_opts(&o, g);
	/* The winner sleeps far longer than the loser may wait, so that the
	 * loser's fallback is told apart from waiting for the winner even on a
	 * loaded machine, yet well within the lease TTL (3 s), so that the
	 * winner's cas still finds its lease. */
	o.fill_delay_ms = 1500;
	s = mk_shared(&o);
	o.fill_delay_ms = 0;
	o.lease_wait_ms = 30;
	s_short = mk_shared(&o);
	c = cache_new(s_short);
	atomic_store(&d.version, 1);
	atomic_store(&d2.version, 1);
	memset(&r, 0, sizeof(r));
	r.s = s;
	r.d = &d;
	r.key = key;
	assert_int_equal(pthread_create(&th, NULL, racer_main, &r), 0);
	t0 = hs_now_ns();
	while (atomic_load(&d.calls) == 0 && ms_since(t0) < 5000)
		usleep(1000);
	assert_int_equal(cache_mget(c, &key, 1, &v, &res), 0);
	assert_int_equal(res, CACHE_MISS);
	t0 = hs_now_ns();
	assert_int_equal(cache_fetch(c, key, db_fill, &d2, &v, &info),
			 CACHE_MISS);
	assert_true(info.lease_waited && info.lease_fallback && !info.stored);
	assert_true(info.wait_us > 0);
	assert_true(ms_since(t0) < 1200);
	expect_body(&v, 11, 1);
	cache_value_release(&v);
	pthread_join(th, NULL);
	assert_true(r.info.stored);
	cache_value_release(&r.v);
	/* The winner's body is what the next reader gets. */
	assert_int_equal(cache_fetch(c, key, db_fill, &d2, &v, NULL),
			 CACHE_HIT);
	cache_value_release(&v);
	assert_int_equal(atomic_load(&d.calls) + atomic_load(&d2.calls), 2);
	cache_free(c);
	cache_shared_free(s_short);
	cache_shared_free(s);
}

#define HERD 50

struct herd {
	pthread_barrier_t bar;
	struct cache_shared *s;
	struct db d;
	struct cache_value v[HERD];
	enum cache_res r[HERD];
	struct cache_fetch_info info[HERD];
	struct cache *c[HERD];
	atomic_int next;
};

static void *
herd_main(void *p)
{
	struct herd *h = p;
	int i = atomic_fetch_add(&h->next, 1);

	pthread_barrier_wait(&h->bar);
	h->r[i] = cache_fetch(h->c[i], "t5:hot", db_fill, &h->d, &h->v[i],
			      &h->info[i]);
	return NULL;
}

static int
run_herd(struct group *g, enum cache_mode mode, int *hits, int *waited)
{
	struct cache_opts o;
	struct herd *h = calloc(1, sizeof(*h));
	pthread_t th[HERD];
	const char *key = "t5:hot";
	int fills;

	test_opts(&o, g);
	o.mode = mode;
	h->s = mk_shared(&o);
	h->d.sleep_ms = 50;
	h->d.ids[0] = 5;
	atomic_store(&h->d.version, 1);
	for (int i = 0; i < HERD; i++)
		h->c[i] = cache_new(h->s);
	/* Start cold. */
	assert_int_equal(cache_invalidate(h->c[0], &key, 1), 0);
	pthread_barrier_init(&h->bar, NULL, HERD);
	for (int i = 0; i < HERD; i++)
		assert_int_equal(pthread_create(&th[i], NULL, herd_main, h), 0);
	for (int i = 0; i < HERD; i++)
		pthread_join(th[i], NULL);
	*hits = *waited = 0;
	for (int i = 0; i < HERD; i++) {
		assert_int_not_equal(h->r[i], CACHE_ERR);
		expect_body(&h->v[i], 5, 1);
		*hits += h->r[i] == CACHE_HIT;
		*waited += h->info[i].lease_waited;
		cache_value_release(&h->v[i]);
		cache_free(h->c[i]);
	}
	fills = atomic_load(&h->d.calls);
	pthread_barrier_destroy(&h->bar);
	cache_shared_free(h->s);
	free(h);
	return fills;
}

static void
test_herd_lease_one_fill(void **state)
{
	int hits, waited, fills, naive;

	fills = run_herd(*state, CACHE_MODE_LEASE, &hits, &waited);
	printf("herd: %d threads, fill 50 ms, lease mode: %d fill(s), %d hits, "
	       "%d waited on the lease\n",
	       HERD, fills, hits, waited);
	assert_int_equal(fills, 1);
	assert_int_equal(hits, HERD - 1);

	naive = run_herd(*state, CACHE_MODE_NAIVE, &hits, &waited);
	printf("herd: naive mode: %d fills for the same key\n", naive);
	assert_true(naive > 1);
}

/*
 * The consistency checker in miniature: readers and writers on a few hot
 * keys; a read that started after an update's delete was acknowledged must
 * never return an older version.
 */
#define CK_KEYS    4
#define CK_READERS 6
#define CK_WRITERS 2

struct ck {
	struct cache_shared *s;
	atomic_int version[CK_KEYS]; /* the database */
	atomic_int acked[CK_KEYS];   /* newest version whose delete is done */
	atomic_int stop;
	atomic_long reads, stale, writes;
};

struct ck_fill {
	struct ck *ck;
	int k;
};

static int
ck_fill(void *arg, size_t idx, char **body, size_t *len)
{
	struct ck_fill *f = arg;
	char buf[64];

	*len = (size_t)snprintf(buf, sizeof(buf), "{\"version\":%d}",
				atomic_load(&f->ck->version[f->k]));
	*body = hs_xstrdup(buf);
	return 200;
}

static void *
ck_reader(void *p)
{
	struct ck *ck = p;
	struct cache *c = cache_new(ck->s);
	unsigned seed = (unsigned)(uintptr_t)&c;

	while (!atomic_load(&ck->stop)) {
		struct ck_fill f = { ck, (int)(rand_r(&seed) % CK_KEYS) };
		char key[32];
		struct cache_value v;
		int floor = atomic_load(&ck->acked[f.k]), got = -1;

		snprintf(key, sizeof(key), "t14:%d", f.k);
		cache_fetch(c, key, ck_fill, &f, &v, NULL);
		sscanf(v.body, "{\"version\":%d}", &got);
		cache_value_release(&v);
		atomic_fetch_add(&ck->reads, 1);
		if (got < floor)
			atomic_fetch_add(&ck->stale, 1);
	}
	cache_free(c);
	return NULL;
}

static void *
ck_writer(void *p)
{
	struct ck *ck = p;
	struct cache *c = cache_new(ck->s);
	unsigned seed = (unsigned)(uintptr_t)&c;

	while (!atomic_load(&ck->stop)) {
		int k = (int)(rand_r(&seed) % CK_KEYS), v, a;
		char key[32];
		const char *kp = key;

		snprintf(key, sizeof(key), "t14:%d", k);
		v = atomic_fetch_add(&ck->version[k], 1) + 1; /* commit */
		cache_invalidate(c, &kp, 1);
		a = atomic_load(&ck->acked[k]);
		while (a < v &&
		       !atomic_compare_exchange_weak(&ck->acked[k], &a, v))
			;
		atomic_fetch_add(&ck->writes, 1);
		usleep(2000);
	}
	cache_free(c);
	return NULL;
}

static long
run_checker(struct group *g, enum cache_mode mode, long *reads, long *writes)
{
	struct cache_opts o;
	struct ck *ck = calloc(1, sizeof(*ck));
	pthread_t th[CK_READERS + CK_WRITERS];
	const char *keys[CK_KEYS] = { "t14:0", "t14:1", "t14:2", "t14:3" };
	struct cache *c;
	long stale;

	test_opts(&o, g);
	o.mode = mode;
	o.fill_delay_ms = 3; /* widen the window between read and store */
	ck->s = mk_shared(&o);
	c = cache_new(ck->s);
	cache_invalidate(c, keys, CK_KEYS);
	cache_free(c);
	for (int i = 0; i < CK_READERS + CK_WRITERS; i++)
		pthread_create(&th[i], NULL,
			       i < CK_READERS ? ck_reader : ck_writer, ck);
	usleep(1500 * 1000);
	atomic_store(&ck->stop, 1);
	for (int i = 0; i < CK_READERS + CK_WRITERS; i++)
		pthread_join(th[i], NULL);
	*reads = atomic_load(&ck->reads);
	*writes = atomic_load(&ck->writes);
	stale = atomic_load(&ck->stale);
	cache_shared_free(ck->s);
	free(ck);
	return stale;
}

static void
test_no_stale_reads_under_load(void **state)
{
	long reads, writes, stale, nstale, nreads, nwrites;

	stale = run_checker(*state, CACHE_MODE_LEASE, &reads, &writes);
	nstale = run_checker(*state, CACHE_MODE_NAIVE, &nreads, &nwrites);
	printf("checker: lease: %ld reads, %ld writes, %ld stale; "
	       "naive: %ld reads, %ld writes, %ld stale\n",
	       reads, writes, stale, nreads, nwrites, nstale);
	assert_true(reads > 20 && writes > 10);
	assert_int_equal(stale, 0);
}

static void
test_mget(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	struct cache_value v[7];
	enum cache_res r[7];
	struct cache_fetch_info info;
	struct db d = { .ids = { 61, 62, 63, 64, 61, 66, 63 } };
	const char *keys[7] = { "t6:61", "t6:62", "t6:63", "t6:64",
				"t6:61", "t6:66", "t6:63" };
	struct cache_stats st;

	test_opts(&o, g);
	s = mk_shared(&o);
	c = cache_new(s);
	atomic_store(&d.version, 1);
	/* Warm two keys. */
	assert_int_equal(cache_store(c, "t6:61", 200,
				     "{\"id\":61,\"version\":1}", 21),
			 0);
	assert_int_equal(cache_store(c, "t6:62", 200,
				     "{\"id\":62,\"version\":1}", 21),
			 0);
	assert_int_equal(cache_store(c, "t6:x", 500, "no", 2), -1);

	assert_int_equal(cache_mget(c, keys, 6, v, r), 3);
	assert_int_equal(r[0], CACHE_HIT);
	assert_int_equal(r[1], CACHE_HIT);
	assert_int_equal(r[2], CACHE_MISS);
	assert_int_equal(r[3], CACHE_MISS);
	assert_int_equal(r[4], CACHE_HIT); /* duplicate key, own copy */
	assert_int_equal(r[5], CACHE_MISS);
	expect_body(&v[0], 61, 1);
	expect_body(&v[4], 61, 1);
	assert_ptr_not_equal(v[0].body, v[4].body);
	for (int i = 0; i < 6; i++)
		cache_value_release(&v[i]);

	/* 63 is asked twice and filled once; 64 and 66 once each. */
	assert_int_equal(cache_mfetch(c, keys, 7, db_fill, &d, v, r, &info),
			 CACHE_MISS);
	assert_int_equal(atomic_load(&d.calls), 3);
	assert_int_equal(r[6], CACHE_MISS);
	for (int i = 0; i < 7; i++) {
		expect_body(&v[i], d.ids[i], 1);
		cache_value_release(&v[i]);
	}
	cache_stats_get(s, &st);
	assert_int_equal(st.lease_fallbacks, 0);
	assert_int_equal(cache_mfetch(c, keys, 7, db_fill, &d, v, r, &info),
			 CACHE_HIT);
	assert_int_equal(atomic_load(&d.calls), 3);
	for (int i = 0; i < 7; i++) {
		assert_int_equal(r[i], CACHE_HIT);
		expect_body(&v[i], d.ids[i], 1);
		cache_value_release(&v[i]);
	}
	assert_int_equal(cache_mfetch(c, keys, 0, db_fill, &d, v, r, &info),
			 CACHE_HIT);
	cache_free(c);
	cache_shared_free(s);
}

static void
test_stats_export(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	struct cache_value v;
	struct db d = { .ids = { 7 } };
	struct hs_buf b = HS_BUF_INIT;
	json_error_t jerr;
	json_t *j;

	test_opts(&o, g);
	s = mk_shared(&o);
	c = cache_new(s);
	cache_fetch(c, "t7:a", db_fill, &d, &v, NULL);
	cache_value_release(&v);
	cache_fetch(c, "t7:a", db_fill, &d, &v, NULL);
	cache_value_release(&v);
	cache_stats_json(s, &b, NULL, 0);
	j = json_loads(b.data, 0, &jerr);
	if (j == NULL)
		fail_msg("bad JSON: %s: %s", jerr.text, b.data);
	assert_int_equal(json_integer_value(json_object_get(j, "hits")), 1);
	assert_int_equal(json_integer_value(json_object_get(j, "misses")), 1);
	assert_string_equal(json_string_value(json_object_get(j, "mode")),
			    "lease");
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(json_object_get(j, "servers"),
						   0),
				    "breaker")),
			    "closed");
	json_decref(j);
	hs_buf_reset(&b);
	cache_stats_prom(s, &b);
	assert_non_null(strstr(b.data, "\nhs_cache_hits_total 1\n"));
	assert_non_null(
		strstr(b.data, "# TYPE hs_cache_misses_total counter\n"));
	assert_non_null(
		strstr(b.data, "hs_cache_breaker_state{server=\"127.0.0.1:"));
	hs_buf_free(&b);
	cache_free(c);
	cache_shared_free(s);
}

static void *
thread_handle_main(void *p)
{
	struct cache_shared *s = p;
	struct cache *a = cache_thread_handle(s), *b = cache_thread_handle(s);

	return a == b ? a : NULL;
}

static void
test_thread_handles(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	pthread_t th[4];
	void *h[4];

	test_opts(&o, g);
	s = mk_shared(&o);
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, thread_handle_main, s);
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], &h[i]);
		assert_non_null(h[i]);
	}
	/* The main thread's handle stays until cache_shared_free (ASan checks). */
	assert_ptr_equal(cache_thread_handle(s), cache_thread_handle(s));
	cache_shared_free(s);
}

static void
test_hit_latency(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	struct cache_value v;
	struct db d = { .ids = { 8 } };
	enum { N = 3000 };
	static uint64_t us[N];

	test_opts(&o, g);
	s = mk_shared(&o);
	c = cache_new(s);
	cache_fetch(c, "t8:lat", db_fill, &d, &v, NULL);
	cache_value_release(&v);
	for (int i = 0; i < N; i++) {
		uint64_t t0 = hs_now_ns();

		assert_int_equal(cache_fetch(c, "t8:lat", db_fill, &d, &v,
					     NULL),
				 CACHE_HIT);
		us[i] = hs_now_ns() - t0;
		cache_value_release(&v);
	}
	for (int i = 1; i < N; i++) /* insertion sort is fine for 3000 */
		for (int j = i; j > 0 && us[j - 1] > us[j]; j--) {
			uint64_t t = us[j];
			us[j] = us[j - 1];
			us[j - 1] = t;
		}
	printf("hit latency over %d gets on loopback: p50 %.1f us, p99 %.1f us\n",
	       N, us[N / 2] / 1000.0, us[N * 99 / 100] / 1000.0);
	assert_true(us[N / 2] < 5000000ull); /* sanity: under 5 ms */
	cache_free(c);
	cache_shared_free(s);
}

/* ---- three servers: ketama ------------------------------------------------ */

static void
test_ketama_spread(void **state)
{
	struct group *g = *state;
	enum { NK = 3000 };
	struct cache_opts o;
	struct cache_shared *s3, *s2, *one[3];
	struct cache *c3, *c2, *c1[3];
	static char keys[NK][CACHE_KEY_MAX];
	static int where[NK];
	int count[3] = { 0 }, moved = 0, moved_wrongly = 0, found[3] = { 0 };
	char name[64], expect[3][32], two[96];

	test_opts(&o, g);
	s3 = mk_shared(&o);
	c3 = cache_new(s3);
	for (int i = 0; i < 3; i++)
		snprintf(expect[i], sizeof(expect[i]), "127.0.0.1:%d",
			 g->port[i]);
	for (int i = 0; i < NK; i++) {
		cache_key_world(keys[i], i + 1);
		assert_int_equal(cache_server_of(c3, keys[i], name,
						 sizeof(name)),
				 0);
		where[i] = -1;
		for (int j = 0; j < 3; j++)
			if (strcmp(name, expect[j]) == 0)
				where[i] = j;
		assert_true(where[i] >= 0);
		count[where[i]]++;
		assert_int_equal(cache_store(c3, keys[i], 200, "{}", 2), 0);
	}
	printf("ketama: 3000 keys over 3 servers: %d / %d / %d\n", count[0],
	       count[1], count[2]);
	for (int j = 0; j < 3; j++)
		assert_in_range(count[j], NK * 20 / 100, NK * 47 / 100);

	/* Each key really is on the server ketama named, and only there. */
	for (int j = 0; j < 3; j++) {
		o.servers = expect[j];
		one[j] = mk_shared(&o);
		c1[j] = cache_new(one[j]);
	}
	for (int i = 0; i < NK; i++) {
		const char *k = keys[i];
		struct cache_value v;
		enum cache_res r;

		for (int j = 0; j < 3; j++) {
			cache_mget(c1[j], &k, 1, &v, &r);
			if (r == CACHE_HIT) {
				assert_int_equal(j, where[i]);
				found[j]++;
				cache_value_release(&v);
			}
		}
	}
	for (int j = 0; j < 3; j++)
		assert_int_equal(found[j], count[j]);

	/* Remove the third server: only its keys move. */
	snprintf(two, sizeof(two), "%s,%s", expect[0], expect[1]);
	o.servers = two;
	s2 = mk_shared(&o);
	c2 = cache_new(s2);
	for (int i = 0; i < NK; i++) {
		cache_server_of(c2, keys[i], name, sizeof(name));
		if (strcmp(name, expect[where[i]]) != 0) {
			moved++;
			moved_wrongly += where[i] != 2;
		}
	}
	printf("ketama: removing one of 3 servers remapped %d of %d keys "
	       "(%.1f%%), %d from surviving servers\n",
	       moved, NK, 100.0 * moved / NK, moved_wrongly);
	assert_int_equal(moved, count[2]);
	assert_int_equal(moved_wrongly, 0);
	for (int j = 0; j < 3; j++) {
		cache_free(c1[j]);
		cache_shared_free(one[j]);
	}
	cache_free(c2);
	cache_shared_free(s2);
	cache_free(c3);
	cache_shared_free(s3);
}

/* One of three servers down: only its keys bypass, the rest still hit. */
static void
test_one_of_three_down(void **state)
{
	struct group *g = *state;
	enum { NK = 60 };
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	char keys[NK][CACHE_KEY_MAX], dead[32], name[64];
	const char *kp[NK];
	struct cache_value v[NK];
	enum cache_res r[NK];
	struct db d;
	int on_dead = 0;
	uint64_t t0;

	memset(&d, 0, sizeof(d));
	cache_opts_default(&o);
	o.servers = g->servers;
	o.breaker_errors = 3;
	s = mk_shared(&o);
	c = cache_new(s);
	snprintf(dead, sizeof(dead), "127.0.0.1:%d", g->port[2]);
	for (int i = 0; i < NK; i++) {
		cache_key_category(keys[i], i);
		kp[i] = keys[i];
		d.ids[i] = i;
		cache_server_of(c, keys[i], name, sizeof(name));
		on_dead += strcmp(name, dead) == 0;
	}
	assert_true(on_dead > 0 && on_dead < NK);
	assert_int_equal(cache_mfetch(c, kp, NK, db_fill, &d, v, r, NULL),
			 CACHE_MISS);
	for (int i = 0; i < NK; i++)
		cache_value_release(&v[i]);

	mc_stop(g->pid[2]);
	g->pid[2] = -1;
	for (int round = 0; round < 3; round++) {
		int hits = 0, errs = 0;

		t0 = hs_now_ns();
		cache_mfetch(c, kp, NK, db_fill, &d, v, r, NULL);
		assert_true(ms_since(t0) < 1500u * (unsigned)slow());
		for (int i = 0; i < NK; i++) {
			cache_server_of(c, keys[i], name, sizeof(name));
			if (strcmp(name, dead) == 0) {
				assert_int_equal(r[i], CACHE_ERR);
				errs++;
			} else {
				assert_int_equal(r[i], CACHE_HIT);
				hits++;
			}
			expect_body(&v[i], i, 0);
			cache_value_release(&v[i]);
		}
		assert_int_equal(errs, on_dead);
		/* Single gets too: live keys hit, dead ones bypass quickly. */
		for (int i = 0; i < NK; i++) {
			enum cache_res want;

			cache_server_of(c, keys[i], name, sizeof(name));
			want = strcmp(name, dead) == 0 ? CACHE_ERR : CACHE_HIT;
			t0 = hs_now_ns();
			assert_int_equal(cache_fetch(c, keys[i], db_fill, &d,
						     &v[0], NULL),
					 want);
			assert_true(ms_since(t0) < 1000u * (unsigned)slow());
			cache_value_release(&v[0]);
		}
	}
	assert_string_equal(cache_health(s), "degraded");
	cache_free(c);
	cache_shared_free(s);
}

/* ---- the read batcher ----------------------------------------------------- */

static void
bw_done(struct cache_batch_req *r)
{
	(*(int *)r->arg)++;
}

static void
bw_submit(struct cache_batcher *b, int *done, struct cache_batch_req *r,
	  const char *key)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->key, sizeof(r->key), "%s", key);
	r->done = bw_done;
	r->arg = done;
	assert_int_equal(cache_batch_submit(b, r), 0);
}

#define B1 "{\"id\":1,\"version\":4}"
#define B2 "{\"gone\":2}"

static const char *const bt_keys[10] = {
	"tb:1", "tb:2", "tb:3", "tb:1", "tb:1",
	"tb:3", "tb:2", "tb:1", "tb:9", "tb:1"
};

/* One batcher of 4 keys per multi-get, over tb:1 (200) and tb:2 (404). */
struct bt {
	struct cache_shared *s;
	struct cache *c;
	struct cache_batcher *b;
	int done;
	struct cache_batch_req r[60];
};

static void
bt_open(struct bt *t, struct group *g)
{
	struct cache_opts o;
	char err[160];

	memset(t, 0, sizeof(*t));
	test_opts(&o, g);
	t->s = mk_shared(&o);
	t->c = cache_new(t->s);
	assert_null(cache_batcher_new(t->s, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "1..1000"));
	assert_null(cache_batcher_new(t->s, 1001, err, sizeof(err)));
	assert_int_equal(cache_store(t->c, "tb:1", 200, B1, strlen(B1)), 0);
	assert_int_equal(cache_store(t->c, "tb:2", 404, B2, strlen(B2)), 0);
	t->b = cache_batcher_new(t->s, 4, err, sizeof(err));
	assert_non_null(t->b);
}

/* Nothing is asked for until the owner runs the batch. */
static void
bt_run(struct bt *t)
{
	struct cache_batch_req *r = t->r;
	struct cache_stats st;
	int hits = 0;

	for (int i = 0; i < 10; i++)
		bw_submit(t->b, &t->done, &r[i], bt_keys[i]);
	assert_int_equal(t->done, 0);
	assert_int_equal(cache_batcher_run(t->b), 10);
	assert_int_equal(t->done, 10);
	assert_int_equal(cache_batcher_run(t->b), 0);
	for (int i = 0; i < 10; i++) {
		/* In submission order, max_keys per multi-get. */
		assert_int_equal(r[i].batch_size, i < 8 ? 4 : 2);
		if (strcmp(bt_keys[i], "tb:1") == 0) {
			assert_int_equal(r[i].res, CACHE_HIT);
			assert_int_equal(r[i].value.status, 200);
			expect_body(&r[i].value, 1, 4);
			hits++;
		} else if (strcmp(bt_keys[i], "tb:2") == 0) {
			assert_int_equal(r[i].res, CACHE_HIT);
			assert_int_equal(r[i].value.status, 404);
			assert_string_equal(r[i].value.body, B2);
			hits++;
		} else {
			/* A miss is the caller's to resolve: nothing filled. */
			assert_int_equal(r[i].res, CACHE_MISS);
			assert_null(r[i].value.body);
		}
		cache_value_release(&r[i].value);
	}
	cache_stats_get(t->s, &st);
	assert_int_equal(st.batch_keys, 10);
	assert_int_equal(st.batches, 3);
	assert_int_equal(st.hits, (uint64_t)hits);
	assert_int_equal(st.negative_hits, 2);
	assert_int_equal(st.misses, 0);
	assert_int_equal(st.fills, 0);
}

/* A cancelled request is never asked for nor answered, wherever it stood
   in the queue; the queue stays usable. */
static void
bt_cancel(struct bt *t)
{
	struct cache_batch_req *r = t->r;

	for (int i = 0; i < 5; i++)
		bw_submit(t->b, &t->done, &r[i], bt_keys[i]);
	cache_batch_cancel(t->b, &r[4]); /* the tail */
	cache_batch_cancel(t->b, &r[0]); /* the head */
	cache_batch_cancel(t->b, &r[2]); /* the middle */
	cache_batch_cancel(t->b, &r[2]); /* no longer queued: no-op */
	bw_submit(t->b, &t->done, &r[5], bt_keys[5]);
	assert_int_equal(cache_batcher_run(t->b), 3);
	assert_int_equal(t->done, 13);
	for (int i = 0; i < 6; i++) {
		if (i == 0 || i == 2 || i == 4) {
			assert_int_equal(r[i].batch_size, 0);
			continue;
		}
		assert_int_equal(r[i].batch_size, 3);
		cache_value_release(&r[i].value);
	}
	cache_batch_cancel(t->b, &r[1]); /* already answered: no-op */
}

/* Stopping answers everything still queued before it returns; then the
   batcher refuses, and the caller reads on its own. */
static void
bt_stop(struct bt *t)
{
	struct cache_batch_req *r = t->r;

	for (int i = 10; i < 60; i++)
		bw_submit(t->b, &t->done, &r[i], bt_keys[i % 10]);
	cache_batcher_stop(t->b);
	assert_int_equal(t->done, 63);
	for (int i = 10; i < 60; i++) {
		assert_int_equal(r[i].res,
				 strcmp(bt_keys[i % 10], "tb:3") == 0 ||
						 strcmp(bt_keys[i % 10],
							"tb:9") == 0
					 ? CACHE_MISS
					 : CACHE_HIT);
		cache_value_release(&r[i].value);
	}
	memset(&r[0], 0, sizeof(r[0]));
	r[0].done = bw_done;
	assert_int_equal(cache_batch_submit(t->b, &r[0]), -1);
	cache_batcher_stop(t->b);
}

static void
test_batcher(void **state)
{
	struct bt t;

	bt_open(&t, *state);
	bt_run(&t);
	bt_cancel(&t);
	bt_stop(&t);
	cache_batcher_free(t.b);
	cache_batcher_free(NULL);
	cache_free(t.c);
	cache_shared_free(t.s);
}

/* ---- faults --------------------------------------------------------------- */

static void
fault_opts(struct cache_opts *o, const struct group *g)
{
	cache_opts_default(o);
	o->servers = g->servers;
	/* The production defaults: these tests are about them. */
	o->connect_timeout_ms = 50;
	o->io_timeout_ms = 50;
	o->breaker_errors = 3;
	o->breaker_open_ms = 250;
}

/* Fetches while memcached is unusable: every call served from fill, fast. */
static void
expect_bypass_phase(struct cache *c, struct cache_shared *s, struct db *d,
		    const char *key, uint64_t *worst_ms)
{
	struct cache_value v;
	struct cache_fetch_info info;
	struct cache_stats st;
	int bypassed = 0;

	*worst_ms = 0;
	for (int i = 0; i < 30; i++) {
		uint64_t t0 = hs_now_ns(), ms;
		enum cache_res r = cache_fetch(c, key, db_fill, d, &v, &info);

		ms = ms_since(t0);
		*worst_ms = ms > *worst_ms ? ms : *worst_ms;
		assert_int_equal(v.status, 200);
		assert_non_null(v.body);
		bypassed += r == CACHE_ERR;
		cache_value_release(&v);
		if (ms > 200u * (unsigned)slow())
			fail_msg("fetch took %llu ms with memcached unusable",
				 (unsigned long long)ms);
		usleep(5000);
	}
	assert_true(bypassed >= 25);
	cache_stats_get(s, &st);
	assert_true(st.breaker_opens >= 1);
	assert_true(st.bypasses >= 25);
}

/* Polls for hits again; returns ms until the first hit, or fails. */
static uint64_t
expect_recovery(struct cache *c, struct cache_shared *s, struct db *d,
		const char *key)
{
	uint64_t t0 = hs_now_ns();
	struct cache_value v;

	while (ms_since(t0) < 3000u * (unsigned)slow()) {
		enum cache_res r = cache_fetch(c, key, db_fill, d, &v, NULL);

		cache_value_release(&v);
		if (r == CACHE_HIT) {
			assert_string_equal(cache_health(s), "ok");
			return ms_since(t0);
		}
		usleep(20000);
	}
	fail_msg("no cache hit within 3 s after memcached came back");
	return 0;
}

static void
test_fault_killed_restarted(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	struct cache_value v;
	struct db d = { .ids = { 9 } };
	const char *key = "t9:a";
	uint64_t worst, rec, t0;
	int port = g->port[0];

	fault_opts(&o, g);
	s = mk_shared(&o);
	c = cache_new(s);
	assert_int_equal(cache_fetch(c, key, db_fill, &d, &v, NULL),
			 CACHE_MISS);
	cache_value_release(&v);
	assert_int_equal(cache_fetch(c, key, db_fill, &d, &v, NULL), CACHE_HIT);
	cache_value_release(&v);

	mc_stop(g->pid[0]);
	g->pid[0] = -1;
	expect_bypass_phase(c, s, &d, key, &worst);
	assert_string_equal(cache_health(s), "degraded");
	/* A delete against a dead server fails fast and is counted. */
	t0 = hs_now_ns();
	assert_int_equal(cache_invalidate(c, &key, 1), 1);
	assert_true(ms_since(t0) < 1000u * (unsigned)slow());

	g->pid[0] = mc_start(&port);
	assert_true(g->pid[0] > 0);
	assert_int_equal(port, g->port[0]);
	rec = expect_recovery(c, s, &d, key);
	printf("fault: memcached killed: slowest bypassed fetch %llu ms; "
	       "restarted: hits back after %llu ms (same handle)\n",
	       (unsigned long long)worst, (unsigned long long)rec);
	cache_free(c);
	cache_shared_free(s);
}

/* memcached gone: the batch answers ERR, fast, and the caller bypasses. */
static void
test_batcher_down(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	struct cache_batcher *b;
	struct cache_stats st;
	int done = 0;
	struct cache_batch_req r[8];
	char err[160];
	uint64_t t0;

	fault_opts(&o, g);
	s = mk_shared(&o);
	b = cache_batcher_new(s, 64, err, sizeof(err));
	assert_non_null(b);
	mc_stop(g->pid[0]);
	g->pid[0] = -1;
	t0 = hs_now_ns();
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 4; i++)
			bw_submit(b, &done, &r[round * 4 + i], "tbd:1");
		assert_int_equal(cache_batcher_run(b), 4);
		assert_int_equal(done, (round + 1) * 4);
	}
	assert_true(ms_since(t0) < 1000u * (unsigned)slow());
	for (int i = 0; i < 8; i++) {
		assert_int_equal(r[i].res, CACHE_ERR);
		assert_null(r[i].value.body);
	}
	cache_stats_get(s, &st);
	assert_true(st.errors >= 1);
	assert_int_equal(st.hits, 0);
	cache_batcher_free(b);
	cache_shared_free(s);
}

/* 1 when the thread (or process) whose stat file is path is stopped. */
static int
stat_stopped(const char *path)
{
	char buf[512], *p;
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;

	if (f)
		fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p != NULL && p[1] == ' ' && p[2] == 'T';
}

/*
 * SIGSTOP takes effect asynchronously: wait until every thread of the
 * memcached process is stopped (each in /proc/PID/task), so that no command
 * sent afterwards can be answered before SIGCONT.
 */
static void
mc_freeze(pid_t pid)
{
	uint64_t t0 = hs_now_ns();
	char dir[64], path[sizeof(dir) + 256 + 8];

	kill(pid, SIGSTOP);
	snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
	while (ms_since(t0) < 5000) {
		DIR *d = opendir(dir);
		struct dirent *e;
		int all = d != NULL;

		while (all && (e = readdir(d)) != NULL) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s/stat", dir,
				 e->d_name);
			all = stat_stopped(path);
		}
		if (d)
			closedir(d);
		if (all)
			return;
		usleep(1000);
	}
	fail_msg("memcached %d did not stop", (int)pid);
}

static void
test_fault_stopped(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	struct cache_value v;
	struct db d = { .ids = { 10 } };
	const char *key = "t10:a";
	uint64_t worst, rec;

	fault_opts(&o, g);
	s = mk_shared(&o);
	c = cache_new(s);
	assert_int_equal(cache_fetch(c, key, db_fill, &d, &v, NULL),
			 CACHE_MISS);
	cache_value_release(&v);
	/* A hung memcached: connections open, nothing answers. */
	mc_freeze(g->pid[0]);
	expect_bypass_phase(c, s, &d, key, &worst);
	kill(g->pid[0], SIGCONT);
	rec = expect_recovery(c, s, &d, key);
	printf("fault: memcached stopped: slowest bypassed fetch %llu ms; "
	       "continued: hits back after %llu ms\n",
	       (unsigned long long)worst, (unsigned long long)rec);
	cache_free(c);
	cache_shared_free(s);
}

struct cont_arg {
	pid_t pid;
	struct cache_shared *s;
	uint64_t waited_ms;
};

/*
 * Resumes the stopped memcached once the first delete attempt has timed
 * out and been retried (not after a fixed time: on a loaded machine the
 * caller may not even have sent its delete by then), or after 5 s.
 */
static void *
cont_main(void *p)
{
	struct cont_arg *a = p;
	uint64_t t0 = hs_now_ns();
	struct cache_stats st;

	do {
		usleep(1000);
		cache_stats_get(a->s, &st);
	} while (st.invalidation_retries == 0 && ms_since(t0) < 5000);
	a->waited_ms = ms_since(t0);
	kill(a->pid, SIGCONT);
	return NULL;
}

/*
 * A delete that times out (memcached hung until the first retry) is retried with
 * backoff and succeeds once memcached answers again.
 */
static void
test_invalidate_retry(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	struct cache_value v;
	struct cache_stats st;
	struct db d = { .ids = { 12 } };
	struct cont_arg ca = { g->pid[0], NULL, 0 };
	const char *key = "t12:a";
	pthread_t th;

	fault_opts(&o, g);
	o.breaker_errors = 5;
	s = mk_shared(&o);
	c = cache_new(s);
	assert_int_equal(cache_fetch(c, key, db_fill, &d, &v, NULL),
			 CACHE_MISS);
	cache_value_release(&v);
	mc_freeze(g->pid[0]);
	ca.s = s;
	pthread_create(&th, NULL, cont_main, &ca);
	assert_int_equal(cache_invalidate(c, &key, 1), 0);
	pthread_join(th, NULL);
	cache_stats_get(s, &st);
	printf("invalidate: %llu retries, %llu failures while memcached hung "
	       "for %llu ms\n",
	       (unsigned long long)st.invalidation_retries,
	       (unsigned long long)st.invalidation_failures,
	       (unsigned long long)ca.waited_ms);
	assert_true(st.invalidation_retries >= 1);
	assert_int_equal(st.invalidations, 1);
	assert_int_equal(st.invalidation_failures, 0);
	/* The delete really happened. */
	assert_int_equal(cache_fetch(c, key, db_fill, &d, &v, NULL),
			 CACHE_MISS);
	cache_value_release(&v);
	cache_free(c);
	cache_shared_free(s);
}

/*
 * Deletes that fail while memcached hangs are not lost: the commands wait
 * in the hung server's socket buffers and run when it resumes, so no stale
 * body is served afterwards.  (A network partition that drops them would
 * leave the old body until its TTL.)
 */
static void
test_invalidate_during_hang(void **state)
{
	struct group *g = *state;
	struct cache_opts o;
	struct cache_shared *s;
	struct cache *c;
	struct cache_value v;
	struct db d = { .ids = { 13 } };
	const char *key = "t13:a";
	enum cache_res r;
	uint64_t t0;

	fault_opts(&o, g);
	s = mk_shared(&o);
	c = cache_new(s);
	atomic_store(&d.version, 1);
	assert_int_equal(cache_fetch(c, key, db_fill, &d, &v, NULL),
			 CACHE_MISS);
	cache_value_release(&v);
	mc_freeze(g->pid[0]);
	atomic_store(&d.version, 2);
	/* Whether the delete is acknowledged before the timeout depends on
	 * the connection's state after the previous tests; either way the
	 * command sits in the stopped server's socket and runs on SIGCONT,
	 * which is what is checked below. */
	(void)cache_invalidate(c, &key, 1);
	kill(g->pid[0], SIGCONT);
	t0 = hs_now_ns();
	do {
		r = cache_fetch(c, key, db_fill, &d, &v, NULL);
		if (r != CACHE_ERR)
			expect_body(&v, 13, 2);
		cache_value_release(&v);
		usleep(20000);
	} while (r != CACHE_HIT && ms_since(t0) < 3000);
	assert_int_equal(r, CACHE_HIT);
	cache_free(c);
	cache_shared_free(s);
}

int
main(void)
{
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(test_keys_and_opts),
		cmocka_unit_test(test_ttl_jitter_bounds),
	};
	const struct CMUnitTest single[] = {
		cmocka_unit_test(test_miss_then_hit),
		cmocka_unit_test(test_negative_and_expiry),
		cmocka_unit_test(test_invalidate),
		cmocka_unit_test(test_markers),
		cmocka_unit_test(test_race_lease_never_stale),
		cmocka_unit_test(test_race_naive_stale_set),
		cmocka_unit_test(test_lease_marker_and_fallback),
		cmocka_unit_test(test_herd_lease_one_fill),
		cmocka_unit_test(test_no_stale_reads_under_load),
		cmocka_unit_test(test_mget),
		cmocka_unit_test(test_stats_export),
		cmocka_unit_test(test_thread_handles),
		cmocka_unit_test(test_hit_latency),
		cmocka_unit_test(test_batcher),
		cmocka_unit_test(test_fetch_missed),
	};
	const struct CMUnitTest three[] = {
		cmocka_unit_test(test_ketama_spread),
		cmocka_unit_test(test_one_of_three_down),
	};
	const struct CMUnitTest faults[] = {
		cmocka_unit_test(test_fault_killed_restarted),
		cmocka_unit_test_setup_teardown(test_batcher_down, setup1,
						group_teardown),
		cmocka_unit_test(test_fault_stopped),
		cmocka_unit_test(test_invalidate_retry),
		cmocka_unit_test(test_invalidate_during_hang),
	};
	int fails = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	fails += cmocka_run_group_tests_name("cache_pure", pure, NULL, NULL);
	fails += cmocka_run_group_tests_name("cache_single", single, setup1,
					     group_teardown);
	fails += cmocka_run_group_tests_name("cache_ketama", three, setup3,
					     group_teardown);
	fails += cmocka_run_group_tests_name("cache_faults", faults, setup1,
					     group_teardown);
	kill_all_mc();
	return fails ? 1 : 0;
}
