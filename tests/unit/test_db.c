/*
 * Unit tests for db/: seeding (counts, determinism), the queries against
 * an independent computation over the same file with plain SQLite, the
 * writes (version bumps, deletes), migrations of old files, concurrent
 * writers in threads and processes, DB_BUSY past the busy timeout, and
 * DB_MOVED when the file is deleted or replaced under open connections.
 * Everything runs on real SQLite files in a temporary directory.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "db.h"
#include "hs_util.h"

#define SMALL 0.01 /* 1 category, 1000 products, 10000 reviews */

static char g_dir[256];

/* A path inside the test directory (a new static buffer per call slot). */
static const char *
tpath(const char *name)
{
	static char bufs[8][512];
	static int slot;
	char *b = bufs[slot++ % 8];

	snprintf(b, 512, "%s/%s", g_dir, name);
	return b;
}

static void
seed_at(const char *path, double scale, uint64_t seed)
{
	struct db_seed_opts o = { .scale = scale, .seed = seed };
	char err[256] = "";
	int rc = db_seed_file(path, &o, err, sizeof(err));

	if (rc != DB_OK)
		fail_msg("seeding %s: %s", path, err);
}

static struct db *
open_ok(const char *path)
{
	char err[256] = "";
	struct db *db = db_open(path, 0, 0, err, sizeof(err));

	if (db == NULL)
		fail_msg("opening %s: %s", path, err);
	return db;
}

/* A plain SQLite connection, for checking what the layer wrote. */
static sqlite3 *
raw_open(const char *path)
{
	sqlite3 *s = NULL;

	assert_int_equal(sqlite3_open_v2(path, &s,
					 SQLITE_OPEN_READWRITE |
						 SQLITE_OPEN_CREATE,
					 NULL),
			 SQLITE_OK);
	sqlite3_busy_timeout(s, 5000);
	return s;
}

static void
raw_exec(sqlite3 *s, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(s, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg ? msg : "?");
}

