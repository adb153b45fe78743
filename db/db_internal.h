/*
 * What db.c, db_query.c and db_seed.c share: the connection handle, its
 * statement cache, error mapping and the schema text.  Not installed; only
 * db.h is public.
 */
#ifndef HS_DB_INTERNAL_H
#define HS_DB_INTERNAL_H

#include <sqlite3.h>
#include <stdint.h>

#include "db.h"

/* Every statement a connection may run, prepared on first use and kept. */
enum db_stmt_id {
	ST_BEGIN,
	ST_BEGIN_IMMEDIATE,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_PRODUCT_GET,
	ST_REVIEW_SUMMARY,
	ST_REVIEW_RECENT,
	ST_CATEGORY_GET,
	ST_CATEGORY_TOP,
	ST_PRODUCT_UPDATE,
	ST_PRODUCT_BUMP,
	ST_REVIEW_INSERT,
	ST_PRODUCT_DELETE,
	ST_REVIEW_DELETE,
	ST_WORLD_GET,
	ST_WORLD_SET,
	ST_COUNTS,
	ST_COUNT_
};

struct db_ops;
struct db_pg;

struct db {
	/*
	 * NULL for SQLite (the functions in db.c and db_query.c); another
	 * engine's table otherwise, which every public function hands over to.
	 */
	const struct db_ops *ops;
	struct db_pg *pg; /* the PostgreSQL engine's state (db_pg.c) */
	sqlite3 *conn;
	sqlite3_stmt *st[ST_COUNT_];
	int busy_timeout_ms;
	uint64_t busy_start_ns; /* when the current busy wait began */
	uint64_t queries;       /* statements executed */
	uint64_t time_ns;       /* wall time inside the query functions */
	uint64_t checked_ns;    /* last db_check(), for reads */
	int writing;            /* the open transaction is BEGIN IMMEDIATE */
	char errmsg[256];
};

/*
 * An engine other than SQLite: one function per engine-specific entry of
 * db.h, same contract.  Opening is chosen by the path (db_is_url).
 */
struct db_ops {
	const char *name;
	void (*close)(struct db *db);
	int (*check)(struct db *db);
	int (*synchronous)(struct db *db);
	int (*counts)(struct db *db, struct db_counts *out);
	int (*product_detail)(struct db *db, int64_t id,
			      struct db_product_detail *out);
	int (*category_top)(struct db *db, int64_t category_id,
			    struct db_category_top *out);
	int (*product_update)(struct db *db, int64_t id,
			      const struct db_product_change *c,
			      struct db_product *after);
	int (*review_add)(struct db *db, int64_t product_id, int rating,
			  const char *body, struct db_review *out,
			  int64_t *category_id);
	int (*product_delete)(struct db *db, int64_t id, int64_t *category_id);
	int (*world_get)(struct db *db, int32_t id, int32_t *random_number);
	int (*world_update)(struct db *db, const int32_t *ids,
			    const int32_t *numbers, int n);
	int (*repl_status)(struct db *db, struct db_repl *out);
};

extern const struct db_ops db_pg_ops;

/* Opens a PostgreSQL URL into db (db_pg.c); DB_OK or DB_ERR with errmsg. */
int db_pg_open(struct db *db, const char *url, int flags, int busy_timeout_ms);

/*
 * The seed generator's output, one call per row in generation order
 * (categories, then each product followed by its reviews, then world).
 * Strings are borrowed for the call.  Each returns DB_OK or an error.
 */
struct db_seed_row_product {
	int64_t id, category_id, price_cents, stock, updated_at;
	const char *name, *description;
	size_t name_len, description_len;
};
struct db_seed_row_review {
	int64_t id, product_id, created_at;
	int rating;
	const char *body;
	size_t body_len;
};
struct db_seed_sink {
	int (*category)(void *arg, int64_t id, const char *name, size_t len);
	int (*product)(void *arg, const struct db_seed_row_product *p);
	int (*review)(void *arg, const struct db_seed_row_review *r);
	int (*world)(void *arg, int32_t id, int32_t random_number);
	void *arg;
};
/*
 * Runs the deterministic generator for o into sink; *counts receives the
 * row counts.  Progress goes to o->progress.  The engine-independent half
 * of seeding: the same scale and seed give the same rows to every sink.
 */
int db_seed_generate(const struct db_seed_opts *o,
		     const struct db_seed_sink *sink, struct db *errdb);
/* Seeds a PostgreSQL database (db_pg_seed.c); replace drops a seeded one. */
int db_pg_seed(const char *url, const struct db_seed_opts *o, int replace,
	       char *err, size_t errlen);
/* db_exists for a URL. */
int db_pg_exists(const char *url, char *err, size_t errlen);

/* Schema version 1: tables, then the secondary indexes (built after a bulk load). */
extern const char db_schema_tables_sql[];
extern const char db_schema_indexes_sql[];

/* The SQL text of each statement (db_query.c). */
extern const char *const db_stmt_sql[ST_COUNT_];

/*
 * Returns the prepared statement id, reset and with bindings cleared, or
 * NULL (errmsg set).  The statement stays owned by the connection.
 */
sqlite3_stmt *db_stmt(struct db *db, enum db_stmt_id id);

/*
 * Records the connection's current error (prefixed by what) and maps the
 * SQLite code to DB_BUSY (busy/locked) or DB_ERR.
 */
int db_fail(struct db *db, int rc, const char *what);
/* Sets errmsg from a format, returns DB_ERR. */
int db_failf(struct db *db, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * For reads: db_check() when the last one is more than a second old, so a
 * thread that only reads stops serving a replaced file soon after.
 */
int db_check_due(struct db *db);

/* Current wall-clock time in Unix milliseconds. */
int64_t db_now_ms(void);

/* Copies a text column into dst (size n), always NUL-terminated. */
void db_col_text(sqlite3_stmt *st, int col, char *dst, size_t n);

#endif
