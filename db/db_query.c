/*
 * The queries the server runs: product detail, category top list, the
 * writes (update, review, delete) and the TechEmpower world table.  Reads
 * that take several statements run in one read transaction so that their
 * parts agree (a product's version matches its review summary); every
 * write runs under BEGIN IMMEDIATE so that it queues for the write lock
 * up front instead of failing on a lock upgrade.
 */
#include <stdio.h>
#include <string.h>

#include "db_internal.h"
#include "hs_util.h"

#define DB_PRODUCT_COLS                                                     \
	"id, category_id, name, description, price_cents, stock, version, " \
	"updated_at"

const char *const db_stmt_sql[ST_COUNT_] = {
	[ST_BEGIN] = "BEGIN",
	[ST_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_PRODUCT_GET] =
		"SELECT " DB_PRODUCT_COLS " FROM products WHERE id = ?1",
	[ST_REVIEW_SUMMARY] =
		"SELECT count(*), avg(rating), sum(rating = 1), sum(rating = 2),"
		" sum(rating = 3), sum(rating = 4), sum(rating = 5)"
		" FROM reviews WHERE product_id = ?1",
	[ST_REVIEW_RECENT] = "SELECT id, rating, body, created_at FROM reviews"
			     " WHERE product_id = ?1"
			     " ORDER BY created_at DESC, id DESC LIMIT ?2",
	[ST_CATEGORY_GET] = "SELECT name FROM categories WHERE id = ?1",
	/*
	 * The aggregate runs on indexes only (products_category holds the
	 * rowid, reviews_product_created the rating); names and prices are
	 * looked up for the DB_TOP_N winners alone.  Products without
	 * reviews have n = 0 and a NULL average: the first key puts them
	 * last explicitly rather than relying on where NULLs sort.
	 */
	[ST_CATEGORY_TOP] =
		"WITH t AS ("
		" SELECT p.id AS id, count(r.rating) AS n, avg(r.rating) AS a"
		" FROM products AS p"
		" LEFT JOIN reviews AS r ON r.product_id = p.id"
		" WHERE p.category_id = ?1"
		" GROUP BY p.id"
		" ORDER BY n = 0, a DESC, n DESC, p.id LIMIT ?2)"
		" SELECT t.id, p.name, p.price_cents, t.n, t.a"
		" FROM t JOIN products AS p ON p.id = t.id"
		" ORDER BY t.n = 0, t.a DESC, t.n DESC, t.id",
	[ST_PRODUCT_UPDATE] =
		"UPDATE products SET"
		" name = CASE WHEN ?1 THEN ?2 ELSE name END,"
		" price_cents = CASE WHEN ?3 THEN ?4 ELSE price_cents END,"
		" stock = CASE WHEN ?5 THEN ?6 ELSE stock END,"
		" version = version + 1, updated_at = ?7"
		" WHERE id = ?8 RETURNING " DB_PRODUCT_COLS,
	[ST_PRODUCT_BUMP] =
		"UPDATE products SET version = version + 1, updated_at = ?1"
		" WHERE id = ?2 RETURNING category_id",
	[ST_REVIEW_INSERT] =
		"INSERT INTO reviews(product_id, rating, body, created_at)"
		" VALUES (?1, ?2, ?3, ?4)",
	[ST_PRODUCT_DELETE] =
		"DELETE FROM products WHERE id = ?1 RETURNING category_id",
	[ST_REVIEW_DELETE] = "DELETE FROM reviews WHERE product_id = ?1",
	[ST_WORLD_GET] = "SELECT randomNumber FROM world WHERE id = ?1",
	[ST_WORLD_SET] = "UPDATE world SET randomNumber = ?1 WHERE id = ?2",
	[ST_COUNTS] = "SELECT (SELECT count(*) FROM categories),"
		      " (SELECT count(*) FROM products),"
		      " (SELECT count(*) FROM reviews),"
		      " (SELECT count(*) FROM world)",
};

/* Runs a statement that returns no rows (transaction control, plain DML). */
static int
db_run(struct db *db, enum db_stmt_id id, const char *what)
{
	sqlite3_stmt *st = db_stmt(db, id);
	int rc;

	if (st == NULL)
		return DB_ERR;
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return db_fail(db, rc, what);
	return DB_OK;
}

static int
db_begin(struct db *db, int immediate)
{
	int res;

	/* Never nest: a transaction left open by a bug would swallow this one. */
	if (!sqlite3_get_autocommit(db->conn))
		db_run(db, ST_ROLLBACK, "rollback");
	db->writing = immediate;
	/* A write checks under the lock, in db_end; a read now and then. */
	if (!immediate && (res = db_check_due(db)) != DB_OK)
		return res;
	return db_run(db, immediate ? ST_BEGIN_IMMEDIATE : ST_BEGIN,
		      immediate ? "begin immediate" : "begin");
}