/* The first column of the first row of sql with ?1 bound to arg. */
static int64_t
raw_int(sqlite3 *s, const char *sql, int64_t arg)
{
	sqlite3_stmt *st = NULL;
	int64_t v = -1;

	if (sqlite3_prepare_v2(s, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(s));
	if (sqlite3_bind_parameter_count(st) > 0)
		sqlite3_bind_int64(st, 1, arg);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int64_t
file_int(const char *path, const char *sql, int64_t arg)
{
	sqlite3 *s = raw_open(path);
	int64_t v = raw_int(s, sql, arg);

	sqlite3_close(s);
	return v;
}

/* FNV-1a over every row of every table, in id order. */
static uint64_t
content_hash(const char *path)
{
	static const char *const sql[] = {
		"SELECT * FROM categories ORDER BY id",
		"SELECT * FROM products ORDER BY id",
		"SELECT * FROM reviews ORDER BY id",
		"SELECT * FROM world ORDER BY id",
	};
	sqlite3 *s = raw_open(path);
	sqlite3_stmt *st;
	uint64_t h = 1469598103934665603ull;
	const unsigned char *p;
	size_t t;
	int i, n, k;

	for (t = 0; t < sizeof(sql) / sizeof(sql[0]); t++) {
		assert_int_equal(sqlite3_prepare_v2(s, sql[t], -1, &st, NULL),
				 SQLITE_OK);
		while (sqlite3_step(st) == SQLITE_ROW) {
			for (i = 0; i < sqlite3_column_count(st); i++) {
				p = sqlite3_column_text(st, i);
				n = sqlite3_column_bytes(st, i);
				for (k = 0; k < n; k++)
					h = (h ^ p[k]) * 1099511628211ull;
				h = (h ^ 0xff) * 1099511628211ull;
			}
		}
		sqlite3_finalize(st);
	}
	sqlite3_close(s);
	return h;
}

static int
rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(p);
}

static int
group_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(g_dir, sizeof(g_dir), "%s/hs-test-db-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	return mkdtemp(g_dir) ? 0 : -1;
}

static int
group_teardown(void **state)
{
	return nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- seeding ---- */

static void
check_counts(const char *name, double scale, int64_t c, int64_t p, int64_t r)
{
	const char *path = tpath(name);
	struct db_counts n;
	struct db *db;

	seed_at(path, scale, 0);
	db = open_ok(path);
	assert_int_equal(db_counts(db, &n), DB_OK);
	assert_int_equal(n.categories, c);
	assert_int_equal(n.products, p);
	assert_int_equal(n.reviews, r);
	assert_int_equal(n.world, DB_WORLD_ROWS);
	db_close(db);
	assert_int_equal(file_int(path, "PRAGMA user_version", 0),
			 DB_SCHEMA_VERSION);
	/* Every product and review points at a row that exists. */
	assert_int_equal(
		file_int(path,
			 "SELECT count(*) FROM products WHERE "
			 "category_id NOT IN (SELECT id FROM categories)",
			 0),
		0);
	assert_int_equal(file_int(path,
				  "SELECT count(*) FROM reviews WHERE "
				  "product_id NOT IN (SELECT id FROM products)",
				  0),
			 0);
	assert_int_equal(
		file_int(path,
			 "SELECT count(*) FROM reviews WHERE "
			 "rating NOT BETWEEN 1 AND 5 OR length(body) = 0",
			 0),
		0);
}

static void
test_seed_counts(void **state)
{
	check_counts("c1.db", SMALL, 1, 1000, 10000);
	check_counts("c2.db", 0.0234, 2, 2340, 23400);
	check_counts("c3.db", 0.0001, 1, 10, 100);
	check_counts("c4.db", 1e-9, 1, 1, 1);
}

static void
test_seed_deterministic(void **state)
{
	const char *a = tpath("d1.db"), *b = tpath("d2.db"),
		   *c = tpath("d3.db");
	uint64_t ha, hb, hc;

	seed_at(a, SMALL, 0);
	seed_at(b, SMALL, 0);
	seed_at(c, SMALL, 42);
	ha = content_hash(a);
	hb = content_hash(b);
	hc = content_hash(c);
	assert_true(ha == hb);
	assert_true(ha != hc);
	/* The default seed is a fixed number, not "random". */
	seed_at(tpath("d4.db"), SMALL, 0x68616d6d65727374ull);
	assert_true(content_hash(tpath("d4.db")) == ha);
}

/* The data has the shape the queries need: skew, empties, varied averages. */
static void
test_seed_shape(void **state)
{
	const char *path = tpath("shape.db");
	sqlite3 *s;

	seed_at(path, SMALL, 0);
	s = raw_open(path);
	/* Some products have no reviews, some have many. */
	assert_true(raw_int(s,
			    "SELECT count(*) FROM products WHERE id NOT IN "
			    "(SELECT product_id FROM reviews)",
			    0) > 10);
	assert_true(raw_int(s,
			    "SELECT max(n) FROM (SELECT count(*) AS n FROM "
			    "reviews GROUP BY product_id)",
			    0) > 50);
	/* Averages spread over most of 1..5 (in tenths). */
	assert_true(raw_int(s,
			    "SELECT count(DISTINCT CAST(a * 10 AS INT)) FROM "
			    "(SELECT avg(rating) AS a FROM reviews "
			    "GROUP BY product_id HAVING count(*) >= 5)",
			    0) > 20);
	/* Every rating occurs. */
	assert_int_equal(raw_int(s,
				 "SELECT count(DISTINCT rating) FROM reviews",
				 0),
			 5);
	/* Seeded files come out in WAL mode, with no side files left. */
	assert_int_equal(raw_int(s,
				 "SELECT journal_mode = 'wal' FROM "
				 "pragma_journal_mode",
				 0),
			 1);
	sqlite3_close(s);
}

/* ---- reads against an independent computation ---- */

struct raw_review {
	int64_t id, created_at;
	int rating;
	char body[DB_BODY_MAX + 1];
};

static int
cmp_newest(const void *a, const void *b)
{
	const struct raw_review *x = a, *y = b;

	if (x->created_at != y->created_at)
		return x->created_at > y->created_at ? -1 : 1;
	return x->id > y->id ? -1 : x->id < y->id;
}

/* Checks one product's detail against its rows read with plain SQL. */
static void
check_detail(struct db *db, sqlite3 *s, int64_t id)
{
	struct db_product_detail d;
	struct raw_review *rv = NULL;
	sqlite3_stmt *st;
	int64_t hist[5] = { 0 }, sum = 0, n = 0, cap = 0;
	int i;

	assert_int_equal(db_product_detail(db, id, &d), DB_OK);
	assert_int_equal(
		sqlite3_prepare_v2(
			s,
			"SELECT id, category_id, name, description, price_cents, stock,"
			" version, updated_at FROM products WHERE id = ?1",
			-1, &st, NULL),
		SQLITE_OK);
	sqlite3_bind_int64(st, 1, id);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(d.product.id, id);
	assert_int_equal(d.product.category_id, sqlite3_column_int64(st, 1));
	assert_string_equal(d.product.name,
			    (const char *)sqlite3_column_text(st, 2));
	assert_string_equal(d.product.description,
			    (const char *)sqlite3_column_text(st, 3));
	assert_int_equal(d.product.price_cents, sqlite3_column_int64(st, 4));
	assert_int_equal(d.product.stock, sqlite3_column_int64(st, 5));
	assert_int_equal(d.product.version, sqlite3_column_int64(st, 6));
	assert_int_equal(d.product.updated_at, sqlite3_column_int64(st, 7));
	sqlite3_finalize(st);

	/* Every review of the product, summarised and sorted here in C. */
	assert_int_equal(
		sqlite3_prepare_v2(
			s,
			"SELECT id, created_at, rating, body FROM reviews"
			" WHERE product_id = ?1",
			-1, &st, NULL),
		SQLITE_OK);
	sqlite3_bind_int64(st, 1, id);
	while (sqlite3_step(st) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			rv = realloc(rv, (size_t)cap * sizeof(*rv));
			assert_non_null(rv);
		}
		rv[n].id = sqlite3_column_int64(st, 0);
		rv[n].created_at = sqlite3_column_int64(st, 1);
		rv[n].rating = sqlite3_column_int(st, 2);
		snprintf(rv[n].body, sizeof(rv[n].body), "%s",
			 (const char *)sqlite3_column_text(st, 3));
		hist[rv[n].rating - 1]++;
		sum += rv[n].rating;
		n++;
	}
	sqlite3_finalize(st);
	assert_int_equal(d.summary.count, n);
	for (i = 0; i < 5; i++)
		assert_int_equal(d.summary.histogram[i], hist[i]);
	if (n == 0)
		assert_true(d.summary.average == 0.0);
	else
		assert_true(d.summary.average == (double)sum / (double)n);
	if (n > 1)
		qsort(rv, (size_t)n, sizeof(*rv), cmp_newest);
	assert_int_equal(d.nrecent, n < DB_RECENT_N ? n : DB_RECENT_N);
	for (i = 0; i < d.nrecent; i++) {
		assert_int_equal(d.recent[i].id, rv[i].id);
		assert_int_equal(d.recent[i].product_id, id);
		assert_int_equal(d.recent[i].created_at, rv[i].created_at);
		assert_int_equal(d.recent[i].rating, rv[i].rating);
		assert_string_equal(d.recent[i].body, rv[i].body);
	}
	free(rv);
}

static void
test_product_detail(void **state)
{
	const char *path = tpath("detail.db");
	struct db_product_detail d;
	struct db *db;
	sqlite3 *s;
	int64_t id, empty, busiest;

	seed_at(path, SMALL, 0);
	db = open_ok(path);
	s = raw_open(path);
	for (id = 1; id <= 1000; id++)
		check_detail(db, s, id);
	/* The loop covered both a product without reviews and a busy one. */
	empty = raw_int(s,
			"SELECT min(id) FROM products WHERE id NOT IN "
			"(SELECT product_id FROM reviews)",
			0);
	busiest = raw_int(s,
			  "SELECT product_id FROM reviews GROUP BY product_id"
			  " ORDER BY count(*) DESC LIMIT 1",
			  0);
	assert_int_equal(db_product_detail(db, empty, &d), DB_OK);
	assert_int_equal(d.summary.count, 0);
	assert_int_equal(d.nrecent, 0);
	assert_int_equal(db_product_detail(db, busiest, &d), DB_OK);
	assert_true(d.summary.count > DB_RECENT_N);
	assert_int_equal(d.nrecent, DB_RECENT_N);

	/* Ties on created_at are broken by the higher id first. */
	raw_exec(s, "INSERT INTO reviews(product_id, rating, body, created_at)"
		    " VALUES (7, 1, 'tie a', 4102444800000),"
		    " (7, 2, 'tie b', 4102444800000),"
		    " (7, 3, 'older', 4102444799999)");
	check_detail(db, s, 7);
	assert_int_equal(db_product_detail(db, 7, &d), DB_OK);
	assert_string_equal(d.recent[0].body, "tie b");
	assert_string_equal(d.recent[1].body, "tie a");
	assert_string_equal(d.recent[2].body, "older");

	assert_int_equal(db_product_detail(db, 0, &d), DB_NOTFOUND);
	assert_int_equal(db_product_detail(db, -5, &d), DB_NOTFOUND);
	assert_int_equal(db_product_detail(db, 1001, &d), DB_NOTFOUND);
	assert_int_equal(db_product_detail(db, INT64_MAX, &d), DB_NOTFOUND);
	sqlite3_close(s);
	db_close(db);
}

struct raw_top {
	int64_t id, price, n, sum;
	char name[DB_NAME_MAX + 1];
};

/* Reviewed first; higher average (compared exactly); more reviews; lower id. */
static int
cmp_top(const void *a, const void *b)
{
	const struct raw_top *x = a, *y = b;
	__int128 l, r;

	if ((x->n == 0) != (y->n == 0))
		return x->n == 0 ? 1 : -1;
	if (x->n && y->n) {
		l = (__int128)x->sum * y->n;
		r = (__int128)y->sum * x->n;
		if (l != r)
			return l > r ? -1 : 1;
		if (x->n != y->n)
			return x->n > y->n ? -1 : 1;
	}
	return x->id < y->id ? -1 : x->id > y->id;
}

static void
check_top(struct db *db, sqlite3 *s, int64_t cat)
{
	struct db_category_top t;
	struct raw_top *rows = NULL;
	sqlite3_stmt *st;
	size_t n = 0, cap = 0;
	int i, want;

	assert_int_equal(db_category_top(db, cat, &t), DB_OK);
	assert_int_equal(t.category_id, cat);
	assert_int_equal(sqlite3_prepare_v2(s,
					    "SELECT name FROM categories "
					    "WHERE id = ?1",
					    -1, &st, NULL),
			 SQLITE_OK);
	sqlite3_bind_int64(st, 1, cat);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal(t.name, (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);

	/* Per-product count and sum, without a join, ranked in C. */
	assert_int_equal(
		sqlite3_prepare_v2(
			s,
			"SELECT id, price_cents, name,"
			" (SELECT count(*) FROM reviews WHERE product_id = products.id),"
			" (SELECT total(rating) FROM reviews WHERE product_id = products.id)"
			" FROM products WHERE category_id = ?1",
			-1, &st, NULL),
		SQLITE_OK);
	sqlite3_bind_int64(st, 1, cat);
	while (sqlite3_step(st) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			rows = realloc(rows, cap * sizeof(*rows));
			assert_non_null(rows);
		}
		rows[n].id = sqlite3_column_int64(st, 0);
		rows[n].price = sqlite3_column_int64(st, 1);
		snprintf(rows[n].name, sizeof(rows[n].name), "%s",
			 (const char *)sqlite3_column_text(st, 2));
		rows[n].n = sqlite3_column_int64(st, 3);
		rows[n].sum = (int64_t)sqlite3_column_double(st, 4);
		n++;
	}
	sqlite3_finalize(st);
	if (n > 1)
		qsort(rows, n, sizeof(*rows), cmp_top);
	want = n < DB_TOP_N ? (int)n : DB_TOP_N;
	assert_int_equal(t.n, want);
	for (i = 0; i < want; i++) {
		assert_int_equal(t.top[i].product_id, rows[i].id);
		assert_int_equal(t.top[i].review_count, rows[i].n);
		assert_int_equal(t.top[i].price_cents, rows[i].price);
		assert_string_equal(t.top[i].name, rows[i].name);
		if (rows[i].n)
			assert_true(t.top[i].average ==
				    (double)rows[i].sum / (double)rows[i].n);
		else
			assert_true(t.top[i].average == 0.0);
	}
	free(rows);
}

static void
test_category_top(void **state)
{
	const char *path = tpath("top.db");
	struct db_category_top t;
	struct db *db;
	sqlite3 *s;
	int64_t cat;

	seed_at(path, 0.05, 0); /* 5 categories, ~1000 products each */
	db = open_ok(path);
	s = raw_open(path);
	for (cat = 1; cat <= 5; cat++)
		check_top(db, s, cat);
	assert_int_equal(db_category_top(db, 0, &t), DB_NOTFOUND);
	assert_int_equal(db_category_top(db, 6, &t), DB_NOTFOUND);
	assert_int_equal(db_category_top(db, -1, &t), DB_NOTFOUND);
	/* A category without products exists and has an empty list. */
	raw_exec(s, "INSERT INTO categories(id, name) VALUES (77, 'Empty')");
	assert_int_equal(db_category_top(db, 77, &t), DB_OK);
	assert_int_equal(t.n, 0);
	assert_string_equal(t.name, "Empty");
	sqlite3_close(s);
	db_close(db);
}

/* The ranking rules, on hand-made reviews whose order is known. */
static void
test_category_top_order(void **state)
{
	static const int64_t want[] = { 2, 3, 1, 4, 7, 6, 5, 8, 9, 10 };
	const char *path = tpath("order.db");
	struct db_category_top t;
	struct db *db;
	sqlite3 *s;
	int i;

	seed_at(path, 0.0001, 0); /* 1 category, products 1..10 */
	s = raw_open(path);
	raw_exec(s,
		 "DELETE FROM reviews;"
		 "INSERT INTO reviews(product_id, rating, body, created_at) VALUES"
		 " (1, 4, '', 1), (1, 4, '', 2),"                /* 4.0 x2 */
		 " (2, 5, '', 1),"                               /* 5.0 x1 */
		 " (3, 4, '', 1), (3, 4, '', 2), (3, 4, '', 3)," /* 4.0 x3 */
		 " (4, 4, '', 1), (4, 4, '', 2),"                /* 4.0 x2 */
		 " (6, 1, '', 1),"                               /* 1.0 x1 */
		 " (7, 3, '', 1), (7, 5, '', 2);");              /* 4.0 x2 */
	db = open_ok(path);
	assert_int_equal(db_category_top(db, 1, &t), DB_OK);
	assert_int_equal(t.n, 10);
	for (i = 0; i < 10; i++)
		assert_int_equal(t.top[i].product_id, want[i]);
	assert_true(t.top[0].average == 5.0);
	assert_int_equal(t.top[1].review_count, 3);
	assert_true(t.top[5].average == 1.0);
	assert_int_equal(t.top[6].review_count, 0);
	assert_true(t.top[6].average == 0.0);
	check_top(db, s, 1);
	sqlite3_close(s);
	db_close(db);
}

/* ---- writes ---- */

static void
test_product_update(void **state)
{
	const char *path = tpath("update.db");
	struct db_product_detail d0, d1;
	struct db_product_change c = { 0 };
	struct db_product p;
	struct db *db;
	int64_t before;

	seed_at(path, SMALL, 0);
	db = open_ok(path);
	assert_int_equal(db_product_detail(db, 42, &d0), DB_OK);
	assert_int_equal(d0.product.version, 1);

	/*
	 * Wall-clock milliseconds: the margin allows for a step of the
	 * machine's clock (seen on virtual machines) while still telling
	 * milliseconds from seconds or a monotonic clock.
	 */
	before = (int64_t)time(NULL) * 1000 - 60000;
	c.has_name = 1;
	c.name = "Renamed \"thing\" 'with' quotes; DROP TABLE products;--";
	assert_int_equal(db_product_update(db, 42, &c, &p), DB_OK);
	assert_int_equal(p.id, 42);
	assert_int_equal(p.version, 2);
	assert_string_equal(p.name, c.name);
	assert_int_equal(p.price_cents, d0.product.price_cents);
	assert_int_equal(p.stock, d0.product.stock);
	assert_int_equal(p.category_id, d0.product.category_id);
	assert_string_equal(p.description, d0.product.description);
	assert_true(p.updated_at >= before);
	assert_true(p.updated_at <= (int64_t)time(NULL) * 1000 + 60000);

	memset(&c, 0, sizeof(c));
	c.has_price = 1;
	c.price_cents = 0;
	c.has_stock = 1;
	c.stock = 123456;
	assert_int_equal(db_product_update(db, 42, &c, &p), DB_OK);
	assert_int_equal(p.version, 3);
	assert_int_equal(p.price_cents, 0);
	assert_int_equal(p.stock, 123456);
	assert_string_equal(p.name, "Renamed \"thing\" 'with' quotes; "
				    "DROP TABLE products;--");

	/* What the update returned is what a later read sees. */
	assert_int_equal(db_product_detail(db, 42, &d1), DB_OK);
	assert_memory_equal(&d1.product, &p, sizeof(p));
	assert_int_equal(d1.summary.count, d0.summary.count);

	/* Other rows are untouched. */
	assert_int_equal(file_int(path,
				  "SELECT max(version) FROM products "
				  "WHERE id <> 42",
				  0),
			 1);
	assert_int_equal(db_product_update(db, 1001, &c, &p), DB_NOTFOUND);
	assert_int_equal(db_product_update(db, 0, &c, &p), DB_NOTFOUND);
	assert_int_equal(file_int(path, "SELECT sum(version) FROM products", 0),
			 1000 + 2);
	db_close(db);
}

static void
test_review_add(void **state)
{
	const char *path = tpath("review.db");
	struct db_product_detail d0, d1;
	struct db_review r;
	struct db *db;
	int64_t cat = -1, total;

	seed_at(path, SMALL, 0);
	db = open_ok(path);
	total = file_int(path, "SELECT count(*) FROM reviews", 0);
	assert_int_equal(db_product_detail(db, 9, &d0), DB_OK);
	assert_int_equal(db_review_add(db, 9, 5, "Great \xc3\xa9t\xc3\xa9 item",
				       &r, &cat),
			 DB_OK);
	assert_int_equal(cat, d0.product.category_id);
	assert_true(r.id > total);
	assert_int_equal(r.product_id, 9);
	assert_int_equal(r.rating, 5);
	assert_string_equal(r.body, "Great \xc3\xa9t\xc3\xa9 item");
	assert_int_equal(db_product_detail(db, 9, &d1), DB_OK);
	assert_int_equal(d1.product.version, d0.product.version + 1);
	assert_true(d1.product.updated_at >= d0.product.updated_at);
	assert_int_equal(d1.summary.count, d0.summary.count + 1);
	assert_int_equal(d1.summary.histogram[4], d0.summary.histogram[4] + 1);
	/* The newest review comes first. */
	assert_int_equal(d1.recent[0].id, r.id);
	assert_int_equal(d1.recent[0].created_at, r.created_at);

	/* A NULL body is stored as "". */
	assert_int_equal(db_review_add(db, 9, 1, NULL, &r, &cat), DB_OK);
	assert_string_equal(r.body, "");
	assert_int_equal(db_product_detail(db, 9, &d1), DB_OK);
	assert_int_equal(d1.product.version, d0.product.version + 2);
	assert_string_equal(d1.recent[0].body, "");

	/* A missing product adds nothing; a bad rating is refused. */
	assert_int_equal(db_review_add(db, 5000, 3, "x", &r, &cat),
			 DB_NOTFOUND);
	assert_int_equal(db_review_add(db, 9, 6, "x", &r, &cat), DB_ERR);
	assert_true(strlen(db_errmsg(db)) > 0);
	assert_int_equal(db_review_add(db, 9, 0, "x", &r, &cat), DB_ERR);
	assert_int_equal(file_int(path, "SELECT count(*) FROM reviews", 0),
			 total + 2);
	/* The failed insert rolled back the version bump too. */
	assert_int_equal(db_product_detail(db, 9, &d1), DB_OK);
	assert_int_equal(d1.product.version, d0.product.version + 2);
	db_close(db);
}

static void
test_product_delete(void **state)
{
	const char *path = tpath("delete.db");
	struct db_product_detail d;
	struct db *db;
	int64_t cat = -1, id, total, nrev;

	seed_at(path, SMALL, 0);
	id = file_int(path,
		      "SELECT product_id FROM reviews GROUP BY product_id "
		      "ORDER BY count(*) DESC LIMIT 1",
		      0);
	total = file_int(path, "SELECT count(*) FROM reviews", 0);
	nrev = file_int(path,
			"SELECT count(*) FROM reviews WHERE product_id = ?1",
			id);
	assert_true(nrev > 0);
	db = open_ok(path);
	assert_int_equal(db_product_delete(db, id, &cat), DB_OK);
	assert_int_equal(cat, 1);
	assert_int_equal(db_product_detail(db, id, &d), DB_NOTFOUND);
	assert_int_equal(file_int(path,
				  "SELECT count(*) FROM reviews WHERE "
				  "product_id = ?1",
				  id),
			 0);
	assert_int_equal(file_int(path, "SELECT count(*) FROM reviews", 0),
			 total - nrev);
	assert_int_equal(file_int(path, "SELECT count(*) FROM products", 0),
			 999);
	assert_int_equal(db_product_delete(db, id, &cat), DB_NOTFOUND);
	assert_int_equal(db_product_delete(db, 0, &cat), DB_NOTFOUND);
	/* Deleted products leave the category's list. */
	{
		struct db_category_top t;
		int i;

		assert_int_equal(db_category_top(db, 1, &t), DB_OK);
		for (i = 0; i < t.n; i++)
			assert_true(t.top[i].product_id != id);
	}
	db_close(db);
}

static void
test_world(void **state)
{
	const char *path = tpath("world.db");
	int32_t ids[3] = { 1, 5000, 10000 }, nums[3] = { 11, 22, 33 };
	int32_t bad_ids[2] = { 2, 10001 }, bad_nums[2] = { 44, 55 };
	int32_t v, v2;
	struct db *db;
	int i;

	seed_at(path, 1e-9, 0);
	db = open_ok(path);
	for (i = 1; i <= DB_WORLD_ROWS; i += 999) {
		assert_int_equal(db_world_get(db, i, &v), DB_OK);
		assert_true(v >= 1 && v <= 10000);
		assert_int_equal(v, file_int(path,
					     "SELECT randomNumber FROM world "
					     "WHERE id = ?1",
					     i));
	}
	assert_int_equal(db_world_get(db, 0, &v), DB_NOTFOUND);
	assert_int_equal(db_world_get(db, 10001, &v), DB_NOTFOUND);
	assert_int_equal(db_world_update(db, ids, nums, 3), DB_OK);
	for (i = 0; i < 3; i++) {
		assert_int_equal(db_world_get(db, ids[i], &v), DB_OK);
		assert_int_equal(v, nums[i]);
	}
	/* A missing id fails the whole batch: id 2 keeps its number. */
	assert_int_equal(db_world_get(db, 2, &v2), DB_OK);
	assert_int_equal(db_world_update(db, bad_ids, bad_nums, 2),
			 DB_NOTFOUND);
	assert_int_equal(db_world_get(db, 2, &v), DB_OK);
	assert_int_equal(v, v2);
	assert_int_equal(db_world_update(db, ids, nums, 0), DB_OK);
	db_close(db);
}

static void
test_counters(void **state)
{
	const char *path = tpath("counters.db");
	struct db_product_detail d;
	struct db_category_top t;
	struct db_product_change c = { .has_stock = 1, .stock = 1 };
	struct db *db;
	int32_t v;

	seed_at(path, 0.001, 0);
	db = open_ok(path);
	assert_int_equal(db_queries(db), 0);
	assert_int_equal(db_product_detail(db, 1, &d), DB_OK);
	assert_int_equal(db_queries(db), 3); /* row, summary, recent */
	assert_int_equal(db_category_top(db, 1, &t), DB_OK);
	assert_int_equal(db_queries(db), 5); /* category, top list */
	assert_int_equal(db_world_get(db, 1, &v), DB_OK);
	assert_int_equal(db_product_update(db, 1, &c, NULL), DB_OK);
	assert_int_equal(db_queries(db), 7);
	assert_true(db_time_ns(db) > 0);
	db_close(db);
	db_close(NULL);
}

/* ---- opening and migrations ---- */

static void
test_open_create(void **state)
{
	const char *path = tpath("fresh.db");
	struct db_counts n;
	struct db_product_detail d;
	char err[256] = "";
	struct db *db;

	/* Without DB_OPEN_CREATE a missing file is an error, not a new file. */
	assert_null(db_open(path, 0, 0, err, sizeof(err)));
	assert_true(strlen(err) > 0);
	assert_int_equal(access(path, F_OK), -1);
	assert_null(db_open(tpath("no/such/dir.db"), DB_OPEN_CREATE, 0, err,
			    sizeof(err)));

	db = db_open(path, DB_OPEN_CREATE, 0, err, sizeof(err));
	assert_non_null(db);
	assert_int_equal(db_counts(db, &n), DB_OK);
	assert_int_equal(n.categories + n.products + n.reviews + n.world, 0);
	assert_int_equal(db_product_detail(db, 1, &d), DB_NOTFOUND);
	assert_int_equal(file_int(path, "PRAGMA user_version", 0),
			 DB_SCHEMA_VERSION);
	assert_int_equal(file_int(path,
				  "SELECT journal_mode = 'wal' FROM "
				  "pragma_journal_mode",
				  0),
			 1);
	db_close(db);
	/* Reopening a current file changes nothing. */
	db = open_ok(path);
	db_close(db);

	/* Not a database. */
	{
		FILE *f = fopen(tpath("junk.db"), "w");

		assert_non_null(f);
		fputs("this is not an SQLite file, just some text padding it "
		      "out to more than a hundred bytes so the header check "
		      "really reads it ..................................\n",
		      f);
		fclose(f);
		assert_null(db_open(tpath("junk.db"), 0, 0, err, sizeof(err)));
		assert_true(strlen(err) > 0);
	}
}

static void
test_migrate_old_file(void **state)
{
	const char *path = tpath("old.db");
	struct db_product_detail d;
	struct db_category_top t;
	struct db_review r;
	char err[256] = "";
	struct db *db;
	sqlite3 *s;
	int64_t cat;

	/* A version-0 file from before reviews, stock and versions existed. */
	s = raw_open(path);
	raw_exec(s,
		 "CREATE TABLE categories(id INTEGER PRIMARY KEY, name TEXT);"
		 "CREATE TABLE products(id INTEGER PRIMARY KEY,"
		 " category_id INTEGER, name TEXT, price_cents INTEGER);"
		 "INSERT INTO categories VALUES (1, 'Old');"
		 "INSERT INTO products VALUES (1, 1, 'Old lamp', 1999),"
		 " (2, 1, 'Old chair', 4999);");
	assert_int_equal(raw_int(s, "PRAGMA user_version", 0), 0);
	sqlite3_close(s);

	db = db_open(path, 0, 0, err, sizeof(err));
	if (db == NULL)
		fail_msg("migrating: %s", err);
	assert_int_equal(file_int(path, "PRAGMA user_version", 0),
			 DB_SCHEMA_VERSION);
	assert_int_equal(
		file_int(path,
			 "SELECT count(*) FROM sqlite_schema "
			 "WHERE name IN ('reviews', 'world', 'reviews_product_created',"
			 " 'products_category')",
			 0),
		4);
	/* Old rows kept, new columns at their defaults, everything usable. */
	assert_int_equal(db_product_detail(db, 1, &d), DB_OK);
	assert_string_equal(d.product.name, "Old lamp");
	assert_int_equal(d.product.price_cents, 1999);
	assert_int_equal(d.product.version, 1);
	assert_int_equal(d.product.stock, 0);
	assert_string_equal(d.product.description, "");
	assert_int_equal(d.summary.count, 0);
	assert_int_equal(db_review_add(db, 2, 4, "fine", &r, &cat), DB_OK);
	assert_int_equal(cat, 1);
	assert_int_equal(db_category_top(db, 1, &t), DB_OK);
	assert_int_equal(t.n, 2);
	assert_int_equal(t.top[0].product_id, 2);
	assert_int_equal(t.top[1].product_id, 1);
	db_close(db);

	/* A file from a newer program is refused, not downgraded. */
	s = raw_open(tpath("newer.db"));
	raw_exec(s, "CREATE TABLE x(a); PRAGMA user_version = 99;");
	sqlite3_close(s);
	assert_null(db_open(tpath("newer.db"), 0, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "newer"));
	assert_int_equal(file_int(tpath("newer.db"), "PRAGMA user_version", 0),
			 99);
}

/* Several processes open (and so create and migrate) one new file at once. */
static void
test_concurrent_create(void **state)
{
	const char *path = tpath("race.db");
	int go[2], i, status, nproc = 4;
	pid_t pids[4];
	char c;

	assert_int_equal(pipe(go), 0);
	for (i = 0; i < nproc; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			char err[256];
			struct db *db;
			struct db_counts n;

			close(go[1]);
			if (read(go[0], &c, 1) != 0)
				_exit(3);
			db = db_open(path, DB_OPEN_CREATE, 0, err, sizeof(err));
			if (db == NULL) {
				fprintf(stderr, "child: %s\n", err);
				_exit(1);
			}
			if (db_counts(db, &n) != DB_OK)
				_exit(2);
			db_close(db);
			_exit(0);
		}
	}
	close(go[0]);
	close(go[1]); /* EOF releases every child at once */
	for (i = 0; i < nproc; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(file_int(path, "PRAGMA user_version", 0),
			 DB_SCHEMA_VERSION);
}

/* ---- concurrency ---- */

#define WRITER_OPS 150

/* One writer: updates and reviews on product 1; returns failures seen. */
static int
writer_run(const char *path, int which)
{
	struct db_product_change c = { .has_stock = 1 };
	struct db_product p;
	struct db_review r;
	char err[256];
	struct db *db;
	int64_t cat, last = 0;
	int i, rc, bad = 0;

	db = db_open(path, 0, 0, err, sizeof(err));
	if (db == NULL) {
		fprintf(stderr, "writer %d: %s\n", which, err);
		return 1;
	}
	for (i = 0; i < WRITER_OPS; i++) {
		if (i % 3 == 2) {
			rc = db_review_add(db, 1, 1 + i % 5, "concurrent", &r,
					   &cat);
		} else {
			c.stock = which * 1000 + i;
			rc = db_product_update(db, 1, &c, &p);
			/* Versions seen by one writer only go up. */
			if (rc == DB_OK && p.version <= last)
				bad++;
			if (rc == DB_OK)
				last = p.version;
		}
		if (rc != DB_OK) {
			fprintf(stderr, "writer %d op %d: %d %s\n", which, i,
				rc, db_errmsg(db));
			bad++;
		}
	}
	db_close(db);
	return bad;
}

struct writer_arg {
	const char *path;
	int which, bad;
};

static void *
writer_thread(void *p)
{
	struct writer_arg *a = p;

	a->bad = writer_run(a->path, a->which);
	return NULL;
}

static void
test_concurrent_threads(void **state)
{
	const char *path = tpath("threads.db");
	struct writer_arg a[2] = { { path, 1, 0 }, { path, 2, 0 } };
	pthread_t th[2];
	int64_t before;
	int i;

	seed_at(path, 0.001, 0);
	before = file_int(path,
			  "SELECT count(*) FROM reviews WHERE product_id = 1",
			  0);
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, writer_thread,
						&a[i]),
				 0);
	for (i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(a[i].bad, 0);
	}
	/* No lost update: every acknowledged write bumped the version once. */
	assert_int_equal(file_int(path,
				  "SELECT version FROM products WHERE id = 1",
				  0),
			 1 + 2 * WRITER_OPS);
	assert_int_equal(file_int(path,
				  "SELECT count(*) FROM reviews WHERE "
				  "product_id = 1",
				  0),
			 before + 2 * (WRITER_OPS / 3));
}

