/*
 * Deterministic seeding.  One PRNG (hs_rng.h) drives every value, so the
 * same scale and seed give the same rows byte for byte.  The file is built
 * beside its final path with journaling and syncing off, in one
 * transaction, secondary indexes created after the bulk load; then it is
 * switched to WAL, synced, and linked into place atomically.
 *
 * Reviews are inserted product by product, so a product's reviews sit
 * together in the table (as a clustered store would keep them) and the
 * detail and top-list queries touch few pages.  Review counts per product
 * are skewed (a few popular products, a tail with none) and each product
 * has its own quality, so averages differ and a top list means something.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db_internal.h"
#include "hs_rng.h"
#include "hs_util.h"

#define SEED_DEFAULT 0x68616d6d65727374ull  /* "hammerst" */
#define SEED_BASE_MS 1672531200000ll        /* 2023-01-01T00:00:00Z */
#define SEED_SPAN_MS (730ll * 86400 * 1000) /* two years of history */

struct seed_word {
	const char *s;
	size_t len;
};
#define W(x)                     \
	{                        \
		x, sizeof(x) - 1 \
	}

static const struct seed_word seed_adjectives[] = {
	W("Ergonomic"), W("Rustic"),    W("Sleek"),      W("Compact"),
	W("Durable"),   W("Handmade"),  W("Vintage"),    W("Modern"),
	W("Classic"),   W("Portable"),  W("Heavy-Duty"), W("Lightweight"),
	W("Premium"),   W("Essential"), W("Deluxe"),     W("Smart"),
	W("Quiet"),     W("Foldable"),  W("Waterproof"), W("Wireless"),
	W("Organic"),   W("Recycled"),  W("Minimalist"), W("Professional"),
	W("Elegant"),   W("Sturdy"),    W("Cozy"),       W("Bold"),
	W("Bright"),    W("Gentle"),    W("Rugged"),     W("Refined"),
};
static const struct seed_word seed_materials[] = {
	W("Steel"),   W("Oak"),      W("Bamboo"),   W("Cotton"),
	W("Leather"), W("Ceramic"),  W("Glass"),    W("Copper"),
	W("Wool"),    W("Linen"),    W("Aluminum"), W("Walnut"),
	W("Granite"), W("Silicone"), W("Carbon"),   W("Marble"),
};
static const struct seed_word seed_nouns[] = {
	W("Chair"),      W("Lamp"),     W("Kettle"),  W("Backpack"),
	W("Desk"),       W("Mug"),      W("Blanket"), W("Speaker"),
	W("Knife"),      W("Bottle"),   W("Jacket"),  W("Clock"),
	W("Pillow"),     W("Shelf"),    W("Pan"),     W("Notebook"),
	W("Headphones"), W("Keyboard"), W("Tent"),    W("Bench"),
	W("Vase"),       W("Rug"),      W("Watch"),   W("Wallet"),
	W("Umbrella"),   W("Toaster"),  W("Stool"),   W("Basket"),
	W("Mirror"),     W("Grinder"),  W("Planter"), W("Sofa"),
};
static const struct seed_word seed_departments[] = {
	W("Kitchen"),  W("Garden"),  W("Office"),  W("Outdoor"),
	W("Home"),     W("Travel"),  W("Audio"),   W("Bath"),
	W("Workshop"), W("Studio"),  W("Camping"), W("Dining"),
	W("Bedroom"),  W("Fitness"), W("Pet"),     W("Kids"),
};
static const struct seed_word seed_words[] = {
	W("the"),          W("it"),        W("works"),       W("well"),
	W("quality"),      W("price"),     W("for"),         W("and"),
	W("very"),         W("really"),    W("not"),         W("quite"),
	W("after"),        W("a"),         W("week"),        W("month"),
	W("of"),           W("use"),       W("arrived"),     W("quickly"),
	W("packaging"),    W("was"),       W("fine"),        W("broke"),
	W("feels"),        W("solid"),     W("cheap"),       W("looks"),
	W("great"),        W("size"),      W("smaller"),     W("larger"),
	W("than"),         W("expected"),  W("would"),       W("buy"),
	W("again"),        W("recommend"), W("this"),        W("to"),
	W("friends"),      W("color"),     W("matches"),     W("photos"),
	W("instructions"), W("were"),      W("clear"),       W("confusing"),
	W("assembly"),     W("took"),      W("minutes"),     W("hours"),
	W("my"),           W("family"),    W("loves"),       W("daily"),
	W("sturdy"),       W("flimsy"),    W("comfortable"), W("noisy"),
	W("silent"),       W("battery"),   W("lasts"),       W("long"),
	W("short"),        W("value"),     W("money"),       W("but"),
	W("so"),           W("overall"),   W("happy"),       W("disappointed"),
	W("returned"),     W("kept"),      W("gift"),        W("perfect"),
	W("okay"),         W("good"),      W("bad"),         W("design"),
	W("finish"),       W("material"),  W("smell"),       W("easy"),
	W("clean"),        W("hard"),      W("handle"),      W("light"),
	W("heavy"),        W("support"),   W("helpful"),     W("slow"),
	W("fast"),         W("shipping"),  W("exactly"),     W("described"),
	W("better"),       W("worse"),     W("sturdier"),    W("durable"),
	W("stylish"),      W("practical"), W("every"),       W("day"),
	W("kitchen"),      W("office"),    W("travel"),      W("outdoors"),
	W("home"),         W("still"),     W("working"),     W("stopped"),
	W("fits"),         W("perfectly"), W("loose"),       W("tight"),
	W("soft"),         W("warm"),      W("cold"),        W("bright"),
	W("dim"),          W("worth"),     W("every"),       W("penny"),
	W("bit"),          W("more"),      W("less"),        W("than"),
	W("hoped"),
};
/* A first sentence that agrees with the rating. */
static const struct seed_word seed_openers[5][3] = {
	{ W("Terrible."), W("Do not buy."), W("Broken on arrival.") },
	{ W("Disappointing."), W("Not great."), W("Expected more.") },
	{ W("It is okay."), W("Average."), W("Does the job.") },
	{ W("Good product."), W("Pretty good."), W("Happy with it.") },
	{ W("Excellent!"), W("Love it!"), W("Five stars.") },
};
#undef W

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* A tiny append-only text buffer on the stack. */
struct seed_text {
	char buf[1024];
	size_t len;
};

