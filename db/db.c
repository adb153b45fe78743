/*
 * Connections: opening a file with the pragmas every connection needs
 * (WAL, synchronous, a busy handler), schema migrations by PRAGMA
 * user_version under BEGIN IMMEDIATE, the per-connection statement cache,
 * error mapping, the check that the file at the path is still the one
 * open, and the query counters.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db_internal.h"
#include "hs_util.h"

/*
 * Schema version 1.  Tables and indexes are split so that the seeder can
 * bulk-load first and index afterwards.  The reviews index starts with
 * (product_id, created_at, id), the exact order of the newest-first list,
 * so that list reads five entries and stops, however many reviews a
 * product has; rating rides along so that the review summary and the
 * category aggregate read the index alone (measured: the category top
 * list twice as fast as with table lookups).  products(category_id)
 * drives the category scan.
 */
const char db_schema_tables_sql[] =
	"CREATE TABLE IF NOT EXISTS categories("
	" id INTEGER PRIMARY KEY,"
	" name TEXT NOT NULL DEFAULT '');"
	"CREATE TABLE IF NOT EXISTS products("
	" id INTEGER PRIMARY KEY,"
	" category_id INTEGER NOT NULL DEFAULT 0,"
	" name TEXT NOT NULL DEFAULT '',"
	" description TEXT NOT NULL DEFAULT '',"
	" price_cents INTEGER NOT NULL DEFAULT 0,"
	" stock INTEGER NOT NULL DEFAULT 0,"
	" version INTEGER NOT NULL DEFAULT 1,"
	" updated_at INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE IF NOT EXISTS reviews("
	" id INTEGER PRIMARY KEY,"
	" product_id INTEGER NOT NULL,"
	" rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),"
	" body TEXT NOT NULL DEFAULT '',"
	" created_at INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE IF NOT EXISTS world("
	" id INTEGER PRIMARY KEY,"
	" randomNumber INTEGER NOT NULL DEFAULT 0);";

const char db_schema_indexes_sql[] =
	"CREATE INDEX IF NOT EXISTS reviews_product_created"
	" ON reviews(product_id, created_at, id, rating);"
	"CREATE INDEX IF NOT EXISTS products_category"
	" ON products(category_id);";

/*
 * Columns a pre-version-1 file may lack.  ALTER TABLE ADD COLUMN needs a
 * constant default for NOT NULL columns, which these all have.
 */
static const struct {
	const char *table, *column, *decl;
} db_v1_columns[] = {
	{ "categories", "name", "name TEXT NOT NULL DEFAULT ''" },
	{ "products", "category_id", "category_id INTEGER NOT NULL DEFAULT 0" },
	{ "products", "name", "name TEXT NOT NULL DEFAULT ''" },
	{ "products", "description", "description TEXT NOT NULL DEFAULT ''" },
	{ "products", "price_cents", "price_cents INTEGER NOT NULL DEFAULT 0" },
	{ "products", "stock", "stock INTEGER NOT NULL DEFAULT 0" },
	{ "products", "version", "version INTEGER NOT NULL DEFAULT 1" },
	{ "products", "updated_at", "updated_at INTEGER NOT NULL DEFAULT 0" },
	{ "reviews", "body", "body TEXT NOT NULL DEFAULT ''" },
	{ "reviews", "created_at", "created_at INTEGER NOT NULL DEFAULT 0" },
	{ "world", "randomNumber", "randomNumber INTEGER NOT NULL DEFAULT 0" },
};

int
db_is_url(const char *path)
{
	return path != NULL && (strncmp(path, "postgres://", 11) == 0 ||
				strncmp(path, "postgresql://", 13) == 0);
}

int
db_exists(const char *path, char *err, size_t errlen)
{
	if (db_is_url(path))
		return db_pg_exists(path, err, errlen);
	return access(path, F_OK) == 0;
}

int64_t
db_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
db_failf(struct db *db, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(db->errmsg, sizeof(db->errmsg), fmt, ap);
	va_end(ap);
	return DB_ERR;
}