static void
test_concurrent_processes(void **state)
{
	const char *path = tpath("procs.db");
	int go[2], i, status, nproc = 3;
	pid_t pids[3];
	int64_t before;
	char c;

	seed_at(path, 0.001, 0);
	before = file_int(path,
			  "SELECT count(*) FROM reviews WHERE product_id = 1",
			  0);
	assert_int_equal(pipe(go), 0);
	for (i = 0; i < nproc; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(go[1]);
			if (read(go[0], &c, 1) != 0)
				_exit(3);
			_exit(writer_run(path, i + 1) ? 1 : 0);
		}
	}
	close(go[0]);
	close(go[1]);
	for (i = 0; i < nproc; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(file_int(path,
				  "SELECT version FROM products WHERE id = 1",
				  0),
			 1 + nproc * WRITER_OPS);
	assert_int_equal(file_int(path,
				  "SELECT count(*) FROM reviews WHERE "
				  "product_id = 1",
				  0),
			 before + nproc * (WRITER_OPS / 3));
}

/* A writer held up past its busy timeout gets DB_BUSY, promptly; reads go on. */
static void
test_busy(void **state)
{
	const char *path = tpath("busy.db");
	struct db_product_change c = { .has_stock = 1, .stock = 7 };
	struct db_product_detail d;
	struct db_category_top t;
	struct db_product p;
	struct db_review r;
	int32_t ids[1] = { 1 }, nums[1] = { 5 }, v;
	struct db *db;
	int64_t cat;
	uint64_t t0, ms;
	char err[256];
	sqlite3 *holder;

	seed_at(path, 0.001, 0);
	db = db_open(path, 0, 100, err, sizeof(err));
	assert_non_null(db);
	holder = raw_open(path);
	raw_exec(holder, "BEGIN IMMEDIATE;"
			 "UPDATE products SET stock = 99 WHERE id = 2");

	t0 = hs_now_ns();
	assert_int_equal(db_product_update(db, 1, &c, &p), DB_BUSY);
	ms = (hs_now_ns() - t0) / 1000000;
	assert_true(ms >= 90);
	assert_true(ms < 3000);
	assert_true(strlen(db_errmsg(db)) > 0);
	assert_int_equal(db_review_add(db, 1, 3, "x", &r, &cat), DB_BUSY);
	assert_int_equal(db_product_delete(db, 1, &cat), DB_BUSY);
	assert_int_equal(db_world_update(db, ids, nums, 1), DB_BUSY);
	/* WAL: readers are not blocked by the writer, and see the old data. */
	assert_int_equal(db_product_detail(db, 2, &d), DB_OK);
	assert_int_equal(d.product.version, 1);
	assert_int_equal(db_category_top(db, 1, &t), DB_OK);
	assert_int_equal(db_world_get(db, 1, &v), DB_OK);

	raw_exec(holder, "COMMIT");
	sqlite3_close(holder);
	/* Nothing half-done was left behind, and writing works again. */
	assert_int_equal(db_product_detail(db, 1, &d), DB_OK);
	assert_int_equal(d.product.version, 1);
	assert_int_equal(db_product_update(db, 1, &c, &p), DB_OK);
	assert_int_equal(p.version, 2);
	assert_int_equal(p.stock, 7);
	db_close(db);
}