static void
text_add(struct seed_text *t, const char *s, size_t len)
{
	if (t->len + len + 1 >= sizeof(t->buf))
		return;
	memcpy(t->buf + t->len, s, len);
	t->len += len;
	t->buf[t->len] = '\0';
}

static void
text_word(struct seed_text *t, uint64_t *r, const struct seed_word *list,
	  size_t n)
{
	const struct seed_word *w = &list[hs_rng_below(r, (uint32_t)n)];

	if (t->len)
		text_add(t, " ", 1);
	text_add(t, w->s, w->len);
}

/* nwords lowercase words ending with a full stop. */
static void
text_sentence(struct seed_text *t, uint64_t *r, int nwords)
{
	int i;

	for (i = 0; i < nwords; i++)
		text_word(t, r, seed_words, NELEM(seed_words));
	text_add(t, ".", 1);
}

struct seed_ctx {
	struct db *db; /* where errors are recorded */
	const struct db_seed_sink *sink;
	uint64_t rng;
	const struct db_seed_opts *o;
	int64_t ncat, nprod, nrev;
};

static void
seed_progress(struct seed_ctx *c, const char *phase, double frac)
{
	if (c->o && c->o->progress)
		c->o->progress(c->o->arg, phase, frac);
}

static int64_t
seed_count(double base, double scale)
{
	double v = base * scale + 0.5;

	return v < 1.0 ? 1 : (int64_t)v;
}

static int
seed_categories(struct seed_ctx *c)
{
	struct seed_text t;
	int64_t i;
	int res = DB_OK;

	for (i = 1; i <= c->ncat && res == DB_OK; i++) {
		t.len = 0;
		t.buf[0] = '\0';
		text_word(&t, &c->rng, seed_adjectives, NELEM(seed_adjectives));
		text_word(&t, &c->rng, seed_departments,
			  NELEM(seed_departments));
		res = c->sink->category(c->sink->arg, i, t.buf, t.len);
	}
	seed_progress(c, "categories", 1.0);
	return res;
}

/*
 * How many reviews each product gets: weights with a long tail (a few
 * products get ~60x the median) and about 5% of products with none; the
 * counts are rounded cumulatively so they sum to exactly nrev.
 */
