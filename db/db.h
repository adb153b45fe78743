/*
 * The SQLite data layer: schema and migrations (PRAGMA user_version),
 * deterministic seeding, and the prepared queries the server runs.
 *
 * A struct db is one connection with its prepared statements.  It is not
 * thread-safe: open one per worker thread.  Several connections, in one
 * process or many, may share one file: WAL journal, busy_timeout, and
 * BEGIN IMMEDIATE for every write, so writers queue instead of failing.
 *
 * Results: DB_OK, DB_NOTFOUND (a miss is not an error), DB_BUSY (locked
 * past the busy timeout: the caller answers 503 + Retry-After), DB_MOVED
 * (the file at the path is no longer the one this connection has open:
 * deleted, or replaced by a rename, a restore or hs-seed --force; nothing
 * was written, and the caller closes the connection and opens the path
 * again), DB_ERR (anything else: disk full, I/O error, corrupt file;
 * detail in db_errmsg()).  Output structs are filled by value and own
 * nothing.
 */
#ifndef HS_DB_H
#define HS_DB_H

#include <stddef.h>
#include <stdint.h>

struct db;

enum db_res {
	DB_OK = 0,
	DB_NOTFOUND = 1,
	DB_ERR = -1,
	DB_BUSY = -2,
	DB_MOVED = -3,
};

#define DB_SCHEMA_VERSION 1
#define DB_NAME_MAX       200   /* longest product/category name accepted */
#define DB_BODY_MAX       2000  /* longest review body accepted */
#define DB_TOP_N          10    /* products in a category top list */
#define DB_RECENT_N       5     /* newest reviews in a product detail */
#define DB_WORLD_ROWS     10000 /* TechEmpower world table, at every scale */

/* db_open flags */
#define DB_OPEN_CREATE 0x1 /* create the file if missing (schema only) */
#define DB_OPEN_SYNC_FULL \
	0x2 /* synchronous=FULL: a commit survives power
				 loss (default NORMAL: survives a crash of
				 the process, not of the machine) */

/*
 * 1 when path is a PostgreSQL URL (postgres://USER@HOST:PORT/DB or
 * postgresql://...; anything libpq accepts after the scheme), 0 when it
 * is a SQLite file.  Every function below takes either: a URL opens a
 * libpq connection with the same schema, results and guarantees (db_pg.c;
 * README, "PostgreSQL").
 */
int db_is_url(const char *path);
/*
 * 1 when a database is at path (the file exists; for a URL, the schema
 * is there), 0 when not, -1 when that cannot be told (the PostgreSQL
 * server cannot be reached; message in err).
 */
int db_exists(const char *path, char *err, size_t errlen);

/*
 * Opens path, sets WAL / busy_timeout / synchronous (NORMAL, or FULL with
 * DB_OPEN_SYNC_FULL), and migrates
 * the schema to DB_SCHEMA_VERSION under BEGIN IMMEDIATE (safe when several
 * processes open the same file at once).  busy_timeout_ms <= 0 means 5000.
 * Returns NULL with a message in err on failure.  Free with db_close().
 */
struct db *db_open(const char *path, int flags, int busy_timeout_ms, char *err,
		   size_t errlen);
/*
 * Finalizes every statement and closes.  db_close(NULL) is a no-op.  (On
 * a connection whose file was replaced SQLite skips the checkpoint and
 * leaves the -wal and -shm names alone: they may be the new file's.)
 */
void db_close(struct db *db);
/*
 * DB_OK while the file at the connection's path is the one it has open,
 * DB_MOVED once it was deleted or replaced (one stat(2); every write
 * transaction runs this check under the write lock, just before COMMIT,
 * and reads at most once a second).
 */
int db_check(struct db *db);
/* PRAGMA synchronous as set on this connection: 1 NORMAL, 2 FULL; -1 on error. */
int db_synchronous(struct db *db);
/* The last error message on this connection (borrowed, valid until the next call). */
const char *db_errmsg(const struct db *db);

/* Queries run and time spent in them on this connection, monotonic. */
uint64_t db_queries(const struct db *db);
uint64_t db_time_ns(const struct db *db);

struct db_counts {
	int64_t categories, products, reviews, world;
};
int db_counts(struct db *db, struct db_counts *out);

/*
 * Seeding.  At scale S: round(100*S) categories, round(100000*S) products,
 * round(1000000*S) reviews (each at least 1), and always DB_WORLD_ROWS
 * world rows.  Same scale and seed give the same rows, byte for byte.
 * progress (may be NULL) is called now and then with a phase name and the
 * fraction done.
 */