/*
 * Ends the transaction: commits when res is DB_OK, rolls back otherwise
 * (keeping the first error's message).  Returns the final result.
 *
 * A write commits only if the file at the path is still the one open:
 * otherwise the commit would land in a deleted inode, be acknowledged and
 * vanish (DB_MOVED instead).  The check runs under the write lock, just
 * before COMMIT: a replacement made by a process holding that lock
 * (hs-seed --force) is always seen; one made without it (a plain mv)
 * can only slip into the few microseconds between the check and the
 * commit.
 */
static int
db_end(struct db *db, int res)
{
	char keep[sizeof(db->errmsg)];

	if (res == DB_OK && db->writing)
		res = db_check(db);
	if (res == DB_OK) {
		res = db_run(db, ST_COMMIT, "commit");
		if (res == DB_OK)
			return DB_OK;
	}
	if (!sqlite3_get_autocommit(db->conn)) {
		memcpy(keep, db->errmsg, sizeof(keep));
		db_run(db, ST_ROLLBACK, "rollback");
		memcpy(db->errmsg, keep, sizeof(keep));
	}
	return res;
}

static void
db_read_product(sqlite3_stmt *st, struct db_product *p)
{
	p->id = sqlite3_column_int64(st, 0);
	p->category_id = sqlite3_column_int64(st, 1);
	db_col_text(st, 2, p->name, sizeof(p->name));
	db_col_text(st, 3, p->description, sizeof(p->description));
	p->price_cents = sqlite3_column_int64(st, 4);
	p->stock = sqlite3_column_int64(st, 5);
	p->version = sqlite3_column_int64(st, 6);
	p->updated_at = sqlite3_column_int64(st, 7);
}

static int
db_get_product(struct db *db, int64_t id, struct db_product *p)
{
	sqlite3_stmt *st = db_stmt(db, ST_PRODUCT_GET);
	int rc, res = DB_OK;

	if (st == NULL)
		return DB_ERR;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		db_read_product(st, p);
	else if (rc == SQLITE_DONE)
		res = DB_NOTFOUND;
	else
		res = db_fail(db, rc, "product");
	sqlite3_reset(st);
	return res;
}

static int
db_get_summary(struct db *db, int64_t id, struct db_review_summary *s)
{
	sqlite3_stmt *st = db_stmt(db, ST_REVIEW_SUMMARY);
	int rc, i, res = DB_OK;

	if (st == NULL)
		return DB_ERR;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		s->count = sqlite3_column_int64(st, 0);
		s->average = s->count ? sqlite3_column_double(st, 1) : 0.0;
		for (i = 0; i < 5; i++)
			s->histogram[i] = sqlite3_column_int64(st, 2 + i);
	} else {
		res = db_fail(db, rc, "review summary");
	}
	sqlite3_reset(st);
	return res;
}

static int
db_get_recent(struct db *db, int64_t id, struct db_product_detail *out)
{
	sqlite3_stmt *st = db_stmt(db, ST_REVIEW_RECENT);
	struct db_review *r;
	int rc, res = DB_OK;

	if (st == NULL)
		return DB_ERR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int(st, 2, DB_RECENT_N);
	out->nrecent = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW &&
	       out->nrecent < DB_RECENT_N) {
		r = &out->recent[out->nrecent++];
		r->id = sqlite3_column_int64(st, 0);
		r->product_id = id;
		r->rating = sqlite3_column_int(st, 1);
		db_col_text(st, 2, r->body, sizeof(r->body));
		r->created_at = sqlite3_column_int64(st, 3);
	}
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		res = db_fail(db, rc, "recent reviews");
	sqlite3_reset(st);
	return res;
}