/* ---- seed files ---- */

static int
count_leftovers(void)
{
	DIR *d = opendir(g_dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strstr(e->d_name, ".seed-") != NULL)
			n++;
	closedir(d);
	return n;
}

struct progress_log {
	int calls, bad;
	double last;
};

static void
on_progress(void *arg, const char *phase, double frac)
{
	struct progress_log *l = arg;

	l->calls++;
	if (phase == NULL || frac < 0 || frac > 1)
		l->bad++;
	l->last = frac;
}

static void
test_seed_file(void **state)
{
	const char *path = tpath("seedfile.db");
	struct progress_log log = { 0 };
	struct db_seed_opts o = { .scale = 0.001,
				  .progress = on_progress,
				  .arg = &log };
	char err[256] = "";
	struct stat sb;

	assert_int_equal(db_seed_file(path, &o, err, sizeof(err)), DB_OK);
	assert_true(log.calls >= 5);
	assert_int_equal(log.bad, 0);
	assert_true(log.last == 1.0);
	assert_int_equal(stat(path, &sb), 0);
	assert_true((sb.st_mode & 0044) != 0); /* not left at mkstemp's 0600 */

	/* An existing file is refused and left alone. */
	err[0] = '\0';
	o.scale = 0.002;
	assert_int_equal(db_seed_file(path, &o, err, sizeof(err)), DB_ERR);
	assert_non_null(strstr(err, "exists"));
	assert_int_equal(file_int(path, "SELECT count(*) FROM products", 0),
			 100);

	/* ...unless replacing, which also drops the old file's WAL. */
	assert_int_equal(db_seed_file_replace(path, &o, err, sizeof(err)),
			 DB_OK);
	assert_int_equal(file_int(path, "SELECT count(*) FROM products", 0),
			 200);

	/* Bad scale; a directory that does not exist. */
	o.scale = -1;
	assert_int_equal(db_seed_file(tpath("neg.db"), &o, err, sizeof(err)),
			 DB_ERR);
	o.scale = 0.001;
	assert_int_equal(db_seed_file(tpath("nodir/x.db"), &o, err,
				      sizeof(err)),
			 DB_ERR);
	assert_true(strlen(err) > 0);
	assert_int_equal(count_leftovers(), 0);
}