struct db_seed_opts {
	double scale;  /* default 1.0 */
	uint64_t seed; /* PRNG seed; 0 means the fixed default */
	void (*progress)(void *arg, const char *phase, double frac);
	void *arg;
};
/*
 * Creates path and seeds it.  Writes to a temporary file beside path and
 * renames it into place, so a reader never sees a half-seeded database and
 * two processes racing to seed the same path both end with a good file.
 * Fails (DB_ERR) if path exists.  If another process puts a database at
 * path while this one is seeding, that file is kept, ours is dropped, and
 * the result is DB_OK (path holds a complete database either way).
 */
int db_seed_file(const char *path, const struct db_seed_opts *o, char *err,
		 size_t errlen);
/*
 * Like db_seed_file, but atomically replaces a database already at path
 * (and removes its -wal/-shm files), holding the old file's write lock
 * meanwhile: connections still on the old file get DB_MOVED for every
 * write from then on, and must reopen the path.
 */
int db_seed_file_replace(const char *path, const struct db_seed_opts *o,
			 char *err, size_t errlen);

/* Timestamps are Unix milliseconds. */
struct db_product {
	int64_t id, category_id, price_cents, stock, version, updated_at;
	char name[DB_NAME_MAX + 1];
	char description[1024];
};

struct db_review {
	int64_t id, product_id, created_at;
	int rating;
	char body[DB_BODY_MAX + 1];
};

struct db_review_summary {
	int64_t count;
	double average;       /* 0 when count is 0 */
	int64_t histogram[5]; /* histogram[r-1] = reviews with rating r */
};

struct db_product_detail {
	struct db_product product;
	struct db_review_summary summary;
	int nrecent;
	struct db_review recent[DB_RECENT_N]; /* newest first */
};

/* Product row + review summary + the DB_RECENT_N newest reviews. */
int db_product_detail(struct db *db, int64_t id, struct db_product_detail *out);

struct db_top_entry {
	int64_t product_id, price_cents, review_count;
	double average;
	char name[DB_NAME_MAX + 1];
};

struct db_category_top {
	int64_t category_id;
	char name[DB_NAME_MAX + 1];
	int n;
	struct db_top_entry top[DB_TOP_N];
};

/*
 * The DB_TOP_N best-rated products of a category: highest average rating,
 * then most reviews, then lowest id; products without reviews come last.
 * DB_NOTFOUND when the category does not exist.
 */
int db_category_top(struct db *db, int64_t category_id,
		    struct db_category_top *out);

/* Fields to change; at least one has_* set.  Values are validated by the caller. */
struct db_product_change {
	int has_name, has_price, has_stock;
	const char *name;
	int64_t price_cents, stock;
};

/*
 * Applies the change, version += 1, updated_at = now, in one BEGIN
 * IMMEDIATE transaction; *after receives the row as committed (its
 * category_id tells the caller what else to invalidate).
 */
int db_product_update(struct db *db, int64_t id,
		      const struct db_product_change *c,
		      struct db_product *after);
/*
 * Adds a review (rating 1..5) and bumps the product's version, in one
 * transaction.  *out receives the review; *category_id the product's.
 */
int db_review_add(struct db *db, int64_t product_id, int rating,
		  const char *body, struct db_review *out,
		  int64_t *category_id);
/* Deletes a product and its reviews; *category_id receives its category. */
int db_product_delete(struct db *db, int64_t id, int64_t *category_id);

/*
 * Where a PostgreSQL server is in its write-ahead log, for reads from
 * streaming replicas (hs-server --db-read).  On a primary, lsn is the WAL
 * written so far (pg_current_wal_lsn(): every commit acknowledged before
 * the call ends at or below it); on a hot standby, the WAL replayed so
 * far (pg_last_wal_replay_lsn()): a standby with lsn >= L shows every
 * commit that ended at or before L.  Both in bytes from the start of the
 * WAL.  replay_age_ms: on a standby, now() minus the commit time of the
 * last transaction replayed (-1 when none yet, or on a primary); it grows
 * while the primary is idle, so it measures lag only under writes.
 * DB_ERR on SQLite (no replicas).
 */
struct db_repl {
	int standby;
	uint64_t lsn;
	int64_t replay_age_ms;
};
int db_repl_status(struct db *db, struct db_repl *out);

/* TechEmpower: world rows have ids 1..DB_WORLD_ROWS. */
int db_world_get(struct db *db, int32_t id, int32_t *random_number);
/* Sets each ids[i] to numbers[i], all in one transaction. */
int db_world_update(struct db *db, const int32_t *ids, const int32_t *numbers,
		    int n);

#endif
