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

struct db {
	sqlite3 *conn;
	sqlite3_stmt *st[ST_COUNT_];
	int busy_timeout_ms;
	uint64_t busy_start_ns;   /* when the current busy wait began */
	uint64_t queries;         /* statements executed */
	uint64_t time_ns;         /* wall time inside the query functions */
	uint64_t checked_ns;      /* last db_check(), for reads */
	int writing;              /* the open transaction is BEGIN IMMEDIATE */
	char errmsg[256];
};

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
