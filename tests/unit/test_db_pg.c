/*
 * Unit tests for db/'s PostgreSQL engine, side by side with SQLite: the
 * same seed gives the same answer to every db.h read on both engines, and
 * the same writes give the same results (test_db.c checks SQLite against
 * an independent computation, so this checks PostgreSQL against it too).
 * Then what only a server database has: writers in several processes lose
 * no version bump, a backend killed under a connection gives DB_ERR once
 * and the next call reconnects, a row lock held past the busy timeout
 * gives DB_BUSY, seeding refuses a seeded database and --force replaces
 * it under open connections.
 *
 * Needs HS_TEST_PG_URL, a database on a running server: ctest runs this
 * through `python3 -m hslab.pg run --`, which starts a throwaway cluster.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "db.h"
#include "hs_util.h"

#define SCALE 0.01 /* 1 category, 1000 products, 10000 reviews */
#define SEED  7

static const char *g_url; /* the main database, seeded at SCALE */
static char g_file[256];  /* SQLite seeded the same */
static char g_dir[128];

/* The URL of another database on the same server. */
static const char *
url_for(const char *dbname)
{
	static char buf[512];
	const char *slash = strrchr(g_url, '/');

	snprintf(buf, sizeof(buf), "%.*s/%s", (int)(slash - g_url), g_url,
		 dbname);
	return buf;
}

static PGconn *
admin(const char *url)
{
	PGconn *c = PQconnectdb(url);

	if (PQstatus(c) != CONNECTION_OK)
		fail_msg("connect %s: %s", url, PQerrorMessage(c));
	return c;
}

