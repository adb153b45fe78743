/*
 * The PostgreSQL engine behind db.h (libpq): one connection per struct db,
 * opened from a postgres:// URL, with the SQLite schema translated, every
 * query prepared on the connection at first use, and the same results.
 *
 * Isolation: multi-statement reads run in one REPEATABLE READ READ ONLY
 * transaction (one snapshot, so a product's version matches its reviews);
 * every version bump is a single UPDATE ... SET version = version + 1
 * RETURNING, which takes the row lock and re-reads the row under it, so
 * concurrent writers from any number of processes queue on the row and no
 * bump is lost.  A wait for a lock past the busy timeout (lock_timeout), a
 * deadlock or a serialization failure is DB_BUSY, like SQLite's busy lock.
 *
 * A lost connection (the server restarted, killed, or a network cut) is
 * DB_ERR with "connection lost" in the message; the next call on the same
 * handle reconnects first (PQreset) and prepares its statements again, so
 * a caller that keeps the handle recovers by itself, and one that closes
 * and reopens it (hs-server) does too.  Nothing here crashes on a dead
 * connection: libpq reports it and we map it.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_pg.h"
#include "hs_util.h"

/* SQLSTATEs that mean "try again": the caller answers 503 + Retry-After. */
#define PG_SERIALIZATION_FAILURE "40001"
#define PG_DEADLOCK_DETECTED     "40P01"
#define PG_LOCK_NOT_AVAILABLE    "55P03"

/* pg_advisory_xact_lock key serialising schema changes ("hsdb"). */
#define PG_SCHEMA_LOCK "1752392802"

enum pg_stmt_id {
	PS_PRODUCT_GET,
	PS_REVIEW_SUMMARY,
	PS_REVIEW_RECENT,
	PS_CATEGORY_GET,
	PS_CATEGORY_TOP,
	PS_PRODUCT_UPDATE,
	PS_PRODUCT_BUMP,
	PS_REVIEW_INSERT,
	PS_PRODUCT_DELETE,
	PS_REVIEW_DELETE,
	PS_WORLD_GET,
	PS_WORLD_SET,
	PS_COUNTS,
	PS_REPL,
	PS_COUNT_
};

struct db_pg {
	PGconn *conn;
	char prepared[PS_COUNT_]; /* prepared on this connection */
	uint64_t retry_ns;        /* a failed reconnect: none before then */
};

/* After a reconnect failed, how long queries fail at once instead of
   each paying a connect timeout (the server may be cut off). */
#define PG_RECONNECT_NS 1000000000ull

#define PG_PRODUCT_COLS                                                     \
	"id, category_id, name, description, price_cents, stock, version, " \
	"updated_at"

/*
 * The SQLite statements of db_query.c in PostgreSQL's dialect.  Averages
 * are sum / count in float8, as SQLite computes avg() over integers, so
 * both engines order a top list the same way; count(*) FILTER replaces
 * SQLite's sum(rating = k).  An ORDER BY expression cannot name an output
 * column in PostgreSQL, hence count(r.rating) = 0 spelled out.
 */