int
db_fail(struct db *db, int rc, const char *what)
{
	int prim = rc & 0xff;

	snprintf(db->errmsg, sizeof(db->errmsg), "%s: %s (%d)", what,
		 db->conn ? sqlite3_errmsg(db->conn) : sqlite3_errstr(rc), rc);
	if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED)
		return DB_BUSY;
	return DB_ERR;
}

void
db_col_text(sqlite3_stmt *st, int col, char *dst, size_t n)
{
	const unsigned char *s = sqlite3_column_text(st, col);
	size_t len = s ? (size_t)sqlite3_column_bytes(st, col) : 0;

	if (len >= n)
		len = n - 1;
	if (len)
		memcpy(dst, s, len);
	dst[len] = '\0';
}

sqlite3_stmt *
db_stmt(struct db *db, enum db_stmt_id id)
{
	sqlite3_stmt *st = db->st[id];
	int rc;

	if (st == NULL) {
		rc = sqlite3_prepare_v3(db->conn, db_stmt_sql[id], -1,
					SQLITE_PREPARE_PERSISTENT, &st, NULL);
		if (rc != SQLITE_OK) {
			db_fail(db, rc, "prepare");
			return NULL;
		}
		db->st[id] = st;
	} else {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
	/* Transaction control is bookkeeping, not a query. */
	if (id > ST_ROLLBACK)
		db->queries++;
	return st;
}

/*
 * The busy handler.  SQLite's default one sleeps up to 100 ms between
 * tries, which turns a sub-millisecond write-lock wait into a latency
 * spike; writers here hold the lock for well under a millisecond, so poll
 * often at first and back off to 2 ms, until the timeout.
 */
static int
db_busy_cb(void *arg, int n)
{
	struct db *db = arg;
	uint64_t now = hs_now_ns(), limit, sleep_ns;
	struct timespec ts;

	if (n == 0)
		db->busy_start_ns = now;
	limit = (uint64_t)db->busy_timeout_ms * 1000000ull;
	if (now - db->busy_start_ns >= limit)
		return 0;
	sleep_ns = n < 40 ? 50000ull * (uint64_t)(n + 1) : 2000000ull;
	if (sleep_ns > 2000000ull)
		sleep_ns = 2000000ull;
	/* A little jitter so that waiting processes do not retry in step. */
	sleep_ns += (now >> 10) % 50000ull;
	if (sleep_ns > limit - (now - db->busy_start_ns))
		sleep_ns = limit - (now - db->busy_start_ns);
	ts.tv_sec = (time_t)(sleep_ns / 1000000000ull);
	ts.tv_nsec = (long)(sleep_ns % 1000000000ull);
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
	return 1;
}

static int
db_exec(struct db *db, const char *sql, const char *what)
{
	int rc = sqlite3_exec(db->conn, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? DB_OK : db_fail(db, rc, what);
}

/* Runs a one-row, one-integer statement (a pragma or a count). */
static int
db_exec_int(struct db *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *st = NULL;
	int rc, res = DB_OK;

	rc = sqlite3_prepare_v2(db->conn, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_fail(db, rc, sql);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		*out = 0;
	else
		res = db_fail(db, rc, sql);
	sqlite3_finalize(st);
	return res;
}

static int
db_has_column(struct db *db, const char *table, const char *column, int *has)
{
	sqlite3_stmt *st = NULL;
	int rc, res = DB_OK;

	rc = sqlite3_prepare_v2(
		db->conn, "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2",
		-1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_fail(db, rc, "table_info");
	sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, column, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*has = 1;
	else if (rc == SQLITE_DONE)
		*has = 0;
	else
		res = db_fail(db, rc, "table_info");
	sqlite3_finalize(st);
	return res;
}

/* Version 0 -> 1: tables (adding columns an older file lacks), indexes. */
static int
db_migrate_v1(struct db *db)
{
	char sql[256];
	size_t i;
	int has = 0, res;

	if ((res = db_exec(db, db_schema_tables_sql, "create tables")) != DB_OK)
		return res;
	for (i = 0; i < sizeof(db_v1_columns) / sizeof(db_v1_columns[0]); i++) {
		res = db_has_column(db, db_v1_columns[i].table,
				    db_v1_columns[i].column, &has);
		if (res != DB_OK)
			return res;
		if (has)
			continue;
		/* Identifiers come from the constant table above, never from data. */
		snprintf(sql, sizeof(sql), "ALTER TABLE %s ADD COLUMN %s",
			 db_v1_columns[i].table, db_v1_columns[i].decl);
		if ((res = db_exec(db, sql, "add column")) != DB_OK)
			return res;
	}
	return db_exec(db, db_schema_indexes_sql, "create indexes");
}

/*
 * Brings the file to DB_SCHEMA_VERSION.  The version is read again under
 * the write lock, so when several processes open a fresh file at once one
 * migrates and the others find the work done.
 */
static int
db_migrate(struct db *db)
{
	int64_t ver;
	char sql[64];
	int res;

	if ((res = db_exec_int(db, "PRAGMA user_version", &ver)) != DB_OK)
		return res;
	if (ver == DB_SCHEMA_VERSION)
		return DB_OK;
	if ((res = db_exec(db, "BEGIN IMMEDIATE", "begin migration")) != DB_OK)
		return res;
	if ((res = db_exec_int(db, "PRAGMA user_version", &ver)) != DB_OK)
		goto fail;
	if (ver > DB_SCHEMA_VERSION) {
		res = db_failf(db,
			       "database schema version %lld is newer than "
			       "this program's (%d)",
			       (long long)ver, DB_SCHEMA_VERSION);
		goto fail;
	}
	if (ver < 1 && (res = db_migrate_v1(db)) != DB_OK)
		goto fail;
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d",
		 DB_SCHEMA_VERSION);
	if ((res = db_exec(db, sql, "set user_version")) != DB_OK)
		goto fail;
	if ((res = db_exec(db, "COMMIT", "commit migration")) != DB_OK)
		goto fail;
	return DB_OK;
fail:
	if (!sqlite3_get_autocommit(db->conn))
		sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
	return res;
}

/*
 * Switches to WAL unless the file already is (the mode is stored in the
 * file).  When several processes open a new file at once, the switch can
 * fail with SQLITE_BUSY without calling the busy handler (SQLite will not
 * wait on a lock another connection holds while it waits for ours), so
 * it is retried every 2 ms up to the busy timeout.
 */
static int
db_set_wal(struct db *db)
{
	sqlite3_stmt *st = NULL;
	const unsigned char *mode;
	uint64_t deadline =
		hs_now_ns() + (uint64_t)db->busy_timeout_ms * 1000000ull;
	struct timespec ts = { 0, 2 * 1000 * 1000 };
	int rc, res = DB_OK;

	rc = sqlite3_prepare_v2(db->conn, "PRAGMA journal_mode = WAL", -1, &st,
				NULL);
	if (rc != SQLITE_OK)
		return db_fail(db, rc, "journal_mode");
	while ((rc = sqlite3_step(st)) != SQLITE_ROW &&
	       ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) &&
	       hs_now_ns() < deadline) {
		sqlite3_reset(st);
		nanosleep(&ts, NULL);
	}
	if (rc != SQLITE_ROW) {
		res = db_fail(db, rc, "journal_mode");
	} else {
		mode = sqlite3_column_text(st, 0);
		if (mode == NULL || strcmp((const char *)mode, "wal") != 0)
			res = db_failf(db,
				       "cannot switch to WAL (journal mode "
				       "is %s)",
				       mode ? (const char *)mode : "?");
	}
	sqlite3_finalize(st);
	return res;
}

struct db *
db_open(const char *path, int flags, int busy_timeout_ms, char *err,
	size_t errlen)
{
	struct db *db = hs_xcalloc(1, sizeof(*db));
	int oflags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
	int rc;

	db->busy_timeout_ms = busy_timeout_ms > 0 ? busy_timeout_ms : 5000;
	if (db_is_url(path)) {
		if (db_pg_open(db, path, flags, db->busy_timeout_ms) != DB_OK)
			goto fail;
		return db;
	}
	if (flags & DB_OPEN_CREATE)
		oflags |= SQLITE_OPEN_CREATE;
	rc = sqlite3_open_v2(path, &db->conn, oflags, NULL);
	if (rc != SQLITE_OK) {
		db_fail(db, rc, path);
		goto fail;
	}
	sqlite3_extended_result_codes(db->conn, 1);
	sqlite3_busy_handler(db->conn, db_busy_cb, db);
	/*
	 * No mmap: in WAL mode a connection that sees another's commit drops
	 * its view of the file, and with mmap that is a munmap of the whole
	 * mapping (TLB shootdowns, then page faults to map it again).  Under
	 * the update mix with two server processes that tripled the server's
	 * CPU per request (715 vs 290 us, measured side by side); reads through
	 * the page cache cost about the same as mmap on a single server.
	 */
	/*
	 * In WAL mode NORMAL syncs only at checkpoints: a commit survives a
	 * crash of the process but the last ones may be lost with the
	 * machine; FULL syncs the WAL at every commit (README, "Durability").
	 */
	if (db_exec(db,
		    (flags & DB_OPEN_SYNC_FULL) ? "PRAGMA synchronous = FULL"
						: "PRAGMA synchronous = NORMAL",
		    path) != DB_OK)
		goto fail;
	if (db_exec(db,
		    "PRAGMA foreign_keys = OFF;"
		    "PRAGMA temp_store = MEMORY;"
		    "PRAGMA cache_size = -16384;"
		    "PRAGMA mmap_size = 0;",
		    path) != DB_OK)
		goto fail;
	if (db_set_wal(db) != DB_OK)
		goto fail;
	if (db_migrate(db) != DB_OK)
		goto fail;
	return db;
fail:
	if (err && errlen)
		snprintf(err, errlen, "%s", db->errmsg);
	db_close(db);
	return NULL;
}

int
db_check(struct db *db)
{
	int moved = 0, rc;

	if (db->ops)
		return db->ops->check(db);
	db->checked_ns = hs_now_ns();
	/* One stat(2) of the path, compared with the inode open (unix VFS). */
	rc = sqlite3_file_control(db->conn, "main", SQLITE_FCNTL_HAS_MOVED,
				  &moved);
	if (rc != SQLITE_OK)
		return db_fail(db, rc, "has moved");
	if (!moved)
		return DB_OK;
	snprintf(db->errmsg, sizeof(db->errmsg),
		 "the database file %s was deleted or replaced under this "
		 "connection",
		 sqlite3_db_filename(db->conn, "main"));
	return DB_MOVED;
}

int
db_check_due(struct db *db)
{
	if (hs_now_ns() - db->checked_ns < 1000000000ull)
		return DB_OK;
	return db_check(db);
}

int
db_synchronous(struct db *db)
{
	int64_t v;

	if (db->ops)
		return db->ops->synchronous(db);
	return db_exec_int(db, "PRAGMA synchronous", &v) == DB_OK ? (int)v : -1;
}

void
db_close(struct db *db)
{
	int i;

	if (db == NULL)
		return;
	if (db->ops)
		db->ops->close(db);
	for (i = 0; i < ST_COUNT_; i++)
		sqlite3_finalize(db->st[i]);
	sqlite3_close_v2(db->conn);
	free(db);
}

const char *
db_errmsg(const struct db *db)
{
	return db->errmsg;
}

uint64_t
db_queries(const struct db *db)
{
	return db->queries;
}

uint64_t
db_time_ns(const struct db *db)
{
	return db->time_ns;
}