static void
admin_exec(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		fail_msg("%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
}

static int64_t
admin_int(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	int64_t v;

	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
		fail_msg("%s: %s", sql, PQresultErrorMessage(r));
	v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return v;
}

/* A fresh empty database named name; returns its URL. */
static const char *
fresh_db(const char *name)
{
	PGconn *c = admin(g_url);
	char sql[128];

	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
	admin_exec(c, sql);
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
	admin_exec(c, sql);
	PQfinish(c);
	return url_for(name);
}

static void
seed(const char *path, uint64_t s)
{
	struct db_seed_opts o = { .scale = SCALE, .seed = s };
	char err[256] = "";

	if (db_seed_file(path, &o, err, sizeof(err)) != DB_OK)
		fail_msg("seeding %s: %s", path, err);
}

static struct db *
open_ok(const char *path, int busy_ms)
{
	char err[256] = "";
	struct db *db = db_open(path, 0, busy_ms, err, sizeof(err));

	if (db == NULL)
		fail_msg("opening %s: %s", path, err);
	return db;
}

static int
group_setup(void **state)
{
	g_url = getenv("HS_TEST_PG_URL");
	if (g_url == NULL || !db_is_url(g_url)) {
		fprintf(stderr,
			"HS_TEST_PG_URL is not set to a postgres:// URL; "
			"run: python3 -m hslab.pg run -- %s\n",
			"test_db_pg");
		return -1;
	}
	snprintf(g_dir, sizeof(g_dir), "/tmp/hs-test-db-pg-XXXXXX");
	if (mkdtemp(g_dir) == NULL)
		return -1;
	snprintf(g_file, sizeof(g_file), "%s/same.db", g_dir);
	seed(g_file, SEED);
	seed(g_url, SEED);
	return 0;
}

static int
group_teardown(void **state)
{
	char side[300];

	unlink(g_file);
	snprintf(side, sizeof(side), "%s-wal", g_file);
	unlink(side);
	snprintf(side, sizeof(side), "%s-shm", g_file);
	unlink(side);
	rmdir(g_dir);
	return 0;
}

static void
same_product(const struct db_product *a, const struct db_product *b, int times)
{
	assert_int_equal(a->id, b->id);
	assert_int_equal(a->category_id, b->category_id);
	assert_string_equal(a->name, b->name);
	assert_string_equal(a->description, b->description);
	assert_int_equal(a->price_cents, b->price_cents);
	assert_int_equal(a->stock, b->stock);
	assert_int_equal(a->version, b->version);
	if (times)
		assert_int_equal(a->updated_at, b->updated_at);
}

static void
same_detail(struct db *s, struct db *p, int64_t id, int times)
{
	struct db_product_detail a, b;
	int i, ra = db_product_detail(s, id, &a),
	       rb = db_product_detail(p, id, &b);

	assert_int_equal(ra, rb);
	if (ra != DB_OK)
		return;
	same_product(&a.product, &b.product, times);
	assert_int_equal(a.summary.count, b.summary.count);
	/* Both are sum / count in double: exactly equal, not just close. */
	assert_true(a.summary.average == b.summary.average);
	for (i = 0; i < 5; i++)
		assert_int_equal(a.summary.histogram[i],
				 b.summary.histogram[i]);
	assert_int_equal(a.nrecent, b.nrecent);
	for (i = 0; i < a.nrecent; i++) {
		assert_int_equal(a.recent[i].id, b.recent[i].id);
		assert_int_equal(a.recent[i].rating, b.recent[i].rating);
		assert_string_equal(a.recent[i].body, b.recent[i].body);
		if (times)
			assert_int_equal(a.recent[i].created_at,
					 b.recent[i].created_at);
	}
}

static void
same_top(struct db *s, struct db *p, int64_t cat)
{
	struct db_category_top a, b;
	int i, ra = db_category_top(s, cat, &a),
	       rb = db_category_top(p, cat, &b);

	assert_int_equal(ra, rb);
	if (ra != DB_OK)
		return;
	assert_string_equal(a.name, b.name);
	assert_int_equal(a.n, b.n);
	for (i = 0; i < a.n; i++) {
		assert_int_equal(a.top[i].product_id, b.top[i].product_id);
		assert_string_equal(a.top[i].name, b.top[i].name);
		assert_int_equal(a.top[i].price_cents, b.top[i].price_cents);
		assert_int_equal(a.top[i].review_count, b.top[i].review_count);
		assert_true(a.top[i].average == b.top[i].average);
	}
}

/* Every read of db.h answers the same on both engines after the same seed. */
static void
test_reads_same(void **state)
{
	struct db *s = open_ok(g_file, 0), *p = open_ok(g_url, 0);
	struct db_counts a, b;
	int32_t na = 0, nb = 0;
	int64_t id;
	int i;

	assert_int_equal(db_counts(s, &a), DB_OK);
	assert_int_equal(db_counts(p, &b), DB_OK);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_int_equal(b.products, 1000);
	assert_int_equal(b.reviews, 10000);
	/* 0 and one past the end: both DB_NOTFOUND. */
	for (id = 0; id <= 1001; id++)
		same_detail(s, p, id, 1);
	for (id = 0; id <= 2; id++)
		same_top(s, p, id);
	for (i = 0; i <= DB_WORLD_ROWS + 1; i += 97) {
		assert_int_equal(db_world_get(s, i, &na),
				 db_world_get(p, i, &nb));
		assert_int_equal(na, nb);
	}
	/* Both engines count their statements and their time. */
	assert_true(db_queries(p) > 3000);
	assert_true(db_time_ns(p) > 0);
	db_close(s);
	db_close(p);
}

/*
 * The same writes on copies of the same data give the same results and
 * leave the same reads (timestamps aside: they are the time of the write).
 */
static void
test_writes_same(void **state)
{
	const char *url = fresh_db("hs_writes");
	char file[300];
	struct db *s, *p;
	struct db_product pa, pb;
	struct db_review ra, rb;
	struct db_product_change c = { .has_name = 1,
				       .name = "Renamed 'x' \\",
				       .has_price = 1,
				       .price_cents = 4321 };
	struct db_product_change c2 = { .has_stock = 1, .stock = 0 };
	int32_t ids[4] = { 7, 3, 7, 9 }, nums[4] = { 1, 2, 3, 4 };
	int32_t bad[2] = { 5, DB_WORLD_ROWS + 1 }, na, nb;
	int64_t ca = 0, cb = 0;

	snprintf(file, sizeof(file), "%s/writes.db", g_dir);
	seed(file, SEED);
	seed(url, SEED);
	s = open_ok(file, 0);
	p = open_ok(url, 0);

	assert_int_equal(db_product_update(s, 5, &c, &pa), DB_OK);
	assert_int_equal(db_product_update(p, 5, &c, &pb), DB_OK);
	same_product(&pa, &pb, 0);
	assert_int_equal(pb.version, 2);
	assert_string_equal(pb.name, "Renamed 'x' \\");
	assert_int_equal(db_product_update(s, 5, &c2, &pa), DB_OK);
	assert_int_equal(db_product_update(p, 5, &c2, &pb), DB_OK);
	same_product(&pa, &pb, 0);
	assert_int_equal(db_product_update(s, 5000, &c2, &pa), DB_NOTFOUND);
	assert_int_equal(db_product_update(p, 5000, &c2, &pb), DB_NOTFOUND);

	assert_int_equal(db_review_add(s, 5, 4, "tab\there\nnewline", &ra, &ca),
			 DB_OK);
	assert_int_equal(db_review_add(p, 5, 4, "tab\there\nnewline", &rb, &cb),
			 DB_OK);
	assert_int_equal(ra.id, rb.id); /* both continue after the seed */
	assert_int_equal(ca, cb);
	assert_string_equal(rb.body, "tab\there\nnewline");
	assert_int_equal(db_review_add(s, 5000, 4, "x", &ra, &ca), DB_NOTFOUND);
	assert_int_equal(db_review_add(p, 5000, 4, "x", &rb, &cb), DB_NOTFOUND);
	/* The CHECK constraint: an error on both, and nothing bumped. */
	assert_int_equal(db_review_add(s, 5, 9, "x", &ra, &ca), DB_ERR);
	assert_int_equal(db_review_add(p, 5, 9, "x", &rb, &cb), DB_ERR);
	same_detail(s, p, 5, 0);

	assert_int_equal(db_product_delete(s, 6, &ca), DB_OK);
	assert_int_equal(db_product_delete(p, 6, &cb), DB_OK);
	assert_int_equal(ca, cb);
	assert_int_equal(db_product_delete(s, 6, &ca), DB_NOTFOUND);
	assert_int_equal(db_product_delete(p, 6, &cb), DB_NOTFOUND);
	same_detail(s, p, 6, 0);
	same_top(s, p, 1);

	/* Repeated ids: the last value given wins on both. */
	assert_int_equal(db_world_update(s, ids, nums, 4), DB_OK);
	assert_int_equal(db_world_update(p, ids, nums, 4), DB_OK);
	assert_int_equal(db_world_get(p, 7, &nb), DB_OK);
	assert_int_equal(nb, 3);
	/* A missing id: DB_NOTFOUND and nothing written, on both. */
	assert_int_equal(db_world_get(p, 5, &nb), DB_OK);
	assert_int_equal(db_world_update(s, bad, nums, 2), DB_NOTFOUND);
	assert_int_equal(db_world_update(p, bad, nums, 2), DB_NOTFOUND);
	assert_int_equal(db_world_get(p, 5, &na), DB_OK);
	assert_int_equal(na, nb);
	for (na = 1; na <= 10; na++) {
		int32_t x = 0, y = 0;

		assert_int_equal(db_world_get(s, na, &x), DB_OK);
		assert_int_equal(db_world_get(p, na, &y), DB_OK);
		assert_int_equal(x, y);
	}
	db_close(s);
	db_close(p);
	unlink(file);
}

#define PROC_WRITERS 4
#define PROC_OPS     150

/*
 * One writer process: PROC_OPS bumps of products 1..3 (updates and
 * reviews), each from its own connection; exits with the number of
 * acknowledged bumps of product 1 (and fails on a version that did not
 * grow).  Answers other than DB_OK are allowed (counted as not done).
 */
static int
writer(const char *url, int k)
{
	struct db *db = db_open(url, 0, 10000, NULL, 0);
	struct db_product_change c = { .has_stock = 1 };
	struct db_product after;
	struct db_review r;
	int64_t last[4] = { 0 }, cat;
	int i, acks = 0, rc;

	if (db == NULL)
		return 255;
	for (i = 0; i < PROC_OPS; i++) {
		int64_t id = 1 + (i + k) % 3;

		c.stock = i;
		if (i % 4 == 3) {
			rc = db_review_add(db, id, 1 + i % 5, "w", &r, &cat);
			if (rc == DB_OK && id == 1)
				acks++;
			continue;
		}
		rc = db_product_update(db, id, &c, &after);
		if (rc != DB_OK)
			continue;
		if (after.version <= last[id])
			return 254;
		last[id] = after.version;
		if (id == 1)
			acks++;
	}
	db_close(db);
	return acks;
}

/* Writers in several processes on the same rows: no bump is lost. */
static void
test_concurrent_processes(void **state)
{
	const char *url = fresh_db("hs_procs");
	pid_t pids[PROC_WRITERS];
	int go[2], i, status, acks = 0;
	PGconn *c;
	char ch;

	seed(url, SEED);
	assert_int_equal(pipe(go), 0);
	for (i = 0; i < PROC_WRITERS; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(go[1]);
			if (read(go[0], &ch, 1) != 0)
				_exit(253);
			_exit(writer(url, i));
		}
	}
	close(go[0]);
	close(go[1]); /* all start at once */
	for (i = 0; i < PROC_WRITERS; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_true(WEXITSTATUS(status) < 250);
		acks += WEXITSTATUS(status);
	}
	assert_true(acks > 0);
	c = admin(url);
	assert_int_equal(admin_int(c,
				   "SELECT version FROM products WHERE id = 1"),
			 1 + acks);
	PQfinish(c);
}