static const char *const pg_stmt_sql[PS_COUNT_] = {
	/* pg_lsn - pg_lsn is numeric: bytes between them. */
	[PS_REPL] = "SELECT pg_is_in_recovery(),"
		    " ((CASE WHEN pg_is_in_recovery()"
		    " THEN coalesce(pg_last_wal_replay_lsn(), '0/0')"
		    " ELSE pg_current_wal_lsn() END) - '0/0'::pg_lsn)::int8,"
		    " coalesce((extract(epoch FROM now() -"
		    " pg_last_xact_replay_timestamp()) * 1000)::int8, -1)",
	[PS_PRODUCT_GET] =
		"SELECT " PG_PRODUCT_COLS " FROM products WHERE id = $1",
	[PS_REVIEW_SUMMARY] =
		"SELECT count(*), sum(rating)::float8 / nullif(count(*), 0),"
		" count(*) FILTER (WHERE rating = 1),"
		" count(*) FILTER (WHERE rating = 2),"
		" count(*) FILTER (WHERE rating = 3),"
		" count(*) FILTER (WHERE rating = 4),"
		" count(*) FILTER (WHERE rating = 5)"
		" FROM reviews WHERE product_id = $1",
	[PS_REVIEW_RECENT] = "SELECT id, rating, body, created_at FROM reviews"
			     " WHERE product_id = $1"
			     " ORDER BY created_at DESC, id DESC LIMIT $2",
	[PS_CATEGORY_GET] = "SELECT name FROM categories WHERE id = $1",
	[PS_CATEGORY_TOP] =
		"WITH t AS ("
		" SELECT p.id AS id, count(r.rating) AS n,"
		" sum(r.rating)::float8 / nullif(count(r.rating), 0) AS a"
		" FROM products AS p"
		" LEFT JOIN reviews AS r ON r.product_id = p.id"
		" WHERE p.category_id = $1"
		" GROUP BY p.id"
		" ORDER BY count(r.rating) = 0, a DESC, n DESC, p.id LIMIT $2)"
		" SELECT t.id, p.name, p.price_cents, t.n, t.a"
		" FROM t JOIN products AS p ON p.id = t.id"
		" ORDER BY t.n = 0, t.a DESC, t.n DESC, t.id",
	[PS_PRODUCT_UPDATE] =
		"UPDATE products SET"
		" name = CASE WHEN $1::boolean THEN $2::text ELSE name END,"
		" price_cents = CASE WHEN $3::boolean THEN $4::bigint"
		" ELSE price_cents END,"
		" stock = CASE WHEN $5::boolean THEN $6::bigint ELSE stock END,"
		" version = version + 1, updated_at = $7"
		" WHERE id = $8 RETURNING " PG_PRODUCT_COLS,
	[PS_PRODUCT_BUMP] =
		"UPDATE products SET version = version + 1, updated_at = $1"
		" WHERE id = $2 RETURNING category_id",
	[PS_REVIEW_INSERT] =
		"INSERT INTO reviews(product_id, rating, body, created_at)"
		" VALUES ($1, $2, $3, $4) RETURNING id",
	[PS_PRODUCT_DELETE] =
		"DELETE FROM products WHERE id = $1 RETURNING category_id",
	[PS_REVIEW_DELETE] = "DELETE FROM reviews WHERE product_id = $1",
	[PS_WORLD_GET] = "SELECT randomnumber FROM world WHERE id = $1",
	[PS_WORLD_SET] = "UPDATE world SET randomnumber = $1 WHERE id = $2",
	[PS_COUNTS] = "SELECT (SELECT count(*) FROM categories),"
		      " (SELECT count(*) FROM products),"
		      " (SELECT count(*) FROM reviews),"
		      " (SELECT count(*) FROM world)",
};

/*
 * Schema version 1 (db.c has SQLite's): integer columns are bigint, ids of
 * rows the server inserts come from an identity column (the seeder sets it
 * past the seeded ids), and the reviews index carries rating as an
 * included column so that summaries and the top list read the index.
 * The seeder loads the tables, then builds the secondary indexes.
 * (Adding the primary keys after the load as well was tried: the index
 * phase took 7 s instead of 1.8 s and the whole seed got slower.)
 */
const char db_pg_schema_tables_sql[] =
	"CREATE TABLE categories("
	" id bigint PRIMARY KEY,"
	" name text NOT NULL DEFAULT '');"
	"CREATE TABLE products("
	" id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
	" category_id bigint NOT NULL DEFAULT 0,"
	" name text NOT NULL DEFAULT '',"
	" description text NOT NULL DEFAULT '',"
	" price_cents bigint NOT NULL DEFAULT 0,"
	" stock bigint NOT NULL DEFAULT 0,"
	" version bigint NOT NULL DEFAULT 1,"
	" updated_at bigint NOT NULL DEFAULT 0);"
	"CREATE TABLE reviews("
	" id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
	" product_id bigint NOT NULL,"
	" rating integer NOT NULL CHECK (rating BETWEEN 1 AND 5),"
	" body text NOT NULL DEFAULT '',"
	" created_at bigint NOT NULL DEFAULT 0);"
	"CREATE TABLE world("
	" id integer PRIMARY KEY,"
	" randomnumber integer NOT NULL DEFAULT 0);";