int
db_product_detail(struct db *db, int64_t id, struct db_product_detail *out)
{
	uint64_t t0 = hs_now_ns();
	int res, fin;

	if (db->ops)
		return db->ops->product_detail(db, id, out);
	memset(out, 0, sizeof(*out));
	if ((res = db_begin(db, 0)) != DB_OK)
		goto done;
	res = db_get_product(db, id, &out->product);
	if (res == DB_OK)
		res = db_get_summary(db, id, &out->summary);
	if (res == DB_OK)
		res = db_get_recent(db, id, out);
	/* A read-only transaction: a miss commits as well as a hit. */
	if ((fin = db_end(db, res == DB_NOTFOUND ? DB_OK : res)) != DB_OK)
		res = fin;
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

static int
db_get_top(struct db *db, int64_t category_id, struct db_category_top *out)
{
	sqlite3_stmt *st = db_stmt(db, ST_CATEGORY_TOP);
	struct db_top_entry *e;
	int rc, res = DB_OK;

	if (st == NULL)
		return DB_ERR;
	sqlite3_bind_int64(st, 1, category_id);
	sqlite3_bind_int(st, 2, DB_TOP_N);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && out->n < DB_TOP_N) {
		e = &out->top[out->n++];
		e->product_id = sqlite3_column_int64(st, 0);
		db_col_text(st, 1, e->name, sizeof(e->name));
		e->price_cents = sqlite3_column_int64(st, 2);
		e->review_count = sqlite3_column_int64(st, 3);
		e->average =
			e->review_count ? sqlite3_column_double(st, 4) : 0.0;
	}
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		res = db_fail(db, rc, "category top");
	sqlite3_reset(st);
	return res;
}