/* Ends every server-side session of the engine (application_name). */
static void
kill_sessions(void)
{
	PGconn *c = admin(g_url);

	assert_true(admin_int(c, "SELECT count(pg_terminate_backend(pid)) FROM "
				 "pg_stat_activity WHERE application_name = "
				 "'hammerstack'") >= 1);
	PQfinish(c);
}

/* A connection lost under a handle: DB_ERR once, then it reconnects. */
static void
test_lost_connection(void **state)
{
	struct db *db = open_ok(g_url, 0);
	struct db_product_detail d;
	struct db_product_change c = { .has_stock = 1, .stock = 3 };
	struct db_product after;
	int32_t n;

	assert_int_equal(db_world_get(db, 1, &n), DB_OK);
	kill_sessions();
	assert_int_equal(db_world_get(db, 1, &n), DB_ERR);
	assert_non_null(strstr(db_errmsg(db), "connection lost"));
	assert_int_equal(db_world_get(db, 1, &n), DB_OK);
	/* Statements are prepared again on the new connection. */
	assert_int_equal(db_product_detail(db, 1, &d), DB_OK);
	kill_sessions();
	assert_int_equal(db_product_update(db, 2, &c, &after), DB_ERR);
	assert_int_equal(db_product_update(db, 2, &c, &after), DB_OK);
	kill_sessions();
	assert_int_equal(db_check(db), DB_OK); /* reconnects as well */
	db_close(db);

	/* Nothing listening: db_open and db_exists say so, no crash. */
	assert_null(
		db_open("postgres://hammerstack@127.0.0.1:1/x", 0, 0, NULL, 0));
	assert_int_equal(db_exists("postgres://hammerstack@127.0.0.1:1/x", NULL,
				   0),
			 -1);
}