static uint32_t *
seed_review_counts(struct seed_ctx *c)
{
	uint32_t *w = hs_xcalloc((size_t)c->nprod, sizeof(*w));
	unsigned __int128 total = 0, cum = 0;
	uint64_t prev = 0, next;
	int64_t i;

	for (i = 0; i < c->nprod; i++) {
		if (hs_rng_below(&c->rng, 100) < 5)
			w[i] = 0;
		else
			w[i] = 8 + 1000 / (1 + hs_rng_below(&c->rng, 1000));
		total += w[i];
	}
	if (total == 0) {
		w[0] = 1;
		total = 1;
	}
	for (i = 0; i < c->nprod; i++) {
		cum += w[i];
		next = (uint64_t)(cum * (unsigned __int128)c->nrev / total);
		w[i] = (uint32_t)(next - prev);
		prev = next;
	}
	return w;
}

/*
 * Generates product id with its random fields.  The draws happen in
 * statement order (category, name, description, price, stock, time):
 * that order is the data.
 */
static int
seed_product(struct seed_ctx *c, int64_t id)
{
	struct db_seed_row_product p;
	struct seed_text name, desc;

	name.len = 0;
	name.buf[0] = '\0';
	desc.len = 0;
	desc.buf[0] = '\0';
	p.id = id;
	p.category_id = 1 + hs_rng_below(&c->rng, (uint32_t)c->ncat);
	text_word(&name, &c->rng, seed_adjectives, NELEM(seed_adjectives));
	text_word(&name, &c->rng, seed_materials, NELEM(seed_materials));
	text_word(&name, &c->rng, seed_nouns, NELEM(seed_nouns));
	text_sentence(&desc, &c->rng, 8 + (int)hs_rng_below(&c->rng, 12));
	text_sentence(&desc, &c->rng, 6 + (int)hs_rng_below(&c->rng, 10));
	desc.buf[0] = (char)(desc.buf[0] - 'a' + 'A');
	/* $0.99 .. $999.99, most of them cheap. */
	p.price_cents =
		100ll * (1 + hs_rng_below(&c->rng,
					  1 + hs_rng_below(&c->rng, 1000))) -
		1;
	p.stock =
		hs_rng_below(&c->rng, 20) == 0 ? 0 : hs_rng_below(&c->rng, 500);
	p.updated_at =
		SEED_BASE_MS + (int64_t)(hs_rng_next(&c->rng) % SEED_SPAN_MS);
	p.name = name.buf;
	p.name_len = name.len;
	p.description = desc.buf;
	p.description_len = desc.len;
	return c->sink->product(c->sink->arg, &p);
}

/* Generates n reviews of product id; *rid is the last review id used. */
static int
seed_reviews(struct seed_ctx *c, int64_t id, uint32_t n, int64_t *rid)
{
	struct db_seed_row_review r;
	struct seed_text t;
	uint32_t quality, k;
	int rating, j, res = DB_OK;

	/*
	 * Quality in permille (69..900), skewed towards good products; a
	 * rating is 1 + four Bernoulli(quality) draws, so a product's mean
	 * rating is 1 + 4 * quality.  (The product of two draws does not
	 * depend on which the compiler evaluates first.)
	 */
	quality = 900 - hs_rng_below(&c->rng, 1000) *
				hs_rng_below(&c->rng, 1000) / 1200;
	for (k = 0; k < n && res == DB_OK; k++) {
		rating = 1;
		for (j = 0; j < 4; j++)
			rating += hs_rng_below(&c->rng, 1000) < quality;
		t.len = 0;
		t.buf[0] = '\0';
		text_word(&t, &c->rng, seed_openers[rating - 1], 3);
		text_sentence(&t, &c->rng, 3 + (int)hs_rng_below(&c->rng, 10));
		r.id = ++*rid;
		r.product_id = id;
		r.rating = rating;
		r.body = t.buf;
		r.body_len = t.len;
		r.created_at = SEED_BASE_MS +
			       (int64_t)(hs_rng_next(&c->rng) % SEED_SPAN_MS);
		res = c->sink->review(c->sink->arg, &r);
	}
	return res;
}