const char db_pg_schema_indexes_sql[] =
	"CREATE INDEX reviews_product_created"
	" ON reviews(product_id, created_at, id) INCLUDE (rating);"
	"CREATE INDEX products_category ON products(category_id);";

/* Records a failed result (or connection) and maps it to a db_res. */
int
db_pg_fail(struct db *db, PGconn *conn, const PGresult *r, const char *what)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = r ? PQresultErrorMessage(r) : "";
	char clean[200];
	size_t i;

	if (msg == NULL || msg[0] == '\0')
		msg = PQerrorMessage(conn);
	/*
	 * One line in logs: libpq messages end with a newline and may hold
	 * more, with tabs.
	 */
	snprintf(clean, sizeof(clean), "%s", msg);
	for (i = 0; clean[i]; i++)
		if (clean[i] == '\n' || clean[i] == '\r' || clean[i] == '\t')
			clean[i] = clean[i + 1] ? ' ' : '\0';
	if (PQstatus(conn) != CONNECTION_OK && r == NULL &&
	    strcmp(what, "connect") == 0) {
		snprintf(db->errmsg, sizeof(db->errmsg), "%s", clean);
		return DB_ERR;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		snprintf(db->errmsg, sizeof(db->errmsg),
			 "%s: connection lost: %s", what, clean);
		return DB_ERR;
	}
	snprintf(db->errmsg, sizeof(db->errmsg), "%s: %s (%s)", what, clean,
		 state ? state : "?");
	if (state && (strcmp(state, PG_SERIALIZATION_FAILURE) == 0 ||
		      strcmp(state, PG_DEADLOCK_DETECTED) == 0 ||
		      strcmp(state, PG_LOCK_NOT_AVAILABLE) == 0))
		return DB_BUSY;
	return DB_ERR;
}

/* Runs SQL without parameters or results; DB_OK or the mapped error. */
int
db_pg_exec(struct db *db, PGconn *conn, const char *sql, const char *what)
{
	PGresult *r = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(r);
	int res = DB_OK;

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		res = db_pg_fail(db, conn, r, what);
	PQclear(r);
	return res;
}

/*
 * Before each call: a connection lost earlier is reset here (the server
 * may be back), and its prepared statements are gone with it.
 */
static int
pg_ready(struct db *db)
{
	struct db_pg *pg = db->pg;

	uint64_t now;
	int res;

	if (PQstatus(pg->conn) == CONNECTION_OK)
		return DB_OK;
	now = hs_now_ns();
	if (now < pg->retry_ns)
		return db_failf(db,
				"reconnect: the server did not answer "
				"less than a second ago; not tried again yet");
	PQreset(pg->conn);
	memset(pg->prepared, 0, sizeof(pg->prepared));
	if (PQstatus(pg->conn) != CONNECTION_OK) {
		res = db_pg_fail(db, pg->conn, NULL, "reconnect");
		pg->retry_ns = hs_now_ns() + PG_RECONNECT_NS;
		return res;
	}
	pg->retry_ns = 0;
	return DB_OK;
}

/*
 * Executes prepared statement id with text parameters.  On DB_OK *out is a
 * result with tuples or a command status (the caller PQclear()s it).
 */
static int
pg_run(struct db *db, enum pg_stmt_id id, int n, const char *const *vals,
       PGresult **out, const char *what)
{
	struct db_pg *pg = db->pg;
	char name[16];
	PGresult *r;
	ExecStatusType st;

	*out = NULL;
	snprintf(name, sizeof(name), "hs%d", (int)id);
	if (!pg->prepared[id]) {
		r = PQprepare(pg->conn, name, pg_stmt_sql[id], 0, NULL);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			int res = db_pg_fail(db, pg->conn, r, "prepare");

			PQclear(r);
			return res;
		}
		PQclear(r);
		pg->prepared[id] = 1;
	}
	db->queries++;
	r = PQexecPrepared(pg->conn, name, n, vals, NULL, NULL, 0);
	st = PQresultStatus(r);
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		int res = db_pg_fail(db, pg->conn, r, what);

		PQclear(r);
		return res;
	}
	*out = r;
	return DB_OK;
}