static void
copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	char buf[8192];
	size_t n;

	assert_non_null(in);
	assert_non_null(out);
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	fclose(out);
}

/*
 * A -wal file left beside the path by an older database must not be
 * replayed into the new one, whether replacing or creating.
 */
static void
test_seed_stale_wal(void **state)
{
	const char *path = tpath("stale.db"), *wal = tpath("stale.db-wal");
	const char *saved = tpath("stale.saved-wal");
	struct db_seed_opts o = { .scale = 0.002 };
	char err[256] = "";
	struct stat sb;
	sqlite3 *s;

	seed_at(path, 0.001, 0);
	s = raw_open(path);
	raw_exec(s, "PRAGMA wal_autocheckpoint = 0;"
		    "UPDATE products SET name = 'STALE' WHERE id <= 100");
	assert_int_equal(stat(wal, &sb), 0);
	assert_true(sb.st_size > 0);
	copy_file(wal, saved);
	sqlite3_close(s);

	copy_file(saved, wal);
	assert_int_equal(db_seed_file_replace(path, &o, err, sizeof(err)),
			 DB_OK);
	assert_int_equal(file_int(path,
				  "SELECT count(*) FROM products WHERE "
				  "name = 'STALE'",
				  0),
			 0);
	assert_int_equal(file_int(path, "SELECT count(*) FROM products", 0),
			 200);

	assert_int_equal(unlink(path), 0);
	copy_file(saved, wal);
	assert_int_equal(db_seed_file(path, &o, err, sizeof(err)), DB_OK);
	assert_int_equal(file_int(path,
				  "SELECT count(*) FROM products WHERE "
				  "name = 'STALE'",
				  0),
			 0);
	assert_int_equal(file_int(path, "SELECT count(*) FROM products", 0),
			 200);
	s = raw_open(path);
	assert_int_equal(raw_int(s,
				 "SELECT 'ok' = integrity_check FROM "
				 "pragma_integrity_check",
				 0),
			 1);
	sqlite3_close(s);
}