int
db_category_top(struct db *db, int64_t category_id, struct db_category_top *out)
{
	uint64_t t0 = hs_now_ns();
	sqlite3_stmt *st;
	int rc, res, fin;

	if (db->ops)
		return db->ops->category_top(db, category_id, out);
	memset(out, 0, sizeof(*out));
	out->category_id = category_id;
	if ((res = db_begin(db, 0)) != DB_OK)
		goto done;
	if ((st = db_stmt(db, ST_CATEGORY_GET)) == NULL) {
		res = DB_ERR;
		goto end;
	}
	sqlite3_bind_int64(st, 1, category_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		db_col_text(st, 0, out->name, sizeof(out->name));
	else if (rc == SQLITE_DONE)
		res = DB_NOTFOUND;
	else
		res = db_fail(db, rc, "category");
	sqlite3_reset(st);
	if (res == DB_OK)
		res = db_get_top(db, category_id, out);
end:
	if ((fin = db_end(db, res == DB_NOTFOUND ? DB_OK : res)) != DB_OK)
		res = fin;
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

int
db_product_update(struct db *db, int64_t id, const struct db_product_change *c,
		  struct db_product *after)
{
	uint64_t t0 = hs_now_ns();
	sqlite3_stmt *st;
	int rc, res, found = 0;

	if (db->ops)
		return db->ops->product_update(db, id, c, after);
	if (after)
		memset(after, 0, sizeof(*after));
	if ((res = db_begin(db, 1)) != DB_OK)
		goto done;
	if ((st = db_stmt(db, ST_PRODUCT_UPDATE)) == NULL) {
		res = db_end(db, DB_ERR);
		goto done;
	}
	sqlite3_bind_int(st, 1, c->has_name != 0);
	if (c->has_name)
		sqlite3_bind_text(st, 2, c->name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 3, c->has_price != 0);
	sqlite3_bind_int64(st, 4, c->price_cents);
	sqlite3_bind_int(st, 5, c->has_stock != 0);
	sqlite3_bind_int64(st, 6, c->stock);
	sqlite3_bind_int64(st, 7, db_now_ms());
	sqlite3_bind_int64(st, 8, id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (after)
			db_read_product(st, after);
		found = 1;
	}
	if (rc != SQLITE_DONE)
		res = db_fail(db, rc, "update product");
	else if (!found)
		res = DB_NOTFOUND;
	sqlite3_reset(st);
	/* Nothing changed on a miss: rolling back just releases the lock. */
	res = db_end(db, res);
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

/*
 * Steps a write that returns the category_id of the product it touched
 * (RETURNING): DB_OK with *cat set, DB_NOTFOUND when no row matched.
 */
static int
db_step_category(struct db *db, sqlite3_stmt *st, const char *what,
		 int64_t *cat)
{
	int rc, found = 0, res = DB_OK;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		*cat = sqlite3_column_int64(st, 0);
		found = 1;
	}
	if (rc != SQLITE_DONE)
		res = db_fail(db, rc, what);
	else if (!found)
		res = DB_NOTFOUND;
	sqlite3_reset(st);
	return res;
}

int
db_review_add(struct db *db, int64_t product_id, int rating, const char *body,
	      struct db_review *out, int64_t *category_id)
{
	uint64_t t0 = hs_now_ns();
	int64_t now = db_now_ms(), cat = 0;
	sqlite3_stmt *st;
	int rc, res;

	if (db->ops)
		return db->ops->review_add(db, product_id, rating, body, out,
					   category_id);
	if (body == NULL)
		body = "";
	if ((res = db_begin(db, 1)) != DB_OK)
		goto done;
	if ((st = db_stmt(db, ST_PRODUCT_BUMP)) == NULL) {
		res = db_end(db, DB_ERR);
		goto done;
	}
	sqlite3_bind_int64(st, 1, now);
	sqlite3_bind_int64(st, 2, product_id);
	res = db_step_category(db, st, "bump product", &cat);
	if (res != DB_OK)
		goto end;
	if ((st = db_stmt(db, ST_REVIEW_INSERT)) == NULL) {
		res = DB_ERR;
		goto end;
	}
	sqlite3_bind_int64(st, 1, product_id);
	sqlite3_bind_int(st, 2, rating);
	sqlite3_bind_text(st, 3, body, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 4, now);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		res = db_fail(db, rc, "insert review");
		goto end;
	}
	if (out) {
		memset(out, 0, sizeof(*out));
		out->id = sqlite3_last_insert_rowid(db->conn);
		out->product_id = product_id;
		out->rating = rating;
		snprintf(out->body, sizeof(out->body), "%s", body);
		out->created_at = now;
	}
	if (category_id)
		*category_id = cat;
end:
	res = db_end(db, res);
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

int
db_product_delete(struct db *db, int64_t id, int64_t *category_id)
{
	uint64_t t0 = hs_now_ns();
	int64_t cat = 0;
	sqlite3_stmt *st;
	int rc, res;

	if (db->ops)
		return db->ops->product_delete(db, id, category_id);
	if ((res = db_begin(db, 1)) != DB_OK)
		goto done;
	if ((st = db_stmt(db, ST_PRODUCT_DELETE)) == NULL) {
		res = db_end(db, DB_ERR);
		goto done;
	}
	sqlite3_bind_int64(st, 1, id);
	res = db_step_category(db, st, "delete product", &cat);
	if (res != DB_OK)
		goto end;
	if ((st = db_stmt(db, ST_REVIEW_DELETE)) == NULL) {
		res = DB_ERR;
		goto end;
	}
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		res = db_fail(db, rc, "delete reviews");
	else if (category_id)
		*category_id = cat;
end:
	res = db_end(db, res);
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

int
db_world_get(struct db *db, int32_t id, int32_t *random_number)
{
	uint64_t t0 = hs_now_ns();
	sqlite3_stmt *st;
	int rc, res = DB_OK;

	if (db->ops)
		return db->ops->world_get(db, id, random_number);
	st = db_stmt(db, ST_WORLD_GET);

	if (st == NULL) {
		res = DB_ERR;
		goto done;
	}
	if ((res = db_check_due(db)) != DB_OK)
		goto done;
	sqlite3_bind_int(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*random_number = sqlite3_column_int(st, 0);
	else if (rc == SQLITE_DONE)
		res = DB_NOTFOUND;
	else
		res = db_fail(db, rc, "world");
	sqlite3_reset(st);
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

int
db_world_update(struct db *db, const int32_t *ids, const int32_t *numbers,
		int n)
{
	uint64_t t0 = hs_now_ns();
	sqlite3_stmt *st;
	int i, rc, res;

	if (db->ops)
		return db->ops->world_update(db, ids, numbers, n);
	if ((res = db_begin(db, 1)) != DB_OK)
		goto done;
	for (i = 0; i < n && res == DB_OK; i++) {
		if ((st = db_stmt(db, ST_WORLD_SET)) == NULL) {
			res = DB_ERR;
			break;
		}
		sqlite3_bind_int(st, 1, numbers[i]);
		sqlite3_bind_int(st, 2, ids[i]);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			res = db_fail(db, rc, "update world");
		else if (sqlite3_changes(db->conn) == 0)
			res = DB_NOTFOUND;
	}
	res = db_end(db, res);
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

int
db_repl_status(struct db *db, struct db_repl *out)
{
	memset(out, 0, sizeof(*out));
	out->replay_age_ms = -1;
	if (db->ops && db->ops->repl_status)
		return db->ops->repl_status(db, out);
	return db_failf(db, "SQLite has no replicas");
}

int
db_counts(struct db *db, struct db_counts *out)
{
	uint64_t t0 = hs_now_ns();
	sqlite3_stmt *st;
	int rc, res = DB_OK;

	if (db->ops)
		return db->ops->counts(db, out);
	st = db_stmt(db, ST_COUNTS);

	memset(out, 0, sizeof(*out));
	if (st == NULL) {
		res = DB_ERR;
		goto done;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		out->categories = sqlite3_column_int64(st, 0);
		out->products = sqlite3_column_int64(st, 1);
		out->reviews = sqlite3_column_int64(st, 2);
		out->world = sqlite3_column_int64(st, 3);
	} else {
		res = db_fail(db, rc, "counts");
	}
	sqlite3_reset(st);
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}
