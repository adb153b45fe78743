/*
 * Seeding a PostgreSQL database: the same generator as SQLite's
 * (db_seed_generate), so the same scale and seed give the same rows, loaded
 * with COPY FROM STDIN in one transaction.  The schema, the rows, the
 * indexes (built after the load) and the schema version all commit
 * together: a reader sees no tables or a complete database, never half of
 * one, and replacing a seeded database (hs-seed --force) is one
 * transaction as well.  An advisory lock makes concurrent seeders take
 * turns; the second finds the work done.
 *
 * COPY FREEZE (the tables are new in this transaction) writes the rows
 * frozen and marks their pages all-visible, so that the index-only scans
 * the queries are built for need no heap fetches and no VACUUM first.
 *
 * The generator interleaves each product with its reviews, and a
 * connection can run one COPY at a time: reviews (90% of the bytes) stream
 * straight into their COPY, the other tables are kept in memory (about
 * 15 MB at scale 1) and copied afterwards.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_pg.h"
#include "hs_buf.h"
#include "hs_util.h"

/* Bytes of COPY text handed to libpq at a time. */
#define PG_COPY_CHUNK (256 * 1024)

struct pg_seed {
	struct db *db;
	PGconn *conn;
	struct hs_buf reviews, categories, products, world;
};

/* Appends s as a COPY text field: backslash, tab, newline, CR escaped. */
static void
copy_text(struct hs_buf *b, const char *s, size_t n)
{
	size_t i, from = 0;
	char esc[2] = { '\\', 0 };

	for (i = 0; i < n; i++) {
		switch (s[i]) {
		case '\\':
			esc[1] = '\\';
			break;
		case '\t':
			esc[1] = 't';
			break;
		case '\n':
			esc[1] = 'n';
			break;
		case '\r':
			esc[1] = 'r';
			break;
		default:
			continue;
		}
		hs_buf_append(b, s + from, i - from);
		hs_buf_append(b, esc, 2);
		from = i + 1;
	}
	hs_buf_append(b, s + from, n - from);
}

/* Hands b's bytes to the COPY in progress and empties b. */
static int
copy_flush(struct pg_seed *p, struct hs_buf *b)
{
	if (b->len && PQputCopyData(p->conn, b->data, (int)b->len) != 1)
		return db_pg_fail(p->db, p->conn, NULL, "copy data");
	b->len = 0;
	return DB_OK;
}

static int
sink_category(void *arg, int64_t id, const char *name, size_t len)
{
	struct pg_seed *p = arg;

	hs_buf_printf(&p->categories, "%lld\t", (long long)id);
	copy_text(&p->categories, name, len);
	hs_buf_append(&p->categories, "\n", 1);
	return DB_OK;
}

static int
sink_product(void *arg, const struct db_seed_row_product *r)
{
	struct pg_seed *p = arg;
	struct hs_buf *b = &p->products;

	hs_buf_printf(b, "%lld\t%lld\t", (long long)r->id,
		      (long long)r->category_id);
	copy_text(b, r->name, r->name_len);
	hs_buf_append(b, "\t", 1);
	copy_text(b, r->description, r->description_len);
	hs_buf_printf(b, "\t%lld\t%lld\t%lld\n", (long long)r->price_cents,
		      (long long)r->stock, (long long)r->updated_at);
	return DB_OK;
}

static int
sink_review(void *arg, const struct db_seed_row_review *r)
{
	struct pg_seed *p = arg;
	struct hs_buf *b = &p->reviews;

	hs_buf_printf(b, "%lld\t%lld\t%d\t", (long long)r->id,
		      (long long)r->product_id, r->rating);
	copy_text(b, r->body, r->body_len);
	hs_buf_printf(b, "\t%lld\n", (long long)r->created_at);
	return b->len >= PG_COPY_CHUNK ? copy_flush(p, b) : DB_OK;
}

static int
sink_world(void *arg, int32_t id, int32_t random_number)
{
	struct pg_seed *p = arg;

	hs_buf_printf(&p->world, "%d\t%d\n", id, random_number);
	return DB_OK;
}

/* Starts COPY sql FROM STDIN. */
static int
copy_begin(struct pg_seed *p, const char *sql)
{
	PGresult *r = PQexec(p->conn, sql);
	int res = DB_OK;

	if (PQresultStatus(r) != PGRES_COPY_IN)
		res = db_pg_fail(p->db, p->conn, r, sql);
	PQclear(r);
	return res;
}

/*
 * Ends the COPY in progress: with an error message when res is not DB_OK
 * (the server then discards it), and collects its result.
 */