/* Two processes seeding one path at once both end with a good file. */
static void
test_seed_race(void **state)
{
	const char *path = tpath("seedrace.db");
	int go[2], i, status;
	pid_t pids[2];
	char c;

	assert_int_equal(pipe(go), 0);
	for (i = 0; i < 2; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			struct db_seed_opts o = { .scale = 0.005 };
			char err[256];

			close(go[1]);
			if (read(go[0], &c, 1) != 0)
				_exit(3);
			if (db_seed_file(path, &o, err, sizeof(err)) != DB_OK) {
				/* Lost before starting: the file already existed. */
				_exit(strstr(err, "exists") ? 4 : 1);
			}
			_exit(0);
		}
	}
	close(go[0]);
	close(go[1]);
	for (i = 0; i < 2; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_true(WEXITSTATUS(status) == 0 ||
			    WEXITSTATUS(status) == 4);
	}
	assert_int_equal(file_int(path, "SELECT count(*) FROM reviews", 0),
			 5000);
	assert_int_equal(file_int(path, "PRAGMA user_version", 0),
			 DB_SCHEMA_VERSION);
	assert_int_equal(count_leftovers(), 0);
}

/* ---- the file deleted or replaced under open connections ---- */

static void
unlink_side_files(const char *path)
{
	char side[600];

	snprintf(side, sizeof(side), "%s-wal", path);
	unlink(side);
	snprintf(side, sizeof(side), "%s-shm", path);
	unlink(side);
}