static int64_t
pg_i64(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col)
		       ? 0
		       : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static double
pg_f8(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0.0
					: strtod(PQgetvalue(r, row, col), NULL);
}

static void
pg_text(const PGresult *r, int row, int col, char *dst, size_t n)
{
	size_t len = (size_t)PQgetlength(r, row, col);

	if (len >= n)
		len = n - 1;
	memcpy(dst, PQgetvalue(r, row, col), len);
	dst[len] = '\0';
}

/* Decimal text of an integer parameter, in a caller's buffer. */
#define PG_I64(buf, v) \
	(snprintf((buf), sizeof(buf), "%lld", (long long)(v)), (buf))

static int
pg_begin(struct db *db, const char *sql)
{
	int res = pg_ready(db);

	if (res != DB_OK)
		return res;
	return db_pg_exec(db, db->pg->conn, sql, "begin");
}

/* Commits on DB_OK, else rolls back keeping the first error's message. */
static int
pg_end(struct db *db, int res)
{
	char keep[sizeof(db->errmsg)];

	if (res == DB_OK)
		return db_pg_exec(db, db->pg->conn, "COMMIT", "commit");
	if (PQstatus(db->pg->conn) == CONNECTION_OK) {
		memcpy(keep, db->errmsg, sizeof(keep));
		db_pg_exec(db, db->pg->conn, "ROLLBACK", "rollback");
		memcpy(db->errmsg, keep, sizeof(keep));
	}
	return res;
}

static void
pg_read_product(const PGresult *r, int row, struct db_product *p)
{
	p->id = pg_i64(r, row, 0);
	p->category_id = pg_i64(r, row, 1);
	pg_text(r, row, 2, p->name, sizeof(p->name));
	pg_text(r, row, 3, p->description, sizeof(p->description));
	p->price_cents = pg_i64(r, row, 4);
	p->stock = pg_i64(r, row, 5);
	p->version = pg_i64(r, row, 6);
	p->updated_at = pg_i64(r, row, 7);
}

static int
pg_detail_parts(struct db *db, int64_t id, struct db_product_detail *out)
{
	char a[24], lim[24];
	const char *v[2] = { PG_I64(a, id), PG_I64(lim, DB_RECENT_N) };
	struct db_review *rv;
	PGresult *r;
	int res, i;

	if ((res = pg_run(db, PS_PRODUCT_GET, 1, v, &r, "product")) != DB_OK)
		return res;
	if (PQntuples(r) == 0)
		res = DB_NOTFOUND;
	else
		pg_read_product(r, 0, &out->product);
	PQclear(r);
	if (res != DB_OK)
		return res;
	if ((res = pg_run(db, PS_REVIEW_SUMMARY, 1, v, &r, "review summary")) !=
	    DB_OK)
		return res;
	out->summary.count = pg_i64(r, 0, 0);
	out->summary.average = out->summary.count ? pg_f8(r, 0, 1) : 0.0;
	for (i = 0; i < 5; i++)
		out->summary.histogram[i] = pg_i64(r, 0, 2 + i);
	PQclear(r);
	if ((res = pg_run(db, PS_REVIEW_RECENT, 2, v, &r, "recent reviews")) !=
	    DB_OK)
		return res;
	for (i = 0; i < PQntuples(r) && out->nrecent < DB_RECENT_N; i++) {
		rv = &out->recent[out->nrecent++];
		rv->id = pg_i64(r, i, 0);
		rv->product_id = id;
		rv->rating = (int)pg_i64(r, i, 1);
		pg_text(r, i, 2, rv->body, sizeof(rv->body));
		rv->created_at = pg_i64(r, i, 3);
	}
	PQclear(r);
	return DB_OK;
}