/* Products, each followed by its reviews (so they sit together). */
static int
seed_products(struct seed_ctx *c)
{
	uint32_t *nrev = NULL;
	int64_t id, rid = 0, step, next_report;
	int res = DB_OK;

	nrev = seed_review_counts(c);
	step = c->nprod / 100 > 0 ? c->nprod / 100 : 1;
	next_report = step;
	for (id = 1; id <= c->nprod && res == DB_OK; id++) {
		res = seed_product(c, id);
		if (res == DB_OK)
			res = seed_reviews(c, id, nrev[id - 1], &rid);
		if (id >= next_report) {
			seed_progress(c, "products and reviews",
				      (double)id / (double)c->nprod);
			next_report += step;
		}
	}
	free(nrev);
	return res;
}

static int
seed_world(struct seed_ctx *c)
{
	int i, res = DB_OK;

	for (i = 1; i <= DB_WORLD_ROWS && res == DB_OK; i++)
		res = c->sink->world(c->sink->arg, i,
				     1 + (int32_t)hs_rng_below(&c->rng, 10000));
	seed_progress(c, "world", 1.0);
	return res;
}

int
db_seed_generate(const struct db_seed_opts *o, const struct db_seed_sink *sink,
		 struct db *errdb)
{
	double scale = o && o->scale != 0 ? o->scale : 1.0;
	struct seed_ctx c;
	int res;

	memset(&c, 0, sizeof(c));
	c.db = errdb;
	c.sink = sink;
	c.o = o;
	c.rng = o && o->seed ? o->seed : SEED_DEFAULT;
	c.ncat = seed_count(100, scale);
	c.nprod = seed_count(100000, scale);
	c.nrev = seed_count(1000000, scale);
	res = seed_categories(&c);
	if (res == DB_OK)
		res = seed_products(&c);
	if (res == DB_OK)
		res = seed_world(&c);
	return res;
}

/* The SQLite sink: one prepared INSERT per table. */
struct seed_sq {
	struct db *db;
	sqlite3_stmt *cat, *prod, *rev, *world;
};

static sqlite3_stmt *
seed_prepare(struct db *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db->conn, sql, -1, &st, NULL);

	if (rc != SQLITE_OK) {
		db_fail(db, rc, "prepare");
		return NULL;
	}
	return st;
}

static int
seed_step(struct db *db, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE ? DB_OK : db_fail(db, rc, what);
}

static int
sq_category(void *arg, int64_t id, const char *name, size_t len)
{
	struct seed_sq *q = arg;

	sqlite3_bind_int64(q->cat, 1, id);
	sqlite3_bind_text(q->cat, 2, name, (int)len, SQLITE_STATIC);
	return seed_step(q->db, q->cat, "insert category");
}

static int
sq_product(void *arg, const struct db_seed_row_product *p)
{
	struct seed_sq *q = arg;

	sqlite3_bind_int64(q->prod, 1, p->id);
	sqlite3_bind_int64(q->prod, 2, p->category_id);
	sqlite3_bind_text(q->prod, 3, p->name, (int)p->name_len, SQLITE_STATIC);
	sqlite3_bind_text(q->prod, 4, p->description, (int)p->description_len,
			  SQLITE_STATIC);
	sqlite3_bind_int64(q->prod, 5, p->price_cents);
	sqlite3_bind_int64(q->prod, 6, p->stock);
	sqlite3_bind_int64(q->prod, 7, p->updated_at);
	return seed_step(q->db, q->prod, "insert product");
}

static int
sq_review(void *arg, const struct db_seed_row_review *r)
{
	struct seed_sq *q = arg;

	sqlite3_bind_int64(q->rev, 1, r->id);
	sqlite3_bind_int64(q->rev, 2, r->product_id);
	sqlite3_bind_int(q->rev, 3, r->rating);
	sqlite3_bind_text(q->rev, 4, r->body, (int)r->body_len, SQLITE_STATIC);
	sqlite3_bind_int64(q->rev, 5, r->created_at);
	return seed_step(q->db, q->rev, "insert review");
}

static int
sq_world(void *arg, int32_t id, int32_t random_number)
{
	struct seed_sq *q = arg;

	sqlite3_bind_int(q->world, 1, id);
	sqlite3_bind_int(q->world, 2, random_number);
	return seed_step(q->db, q->world, "insert world");
}