/* A row locked past the busy timeout: DB_BUSY for writers, reads go on. */
static void
test_busy(void **state)
{
	struct db *db = open_ok(g_url, 100);
	struct db_product_change c = { .has_stock = 1, .stock = 1 };
	struct db_product after;
	struct db_product_detail d;
	struct db_review r;
	int64_t cat;
	uint64_t t0;
	PGconn *lock = admin(g_url);

	admin_exec(lock,
		   "BEGIN; SELECT 1 FROM products WHERE id = 1 FOR UPDATE");
	t0 = hs_now_ns();
	assert_int_equal(db_product_update(db, 1, &c, &after), DB_BUSY);
	assert_true(hs_now_ns() - t0 < 3000000000ull);
	assert_int_equal(db_review_add(db, 1, 3, "x", &r, &cat), DB_BUSY);
	assert_int_equal(db_product_detail(db, 1, &d), DB_OK);
	admin_exec(lock, "ROLLBACK");
	assert_int_equal(db_product_update(db, 1, &c, &after), DB_OK);
	PQfinish(lock);
	db_close(db);
}

/* Seeding: refused on a seeded database; --force replaces it in place. */
static void
test_seed_replace(void **state)
{
	const char *url = fresh_db("hs_reseed");
	struct db_seed_opts o = { .scale = SCALE, .seed = SEED + 1 };
	struct db_product_detail before, d;
	struct db_counts n;
	struct db *db;
	char err[256] = "";

	assert_int_equal(db_exists(url, err, sizeof(err)), 0);
	seed(url, SEED);
	assert_int_equal(db_exists(url, err, sizeof(err)), 1);
	assert_int_equal(db_seed_file(url, &o, err, sizeof(err)), DB_ERR);
	assert_non_null(strstr(err, "already seeded"));
	db = open_ok(url, 0);
	assert_int_equal(db_product_detail(db, 1, &before), DB_OK);
	assert_int_equal(db_seed_file_replace(url, &o, err, sizeof(err)),
			 DB_OK);
	/* The open connection goes on, on the new tables. */
	assert_int_equal(db_product_detail(db, 1, &d), DB_OK);
	assert_string_not_equal(d.product.name, before.product.name);
	assert_int_equal(db_counts(db, &n), DB_OK);
	assert_int_equal(n.products, 1000);
	db_close(db);
	/* A bad scale is refused before anything is touched. */
	o.scale = -1;
	assert_int_equal(db_seed_file(url_for("nowhere"), &o, err, sizeof(err)),
			 DB_ERR);
	assert_non_null(strstr(err, "scale"));
}

/* db_open on an empty database creates the schema (as on a new file). */
static void
test_open_empty(void **state)
{
	const char *url = fresh_db("hs_empty");
	struct db_counts n;
	struct db *db = open_ok(url, 0), *db2 = open_ok(url, 0);

	assert_int_equal(db_counts(db, &n), DB_OK);
	assert_int_equal(n.products, 0);
	assert_int_equal(db_synchronous(db), 2);
	db_close(db);
	db_close(db2);
	db_close(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reads_same),
		cmocka_unit_test(test_writes_same),
		cmocka_unit_test(test_concurrent_processes),
		cmocka_unit_test(test_lost_connection),
		cmocka_unit_test(test_busy),
		cmocka_unit_test(test_seed_replace),
		cmocka_unit_test(test_open_empty),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