#define PG_BEGIN_READ "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

static int
pg_product_detail(struct db *db, int64_t id, struct db_product_detail *out)
{
	uint64_t t0 = hs_now_ns();
	int res, fin;

	memset(out, 0, sizeof(*out));
	if ((res = pg_begin(db, PG_BEGIN_READ)) != DB_OK)
		goto done;
	res = pg_detail_parts(db, id, out);
	if ((fin = pg_end(db, res == DB_NOTFOUND ? DB_OK : res)) != DB_OK)
		res = fin;
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

static int
pg_top_parts(struct db *db, int64_t category_id, struct db_category_top *out)
{
	char a[24], lim[24];
	const char *v[2] = { PG_I64(a, category_id), PG_I64(lim, DB_TOP_N) };
	struct db_top_entry *e;
	PGresult *r;
	int res, i;

	if ((res = pg_run(db, PS_CATEGORY_GET, 1, v, &r, "category")) != DB_OK)
		return res;
	if (PQntuples(r) == 0)
		res = DB_NOTFOUND;
	else
		pg_text(r, 0, 0, out->name, sizeof(out->name));
	PQclear(r);
	if (res != DB_OK)
		return res;
	if ((res = pg_run(db, PS_CATEGORY_TOP, 2, v, &r, "category top")) !=
	    DB_OK)
		return res;
	for (i = 0; i < PQntuples(r) && out->n < DB_TOP_N; i++) {
		e = &out->top[out->n++];
		e->product_id = pg_i64(r, i, 0);
		pg_text(r, i, 1, e->name, sizeof(e->name));
		e->price_cents = pg_i64(r, i, 2);
		e->review_count = pg_i64(r, i, 3);
		e->average = e->review_count ? pg_f8(r, i, 4) : 0.0;
	}
	PQclear(r);
	return DB_OK;
}

static int
pg_category_top(struct db *db, int64_t category_id, struct db_category_top *out)
{
	uint64_t t0 = hs_now_ns();
	int res, fin;

	memset(out, 0, sizeof(*out));
	out->category_id = category_id;
	if ((res = pg_begin(db, PG_BEGIN_READ)) != DB_OK)
		goto done;
	res = pg_top_parts(db, category_id, out);
	if ((fin = pg_end(db, res == DB_NOTFOUND ? DB_OK : res)) != DB_OK)
		res = fin;
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

/*
 * One statement, so one implicit transaction: the row lock is taken by
 * the UPDATE and version + 1 is computed from the row as locked.
 */
static int
pg_product_update(struct db *db, int64_t id, const struct db_product_change *c,
		  struct db_product *after)
{
	uint64_t t0 = hs_now_ns();
	char price[24], stock[24], now[24], pid[24];
	const char *v[8] = {
		c->has_name ? "t" : "f",  c->has_name ? c->name : NULL,
		c->has_price ? "t" : "f", PG_I64(price, c->price_cents),
		c->has_stock ? "t" : "f", PG_I64(stock, c->stock),
		PG_I64(now, db_now_ms()), PG_I64(pid, id),
	};
	PGresult *r = NULL;
	int res;

	if (after)
		memset(after, 0, sizeof(*after));
	if ((res = pg_ready(db)) != DB_OK)
		goto done;
	if ((res = pg_run(db, PS_PRODUCT_UPDATE, 8, v, &r, "update product")) !=
	    DB_OK)
		goto done;
	if (PQntuples(r) == 0)
		res = DB_NOTFOUND;
	else if (after)
		pg_read_product(r, 0, after);
	PQclear(r);
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

/* A write returning the touched product's category_id (RETURNING). */
static int
pg_run_category(struct db *db, enum pg_stmt_id id, int n, const char *const *v,
		const char *what, int64_t *cat)
{
	PGresult *r;
	int res = pg_run(db, id, n, v, &r, what);

	if (res != DB_OK)
		return res;
	if (PQntuples(r) == 0)
		res = DB_NOTFOUND;
	else
		*cat = pg_i64(r, 0, 0);
	PQclear(r);
	return res;
}

static int
pg_review_add(struct db *db, int64_t product_id, int rating, const char *body,
	      struct db_review *out, int64_t *category_id)
{
	uint64_t t0 = hs_now_ns();
	int64_t now = db_now_ms(), cat = 0, rid = 0;
	char snow[24], spid[24], srat[24];
	const char *bump[2] = { PG_I64(snow, now), PG_I64(spid, product_id) };
	const char *ins[4] = { spid, PG_I64(srat, rating), body ? body : "",
			       snow };
	PGresult *r;
	int res;

	if (body == NULL)
		body = "";
	if ((res = pg_begin(db, "BEGIN")) != DB_OK)
		goto done;
	res = pg_run_category(db, PS_PRODUCT_BUMP, 2, bump, "bump product",
			      &cat);
	if (res == DB_OK && (res = pg_run(db, PS_REVIEW_INSERT, 4, ins, &r,
					  "insert review")) == DB_OK) {
		rid = pg_i64(r, 0, 0);
		PQclear(r);
	}
	if ((res = pg_end(db, res)) != DB_OK)
		goto done;
	if (out) {
		memset(out, 0, sizeof(*out));
		out->id = rid;
		out->product_id = product_id;
		out->rating = rating;
		snprintf(out->body, sizeof(out->body), "%s", body);
		out->created_at = now;
	}
	if (category_id)
		*category_id = cat;
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

static int
pg_product_delete(struct db *db, int64_t id, int64_t *category_id)
{
	uint64_t t0 = hs_now_ns();
	char sid[24];
	const char *v[1] = { PG_I64(sid, id) };
	int64_t cat = 0;
	PGresult *r;
	int res;

	if ((res = pg_begin(db, "BEGIN")) != DB_OK)
		goto done;
	res = pg_run_category(db, PS_PRODUCT_DELETE, 1, v, "delete product",
			      &cat);
	if (res == DB_OK && (res = pg_run(db, PS_REVIEW_DELETE, 1, v, &r,
					  "delete reviews")) == DB_OK)
		PQclear(r);
	if ((res = pg_end(db, res)) == DB_OK && category_id)
		*category_id = cat;
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

static int
pg_world_get(struct db *db, int32_t id, int32_t *random_number)
{
	uint64_t t0 = hs_now_ns();
	char sid[24];
	const char *v[1] = { PG_I64(sid, id) };
	PGresult *r;
	int res;

	if ((res = pg_ready(db)) != DB_OK)
		goto done;
	if ((res = pg_run(db, PS_WORLD_GET, 1, v, &r, "world")) != DB_OK)
		goto done;
	if (PQntuples(r) == 0)
		res = DB_NOTFOUND;
	else
		*random_number = (int32_t)pg_i64(r, 0, 0);
	PQclear(r);
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

struct pg_world_ix {
	int32_t id;
	int i;
};

static int
pg_world_cmp(const void *a, const void *b)
{
	const struct pg_world_ix *x = a, *y = b;

	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

/*
 * Rows are updated in id order (ties in the caller's order, so the last
 * value given for an id wins, as in the caller's sequence): concurrent
 * batches then lock rows in the same order and cannot deadlock.
 */
static int
pg_world_update(struct db *db, const int32_t *ids, const int32_t *numbers,
		int n)
{
	uint64_t t0 = hs_now_ns();
	struct pg_world_ix *ord = NULL;
	char sid[24], snum[24];
	const char *v[2];
	PGresult *r;
	int i, res;

	if ((res = pg_begin(db, "BEGIN")) != DB_OK)
		goto done;
	ord = hs_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*ord));
	for (i = 0; i < n; i++) {
		ord[i].id = ids[i];
		ord[i].i = i;
	}
	qsort(ord, (size_t)n, sizeof(*ord), pg_world_cmp);
	for (i = 0; i < n && res == DB_OK; i++) {
		v[0] = PG_I64(snum, numbers[ord[i].i]);
		v[1] = PG_I64(sid, ord[i].id);
		if ((res = pg_run(db, PS_WORLD_SET, 2, v, &r,
				  "update world")) != DB_OK)
			break;
		if (strcmp(PQcmdTuples(r), "0") == 0)
			res = DB_NOTFOUND;
		PQclear(r);
	}
	res = pg_end(db, res);
done:
	free(ord);
	db->time_ns += hs_now_ns() - t0;
	return res;
}

static int
pg_repl_status(struct db *db, struct db_repl *out)
{
	uint64_t t0 = hs_now_ns();
	PGresult *r;
	int res;

	if ((res = pg_ready(db)) != DB_OK)
		goto done;
	if ((res = pg_run(db, PS_REPL, 0, NULL, &r, "wal position")) != DB_OK)
		goto done;
	out->standby = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	out->lsn = (uint64_t)pg_i64(r, 0, 1);
	out->replay_age_ms = out->standby ? pg_i64(r, 0, 2) : -1;
	PQclear(r);
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

static int
pg_counts(struct db *db, struct db_counts *out)
{
	uint64_t t0 = hs_now_ns();
	PGresult *r;
	int res;

	memset(out, 0, sizeof(*out));
	if ((res = pg_ready(db)) != DB_OK)
		goto done;
	if ((res = pg_run(db, PS_COUNTS, 0, NULL, &r, "counts")) != DB_OK)
		goto done;
	out->categories = pg_i64(r, 0, 0);
	out->products = pg_i64(r, 0, 1);
	out->reviews = pg_i64(r, 0, 2);
	out->world = pg_i64(r, 0, 3);
	PQclear(r);
done:
	db->time_ns += hs_now_ns() - t0;
	return res;
}

/* There is no file to be replaced: the check is that the server answers. */
static int
pg_check(struct db *db)
{
	db->checked_ns = hs_now_ns();
	return pg_ready(db);
}

/* synchronous_commit read back: on (or local, remote_*) 2, off 1. */
static int
pg_synchronous(struct db *db)
{
	PGresult *r;
	int v = -1;

	if (pg_ready(db) != DB_OK)
		return -1;
	r = PQexec(db->pg->conn, "SHOW synchronous_commit");
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		v = strcmp(PQgetvalue(r, 0, 0), "off") == 0 ? 1 : 2;
	PQclear(r);
	return v;
}

static void
pg_close(struct db *db)
{
	if (db->pg == NULL)
		return;
	PQfinish(db->pg->conn);
	free(db->pg);
	db->pg = NULL;
}

const struct db_ops db_pg_ops = {
	.name = "postgres",
	.close = pg_close,
	.check = pg_check,
	.synchronous = pg_synchronous,
	.counts = pg_counts,
	.product_detail = pg_product_detail,
	.category_top = pg_category_top,
	.product_update = pg_product_update,
	.review_add = pg_review_add,
	.product_delete = pg_product_delete,
	.world_get = pg_world_get,
	.world_update = pg_world_update,
	.repl_status = pg_repl_status,
};

/*
 * Connects to url: libpq parses the URL; a connect timeout so that a dead
 * host fails a request instead of hanging it, and TCP keepalives with a
 * user timeout so that a host cut off mid-query (a network partition:
 * nothing answers, nothing resets) fails it within about 2 s too, where
 * the kernel's defaults would wait for minutes; lock_timeout as the busy
 * timeout, UTF-8 on the wire.  The timeouts come before the URL, which
 * may override them (postgres://...?tcp_user_timeout=10000).  Returns the
 * connection (PQfinish it) or NULL with errmsg set.
 */
PGconn *
db_pg_connect(struct db *db, const char *url, int busy_timeout_ms)
{
	char opts[96];
	const char *keys[] = { "connect_timeout",
			       "keepalives",
			       "keepalives_idle",
			       "keepalives_interval",
			       "keepalives_count",
			       "tcp_user_timeout",
			       "dbname",
			       "client_encoding",
			       "application_name",
			       "options",
			       NULL };
	const char *vals[] = { "2", "1",    "1",           "1",  "2", "2000",
			       url, "UTF8", "hammerstack", opts, NULL };
	PGconn *conn;

	snprintf(opts, sizeof(opts), "-c lock_timeout=%d",
		 busy_timeout_ms > 0 ? busy_timeout_ms : 5000);
	conn = PQconnectdbParams(keys, vals, 1);
	if (conn == NULL) {
		db_failf(db, "%s: out of memory", url);
		return NULL;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		db_pg_fail(db, conn, NULL, "connect");
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/*
 * Schema version in hs_schema(version); 0 when the table does not exist.
 * -1 with errmsg on failure.
 */
int
db_pg_schema_version(struct db *db, PGconn *conn)
{
	PGresult *r;
	int v = -1;

	/*
	 * to_regclass first: a query on a missing table would abort the
	 * transaction the caller may be in.
	 */
	r = PQexec(conn, "SELECT to_regclass('hs_schema') IS NOT NULL");
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		db_pg_fail(db, conn, r, "schema version");
		PQclear(r);
		return -1;
	}
	if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
		PQclear(r);
		return 0;
	}
	PQclear(r);
	r = PQexec(conn, "SELECT coalesce(max(version), 0) FROM hs_schema");
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		v = (int)pg_i64(r, 0, 0);
	else
		db_pg_fail(db, conn, r, "schema version");
	PQclear(r);
	return v;
}

/*
 * Creates the schema in a database without one.  Under an advisory lock
 * held to the end of the transaction, and the version read again under
 * it: processes opening a new database at once take turns, and DDL being
 * transactional, the others find all of the work done or none of it.
 */
static int
pg_migrate(struct db *db, PGconn *conn)
{
	int v = db_pg_schema_version(db, conn), res;

	if (v == DB_SCHEMA_VERSION)
		return DB_OK;
	if (v < 0)
		return DB_ERR;
	res = db_pg_exec(db, conn,
			 "BEGIN; SELECT pg_advisory_xact_lock(" PG_SCHEMA_LOCK
			 ")",
			 "begin migration");
	if (res == DB_OK && (v = db_pg_schema_version(db, conn)) < 0)
		res = DB_ERR;
	if (res == DB_OK && v > DB_SCHEMA_VERSION)
		res = db_failf(db,
			       "database schema version %d is newer than "
			       "this program's (%d)",
			       v, DB_SCHEMA_VERSION);
	if (res == DB_OK && v == 0) {
		res = db_pg_exec(db, conn, db_pg_schema_tables_sql,
				 "create tables");
		if (res == DB_OK)
			res = db_pg_exec(db, conn, db_pg_schema_indexes_sql,
					 "create indexes");
		if (res == DB_OK)
			res = db_pg_exec(
				db, conn,
				"CREATE TABLE hs_schema(version integer NOT NULL);"
				"INSERT INTO hs_schema VALUES (1)",
				"set schema version");
	}
	if (res == DB_OK)
		return db_pg_exec(db, conn, "COMMIT", "commit migration");
	db_pg_exec(db, conn, "ROLLBACK", "rollback");
	return res;
}

int
db_pg_open(struct db *db, const char *url, int flags, int busy_timeout_ms)
{
	PGconn *conn = db_pg_connect(db, url, busy_timeout_ms);
	int res;

	if (conn == NULL)
		return DB_ERR;
	/*
	 * A commit is acknowledged once its WAL is written and flushed (or
	 * written, with fsync off): unlike SQLite's NORMAL, "off" would lose
	 * acknowledged commits when the PostgreSQL server crashes, so both
	 * durability settings keep it on.
	 */
	(void)flags;
	res = db_pg_exec(db, conn, "SET synchronous_commit = on",
			 "synchronous_commit");
	if (res == DB_OK)
		res = pg_migrate(db, conn);
	if (res != DB_OK) {
		PQfinish(conn);
		return res;
	}
	db->pg = hs_xcalloc(1, sizeof(*db->pg));
	db->pg->conn = conn;
	db->ops = &db_pg_ops;
	return DB_OK;
}