/* Generates every row into the open temp file through prepared INSERTs. */
static int
seed_rows_sqlite(struct seed_ctx *c)
{
	struct seed_sq q = { .db = c->db };
	struct db_seed_sink sink = {
		.category = sq_category,
		.product = sq_product,
		.review = sq_review,
		.world = sq_world,
		.arg = &q,
	};
	int res = DB_ERR;

	q.cat = seed_prepare(c->db,
			     "INSERT INTO categories(id, name) VALUES (?1, ?2)");
	q.prod = seed_prepare(
		c->db,
		"INSERT INTO products(id, category_id, name, description,"
		" price_cents, stock, version, updated_at)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7)");
	q.rev = seed_prepare(
		c->db,
		"INSERT INTO reviews(id, product_id, rating, body, created_at)"
		" VALUES (?1, ?2, ?3, ?4, ?5)");
	q.world = seed_prepare(
		c->db, "INSERT INTO world(id, randomNumber) VALUES (?1, ?2)");
	if (q.cat && q.prod && q.rev && q.world)
		res = db_seed_generate(c->o, &sink, c->db);
	sqlite3_finalize(q.cat);
	sqlite3_finalize(q.prod);
	sqlite3_finalize(q.rev);
	sqlite3_finalize(q.world);
	return res;
}

static int
seed_exec(struct seed_ctx *c, const char *sql, const char *what)
{
	int rc = sqlite3_exec(c->db->conn, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? DB_OK : db_fail(c->db, rc, what);
}

/* Fills the (empty) file at tmp. */
static int
seed_fill(struct seed_ctx *c, const char *tmp)
{
	char sql[64];
	int rc, res;

	rc = sqlite3_open_v2(tmp, &c->db->conn,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		res = db_fail(c->db, rc, tmp);
		sqlite3_close_v2(c->db->conn);
		c->db->conn = NULL;
		return res;
	}
	/*
	 * Nobody else can see this file yet and a crash just leaves a temp
	 * file behind, so durability is switched off while loading; the file
	 * is synced once at the end.
	 */
	res = seed_exec(c,
			"PRAGMA journal_mode = OFF;"
			"PRAGMA synchronous = OFF;"
			"PRAGMA locking_mode = EXCLUSIVE;"
			"PRAGMA temp_store = MEMORY;"
			"PRAGMA cache_size = -262144;",
			"pragmas");
	if (res == DB_OK)
		res = seed_exec(c, "BEGIN", "begin");
	if (res == DB_OK)
		res = seed_exec(c, db_schema_tables_sql, "create tables");
	if (res == DB_OK)
		res = seed_rows_sqlite(c);
	if (res == DB_OK) {
		seed_progress(c, "indexes", 0.0);
		res = seed_exec(c, db_schema_indexes_sql, "create indexes");
	}
	if (res == DB_OK) {
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d",
			 DB_SCHEMA_VERSION);
		res = seed_exec(c, sql, "user_version");
	}
	if (res == DB_OK)
		res = seed_exec(c, "COMMIT", "commit");
	if (res == DB_OK)
		seed_progress(c, "indexes", 1.0);
	sqlite3_close_v2(c->db->conn);
	c->db->conn = NULL;
	return res;
}

/* Syncs the directory holding path, so that a new link survives a crash. */
static void
seed_sync_dir(const char *path)
{
	char *copy = hs_xstrdup(path);
	int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(copy);
}

/*
 * Before replacing a database servers may have open: takes its write lock
 * (waiting for a commit in progress), so that no writer can commit
 * between the swap and its own check that the file at the path is still
 * the one it has open (db_end checks under this lock).  Best effort:
 * NULL when the old file cannot be opened or locked, and the swap goes
 * on without it.
 */