/* A restore: a complete database renamed over path, as hs-seed does. */
static void
replace_by_rename(const char *path, uint64_t seed)
{
	char tmp[600];

	snprintf(tmp, sizeof(tmp), "%s.new", path);
	seed_at(tmp, SMALL, seed);
	unlink_side_files(path);
	assert_int_equal(rename(tmp, path), 0);
}

static int64_t
stock_at(const char *path, int64_t id)
{
	return file_int(path, "SELECT stock FROM products WHERE id = ?1", id);
}

/*
 * Two connections (two server threads) on a file that is then replaced:
 * every write on the old file is refused with DB_MOVED and leaves the new
 * file alone; reads notice within a second; a reopened connection writes
 * into the new file; and closing the last connection on the old file does
 * not unlink the new file's -wal (which would lose the commit made through
 * the reopened one).
 * (SQLite skips the checkpoint-and-unlink on close when the database has
 * moved; this holds it to that.)
 */
static void
test_moved_replaced(void **state)
{
	const char *path = tpath("moved.db");
	struct db_product_change c = { .has_stock = 1, .stock = 111 };
	struct db_product p;
	struct db_product_detail d;
	struct db_review r;
	struct timespec ts = { 1, 100 * 1000 * 1000 };
	int32_t ids[1] = { 1 }, nums[1] = { 5 }, n;
	int64_t cat;
	struct db *a, *b;

	seed_at(path, SMALL, 0);
	a = open_ok(path);
	b = open_ok(path);
	assert_int_equal(db_check(a), DB_OK);
	assert_int_equal(db_product_update(a, 1, &c, &p), DB_OK);
	assert_int_equal(db_product_detail(b, 1, &d), DB_OK);
	assert_int_equal(d.product.stock, 111);

	replace_by_rename(path, 7);
	assert_int_equal(db_check(a), DB_MOVED);
	assert_non_null(strstr(db_errmsg(a), "replaced"));
	c.stock = 222;
	assert_int_equal(db_product_update(a, 1, &c, &p), DB_MOVED);
	assert_int_equal(db_review_add(a, 1, 5, "x", &r, &cat), DB_MOVED);
	assert_int_equal(db_product_delete(a, 2, &cat), DB_MOVED);
	assert_int_equal(db_world_update(a, ids, nums, 1), DB_MOVED);
	assert_int_equal(db_product_update(b, 1, &c, &p), DB_MOVED);
	/* Reads notice within a second. */
	nanosleep(&ts, NULL);
	assert_int_equal(db_product_detail(b, 1, &d), DB_MOVED);
	assert_int_equal(db_world_get(a, 1, &n), DB_MOVED);
	/* The new file took none of it. */
	assert_int_equal(file_int(path, "SELECT max(version) FROM products", 0),
			 1);
	assert_int_equal(file_int(path, "SELECT count(*) FROM products", 0),
			 1000);

	/* One thread reopens and writes while the other still holds the old file. */
	db_close(a);
	a = open_ok(path);
	c.stock = 333;
	assert_int_equal(db_product_update(a, 1, &c, &p), DB_OK);
	assert_int_equal(p.version, 2);
	db_close(b);
	assert_int_equal(stock_at(path, 1), 333);
	db_close(a);
	assert_int_equal(stock_at(path, 1), 333);
	assert_int_equal(file_int(path,
				  "SELECT version FROM products "
				  "WHERE id = 1",
				  0),
			 2);
}