static int
copy_end(struct pg_seed *p, int res, const char *what)
{
	PGresult *r;

	if (PQputCopyEnd(p->conn, res == DB_OK ? NULL : "seeding failed") != 1)
		return res == DB_OK ? db_pg_fail(p->db, p->conn, NULL, what)
				    : res;
	while ((r = PQgetResult(p->conn)) != NULL) {
		if (res == DB_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
			res = db_pg_fail(p->db, p->conn, r, what);
		PQclear(r);
	}
	return res;
}

/* COPY of a table whose text is all in b, in chunks. */
static int
copy_table(struct pg_seed *p, const char *sql, struct hs_buf *b)
{
	size_t off, n;
	int res = copy_begin(p, sql);

	for (off = 0; res == DB_OK && off < b->len; off += n) {
		n = b->len - off < PG_COPY_CHUNK ? b->len - off : PG_COPY_CHUNK;
		if (PQputCopyData(p->conn, b->data + off, (int)n) != 1)
			res = db_pg_fail(p->db, p->conn, NULL, "copy data");
	}
	if (res == DB_OK || PQstatus(p->conn) == CONNECTION_OK)
		res = copy_end(p, res, sql);
	return res;
}

/* Everything between BEGIN and COMMIT. */
static int
pg_seed_tx(struct pg_seed *p, const struct db_seed_opts *o, int replace,
	   const char *url)
{
	struct db_seed_sink sink = {
		.category = sink_category,
		.product = sink_product,
		.review = sink_review,
		.world = sink_world,
		.arg = p,
	};
	int res, v;

	res = db_pg_exec(p->db, p->conn,
			 "SELECT pg_advisory_xact_lock("
			 "1752392802)",
			 "lock");
	if (res != DB_OK)
		return res;
	if ((v = db_pg_schema_version(p->db, p->conn)) < 0)
		return DB_ERR;
	if (v > 0 && !replace)
		return db_failf(p->db,
				"%s is already seeded (use --force to "
				"replace it)",
				url);
	if (v > 0 &&
	    (res = db_pg_exec(
		     p->db, p->conn,
		     "DROP TABLE IF EXISTS reviews, products, categories,"
		     " world, hs_schema",
		     "drop tables")) != DB_OK)
		return res;
	/* Index builds in memory; the setting ends with the transaction. */
	res = db_pg_exec(p->db, p->conn,
			 "SET LOCAL maintenance_work_mem = '256MB'",
			 "settings");
	if (res == DB_OK)
		res = db_pg_exec(p->db, p->conn, db_pg_schema_tables_sql,
				 "create tables");
	if (res != DB_OK)
		return res;
	if ((res = copy_begin(p, "COPY reviews(id, product_id, rating, body,"
				 " created_at) FROM STDIN (FREEZE)")) != DB_OK)
		return res;
	res = db_seed_generate(o, &sink, p->db);
	if (res == DB_OK)
		res = copy_flush(p, &p->reviews);
	if ((res = copy_end(p, res, "copy reviews")) != DB_OK)
		return res;
	res = copy_table(p, "COPY categories(id, name) FROM STDIN (FREEZE)",
			 &p->categories);
	if (res == DB_OK)
		res = copy_table(p,
				 "COPY products(id, category_id, name,"
				 " description, price_cents, stock, updated_at)"
				 " FROM STDIN (FREEZE)",
				 &p->products);
	if (res == DB_OK)
		res = copy_table(
			p, "COPY world(id, randomnumber) FROM STDIN (FREEZE)",
			&p->world);
	if (o && o->progress)
		o->progress(o->arg, "indexes", 0.0);
	if (res == DB_OK)
		res = db_pg_exec(p->db, p->conn, db_pg_schema_indexes_sql,
				 "create indexes");
	/* Rows the server adds get ids after the seeded ones. */
	if (res == DB_OK)
		res = db_pg_exec(
			p->db, p->conn,
			"SELECT setval(pg_get_serial_sequence('reviews', 'id'),"
			" greatest((SELECT max(id) FROM reviews), 1));"
			"SELECT setval(pg_get_serial_sequence('products', 'id'),"
			" greatest((SELECT max(id) FROM products), 1));"
			"CREATE TABLE hs_schema(version integer NOT NULL);"
			"INSERT INTO hs_schema VALUES (1);"
			"ANALYZE",
			"finish");
	if (res == DB_OK && o && o->progress)
		o->progress(o->arg, "indexes", 1.0);
	return res;
}

int
db_pg_seed(const char *url, const struct db_seed_opts *o, int replace,
	   char *err, size_t errlen)
{
	struct db scratch;
	struct pg_seed p;
	int res = DB_ERR;

	memset(&scratch, 0, sizeof(scratch));
	memset(&p, 0, sizeof(p));
	p.db = &scratch;
	if ((p.conn = db_pg_connect(&scratch, url, 0)) == NULL)
		goto out;
	/* Waiting for the lock of another seeder is not a timeout. */
	if ((res = db_pg_exec(&scratch, p.conn, "SET lock_timeout = 0; BEGIN",
			      "begin")) != DB_OK)
		goto out;
	res = pg_seed_tx(&p, o, replace, url);
	if (res == DB_OK)
		res = db_pg_exec(&scratch, p.conn, "COMMIT", "commit");
	else if (PQstatus(p.conn) == CONNECTION_OK)
		PQclear(PQexec(p.conn, "ROLLBACK"));
out:
	if (res != DB_OK && err && errlen)
		snprintf(err, errlen, "%s", scratch.errmsg);
	PQfinish(p.conn);
	hs_buf_free(&p.reviews);
	hs_buf_free(&p.categories);
	hs_buf_free(&p.products);
	hs_buf_free(&p.world);
	return res;
}

int
db_pg_exists(const char *url, char *err, size_t errlen)
{
	struct db scratch;
	PGconn *conn;
	int v = -1;

	memset(&scratch, 0, sizeof(scratch));
	if ((conn = db_pg_connect(&scratch, url, 0)) != NULL)
		v = db_pg_schema_version(&scratch, conn);
	PQfinish(conn);
	if (v < 0 && err && errlen)
		snprintf(err, errlen, "%s", scratch.errmsg);
	return v < 0 ? -1 : v > 0;
}
