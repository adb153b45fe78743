/*
 * What db_pg.c and db_pg_seed.c share (the PostgreSQL engine); private to
 * db/, like db_internal.h.
 */
#ifndef HS_DB_PG_H
#define HS_DB_PG_H

#include <libpq-fe.h>

#include "db_internal.h"

/* Schema version 1 in PostgreSQL's dialect: tables, then indexes. */
extern const char db_pg_schema_tables_sql[];
extern const char db_pg_schema_indexes_sql[];

/*
 * Records the error of r (or of conn when r is NULL) on db, prefixed by
 * what, and maps it: serialization failure, deadlock and lock timeout ->
 * DB_BUSY; anything else, a lost connection included, -> DB_ERR.
 */
int db_pg_fail(struct db *db, PGconn *conn, const PGresult *r,
	       const char *what);
/* Runs sql (no parameters; several statements allowed); DB_OK or mapped. */
int db_pg_exec(struct db *db, PGconn *conn, const char *sql, const char *what);
/* Connects to url; NULL with db's errmsg set. */
PGconn *db_pg_connect(struct db *db, const char *url, int busy_timeout_ms);
/* hs_schema's version, 0 when missing, -1 on error (errmsg set). */
int db_pg_schema_version(struct db *db, PGconn *conn);

#endif