/*
 * The file removed: writes are refused, the path does not open again
 * (no empty database is created in its place) until a file is put back,
 * and then writes land in it.
 */
static void
test_moved_unlinked(void **state)
{
	const char *path = tpath("unlinked.db");
	struct db_product_change c = { .has_stock = 1, .stock = 444 };
	struct db_product p;
	char err[256] = "";
	struct db *a;

	seed_at(path, SMALL, 0);
	a = open_ok(path);
	assert_int_equal(db_product_update(a, 1, &c, &p), DB_OK);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(db_check(a), DB_MOVED);
	assert_int_equal(db_product_update(a, 1, &c, &p), DB_MOVED);
	db_close(a);
	assert_null(db_open(path, 0, 0, err, sizeof(err)));
	assert_int_equal(access(path, F_OK), -1);

	seed_at(path, SMALL, 7);
	a = open_ok(path);
	c.stock = 555;
	assert_int_equal(db_product_update(a, 1, &c, &p), DB_OK);
	assert_int_equal(stock_at(path, 1), 555);
	db_close(a);
	assert_int_equal(stock_at(path, 1), 555);
}

/* hs-seed --force (db_seed_file_replace) under an open connection. */
static void
test_moved_seed_replace(void **state)
{
	const char *path = tpath("reseeded.db");
	struct db_seed_opts o = { .scale = SMALL, .seed = 7 };
	struct db_product_change c = { .has_stock = 1, .stock = 666 };
	struct db_product p;
	char err[256] = "";
	struct db *a, *b;

	seed_at(path, SMALL, 0);
	a = open_ok(path);
	assert_int_equal(db_product_update(a, 1, &c, &p), DB_OK);
	assert_int_equal(db_seed_file_replace(path, &o, err, sizeof(err)),
			 DB_OK);
	c.stock = 777;
	assert_int_equal(db_product_update(a, 1, &c, &p), DB_MOVED);
	b = open_ok(path);
	assert_int_equal(db_product_update(b, 1, &c, &p), DB_OK);
	db_close(a);
	assert_int_equal(stock_at(path, 1), 777);
	db_close(b);
	assert_int_equal(stock_at(path, 1), 777);
}

/* synchronous as asked for: NORMAL by default, FULL with DB_OPEN_SYNC_FULL. */
static void
test_durability(void **state)
{
	const char *path = tpath("sync.db");
	char err[256] = "";
	struct db *db;

	seed_at(path, SMALL, 0);
	db = open_ok(path);
	assert_int_equal(db_synchronous(db), 1);
	db_close(db);
	db = db_open(path, DB_OPEN_SYNC_FULL, 0, err, sizeof(err));
	assert_non_null(db);
	assert_int_equal(db_synchronous(db), 2);
	db_close(db);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seed_counts),
		cmocka_unit_test(test_seed_deterministic),
		cmocka_unit_test(test_seed_shape),
		cmocka_unit_test(test_seed_file),
		cmocka_unit_test(test_seed_race),
		cmocka_unit_test(test_seed_stale_wal),
		cmocka_unit_test(test_product_detail),
		cmocka_unit_test(test_category_top),
		cmocka_unit_test(test_category_top_order),
		cmocka_unit_test(test_product_update),
		cmocka_unit_test(test_review_add),
		cmocka_unit_test(test_product_delete),
		cmocka_unit_test(test_world),
		cmocka_unit_test(test_counters),
		cmocka_unit_test(test_open_create),
		cmocka_unit_test(test_migrate_old_file),
		cmocka_unit_test(test_concurrent_create),
		cmocka_unit_test(test_concurrent_threads),
		cmocka_unit_test(test_concurrent_processes),
		cmocka_unit_test(test_busy),
		cmocka_unit_test(test_moved_replaced),
		cmocka_unit_test(test_moved_unlinked),
		cmocka_unit_test(test_moved_seed_replace),
		cmocka_unit_test(test_durability),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