static sqlite3 *
seed_fence(const char *path)
{
	sqlite3 *s = NULL;

	if (sqlite3_open_v2(path, &s, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_busy_timeout(s, 5000);
	if (sqlite3_exec(s, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	return s;
fail:
	sqlite3_close_v2(s);
	return NULL;
}

/*
 * Releases the fence once the new file is in place.  Its -wal and -shm
 * names now belong to the new file: a persistent WAL keeps SQLite from
 * unlinking them by name when this, maybe the last, connection closes.
 */
static void
seed_fence_release(sqlite3 *s)
{
	int persist = 1;

	if (s == NULL)
		return;
	sqlite3_file_control(s, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
	sqlite3_exec(s, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close_v2(s);
}

/*
 * Puts the finished file tmp at path: renamed over it when replacing,
 * else link()ed, which fails rather than overwrite a file another process
 * put there meanwhile.  Sets *linked when tmp now is path.
 */
static int
seed_install(struct db *scratch, const char *path, const char *tmp, int replace,
	     int *linked)
{
	size_t len = strlen(path) + 8;
	char *side = hs_xmalloc(len);
	struct stat sb;
	sqlite3 *fence = replace ? seed_fence(path) : NULL;
	int res = DB_OK;

	/*
	 * A -wal or -shm file left from an older database at this path
	 * would be replayed into the new one; remove them first.  When not
	 * replacing, only do so if the database itself is gone (so it is
	 * not in use).
	 */
	if (replace || stat(path, &sb) != 0) {
		snprintf(side, len, "%s-wal", path);
		unlink(side);
		snprintf(side, len, "%s-shm", path);
		unlink(side);
	}
	if (replace) {
		if (rename(tmp, path) == 0)
			*linked = 1;
		else
			res = db_failf(scratch, "rename to %s: %s", path,
				       strerror(errno));
	} else if (link(tmp, path) == 0) {
		*linked = 1;
	} else if (errno != EEXIST) {
		res = db_failf(scratch, "link to %s: %s", path,
			       strerror(errno));
	}
	/*
	 * EEXIST: another process seeded the same path meanwhile, and its
	 * file is as complete as ours; keep it (the caller drops ours).
	 */
	if (res == DB_OK)
		seed_sync_dir(path);
	seed_fence_release(fence);
	free(side);
	return res;
}

static int
seed_file(const char *path, const struct db_seed_opts *o, int replace,
	  char *err, size_t errlen)
{
	struct db scratch;
	struct seed_ctx c;
	struct db *check = NULL;
	struct stat sb;
	char *tmp = NULL;
	size_t tlen = strlen(path) + 16;
	double scale = o && o->scale != 0 ? o->scale : 1.0;
	int fd = -1, res = DB_ERR, linked = 0;
	char cerr[256];

	memset(&scratch, 0, sizeof(scratch));
	memset(&c, 0, sizeof(c));
	c.db = &scratch;
	c.o = o;
	if (!(scale > 0 && scale <= 1000)) {
		db_failf(&scratch, "scale %g out of range (0, 1000]", scale);
		goto out;
	}
	if (db_is_url(path))
		return db_pg_seed(path, o, replace, err, errlen);
	if (!replace && stat(path, &sb) == 0) {
		db_failf(&scratch, "%s already exists", path);
		goto out;
	}

	tmp = hs_xmalloc(tlen);
	snprintf(tmp, tlen, "%s.seed-XXXXXX", path);
	if ((fd = mkstemp(tmp)) < 0) {
		db_failf(&scratch, "cannot create a file beside %s: %s", path,
			 strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	/* mkstemp makes it 0600; a database is as readable as any new file. */
	fchmod(fd, 0644);
	if ((res = seed_fill(&c, tmp)) != DB_OK)
		goto out;

	/* Our own opener switches it to WAL and checks the schema. */
	seed_progress(&c, "finishing", 0.0);
	if ((check = db_open(tmp, 0, 0, cerr, sizeof(cerr))) == NULL) {
		res = db_failf(&scratch, "reopening the new file: %s", cerr);
		goto out;
	}
	db_close(check);
	if (fsync(fd) != 0) {
		res = db_failf(&scratch, "fsync %s: %s", tmp, strerror(errno));
		goto out;
	}
	if ((res = seed_install(&scratch, path, tmp, replace, &linked)) !=
	    DB_OK)
		goto out;
	seed_progress(&c, "finishing", 1.0);
out:
	if (fd >= 0)
		close(fd);
	/* After a link both names point at the file; after a rename only one. */
	if (tmp && !(replace && linked))
		unlink(tmp);
	if (res != DB_OK && err && errlen)
		snprintf(err, errlen, "%s", scratch.errmsg);
	free(tmp);
	return res;
}

int
db_seed_file(const char *path, const struct db_seed_opts *o, char *err,
	     size_t errlen)
{
	return seed_file(path, o, 0, err, errlen);
}

int
db_seed_file_replace(const char *path, const struct db_seed_opts *o, char *err,
		     size_t errlen)
{
	return seed_file(path, o, 1, err, errlen);
}
