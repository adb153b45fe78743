/*
 * Reads from streaming replicas, and read-your-writes marks (see
 * srv_replica.h).
 */
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include "cache.h"
#include "hs_buf.h"
#include "hs_log.h"
#include "hs_metrics.h"
#include "hs_util.h"
#include "db.h"
#include "srv_core.h"
#include "srv_replica.h"
#include "srv_worker.h"

/* How long a replica that failed is left alone by a worker: 1 s, doubled
   for each failure in a row up to 8 s, so that a host that cannot be
   reached (each try may cost a connect timeout) is tried now and then. */
#define REPLICA_RETRY_NS    1000000000ull
#define REPLICA_RETRY_SHIFT 3
#define MARK_UNKNOWN        UINT64_MAX
/* How often a replica's distance is decided again (too_far()). */
#define FAR_CHECK_NS 1000000000ull

static uint64_t
key_slot(uint64_t kind, int64_t id)
{
	/* Fibonacci hashing: ids next to each other land far apart. */
	return (((uint64_t)id << 1 | kind) * 0x9e3779b97f4a7c15ull) >> 52;
}

uint64_t
srv_key_product(int64_t id)
{
	return key_slot(0, id);
}

uint64_t
srv_key_category(int64_t id)
{
	return key_slot(1, id);
}

static uint64_t
ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void
inc(uint64_t *p)
{
	__atomic_fetch_add(p, 1, __ATOMIC_RELAXED);
}

static void
store_max(uint64_t *p, uint64_t v)
{
	uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);

	while (cur < v &&
	       !__atomic_compare_exchange_n(p, &cur, v, 0, __ATOMIC_RELEASE,
					    __ATOMIC_RELAXED))
		;
}

/* Every worker leaves replica i alone for a while: one that found it
   failing spares the others a connect or query timeout each. */
static void
replica_skip(struct srv_worker *w, int i)
{
	struct srv_replica *rep = &w->srv->reps->r[i];
	unsigned fails = __atomic_fetch_add(&rep->fails, 1, __ATOMIC_RELAXED);
	unsigned shift =
		fails < REPLICA_RETRY_SHIFT ? fails : REPLICA_RETRY_SHIFT;

	__atomic_store_n(&rep->down_until_ns,
			 hs_now_ns() + (REPLICA_RETRY_NS << shift),
			 __ATOMIC_RELAXED);
}

static int
replica_down(struct srv_worker *w, int i, uint64_t now)
{
	return ld(&w->srv->reps->r[i].down_until_ns) > now;
}

/* The worker's connection to replica i, opened on first use; NULL (and
   the replica skipped for a while) when it cannot be opened. */
static struct db *
replica_db(struct srv_worker *w, int i)
{
	struct srv_replica *rep = &w->srv->reps->r[i];
	char err[256];

	if (w->rdb[i] != NULL)
		return w->rdb[i];
	w->rdb[i] = db_open(rep->url, 0, w->srv->cfg.busy_timeout_ms, err,
			    sizeof(err));
	if (w->rdb[i] == NULL) {
		log_warnx_rl("cannot open replica %s: %s; reading from the "
			     "primary meanwhile",
			     rep->url, err);
		replica_skip(w, i);
	}
	return w->rdb[i];
}

static void
replica_reset(struct srv_worker *w, int i)
{
	if (w->rdb[i] == NULL)
		return;
	w->closed_queries += db_queries(w->rdb[i]);
	w->closed_time_ns += db_time_ns(w->rdb[i]);
	db_close(w->rdb[i]);
	w->rdb[i] = NULL;
}

/*
 * A query on replica i failed with res: counted, said, and the replica
 * skipped for a while (its connection closed when it may be broken).
 * DB_BUSY is mostly a query cancelled by a replay conflict; DB_ERR a lost
 * connection or a host that does not answer (db_pg_connect's timeouts).
 */
static void
replica_failed(struct srv_worker *w, int i, int res)
{
	struct srv_replica *rep = &w->srv->reps->r[i];

	inc(&rep->errors);
	log_warnx_rl("read on replica %s failed: %s; reading elsewhere",
		     rep->url, db_errmsg(w->rdb[i]));
	replica_skip(w, i);
	if (res == DB_ERR)
		replica_reset(w, i);
}

/* Replica i's replay position into *st; on failure the replica is
   skipped (replica_failed) and its db must not be used again. */
static int
replica_status(struct srv_worker *w, int i, struct db *db, struct db_repl *st)
{
	int res = db_repl_status(db, st);

	if (res != DB_OK)
		replica_failed(w, i, res);
	else
		store_max(&w->srv->reps->r[i].replayed_lsn, st->lsn);
	return res;
}

/* 1 when replica i has replayed mark (asking it when not known yet), 0
   when not, -1 when it could not say (now skipped). */
static int
replayed(struct srv_worker *w, int i, struct db *db, uint64_t mark)
{
	struct srv_replica *rep = &w->srv->reps->r[i];
	struct db_repl st;

	if (mark == 0 ||
	    __atomic_load_n(&rep->replayed_lsn, __ATOMIC_ACQUIRE) >= mark)
		return 1;
	if (mark == MARK_UNKNOWN)
		return 0;
	if (replica_status(w, i, db, &st) != DB_OK)
		return -1;
	return st.lsn >= mark;
}

/*
 * 1 when replica i is behind the primary and its last replayed commit is
 * older than the markers' TTL: a write it has not replayed may be older
 * than its marker, which is gone.  Decided by one worker at most once a
 * second (two small queries); the others take the last verdict.  When the
 * primary was idle before a write, a check right after it refuses a
 * healthy replica for a second: more reads on the primary, never stale.
 * -1 when the replica could not say (now skipped: replica_failed).
 */
static int
too_far(struct srv_worker *w, int i, struct db *db, uint64_t now)
{
	struct srv_replica *rep = &w->srv->reps->r[i];
	uint64_t at = ld(&rep->far_checked_ns);
	int64_t ttl_ms = (int64_t)w->srv->cfg.marker_ttl_s * 1000;
	struct db_repl st, prim;
	struct db *p;
	int far = 0;

	if (now < at + FAR_CHECK_NS ||
	    !__atomic_compare_exchange_n(&rep->far_checked_ns, &at, now, 0,
					 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return __atomic_load_n(&rep->far, __ATOMIC_RELAXED);
	if (replica_status(w, i, db, &st) != DB_OK)
		return -1;
	/* No replayed commit yet: its age is unknown, take it as old. */
	far = (st.replay_age_ms < 0 || st.replay_age_ms > ttl_ms) &&
	      (p = srv_worker_db(w)) != NULL &&
	      db_repl_status(p, &prim) == DB_OK && prim.lsn > st.lsn;
	if (far != __atomic_load_n(&rep->far, __ATOMIC_RELAXED))
		log_info("replica %s %s", rep->url,
			 far ? "lags past --marker-ttl: reading elsewhere "
			       "until it catches up"
			     : "caught up: reading from it again");
	__atomic_store_n(&rep->far, far, __ATOMIC_RELAXED);
	return far;
}

/* The slot's remote marker (srv_replica.h), counted; MARK_UNKNOWN when
   memcached cannot say, 0 when there is none. */
static uint64_t
remote_mark(struct srv_worker *w, uint64_t key)
{
	struct srv *s = w->srv;
	char k[CACHE_KEY_MAX];
	uint64_t v = 0;

	cache_key_marker(k, key % SRV_MARKS);
	inc(&s->stats.marker_gets);
	switch (cache_marker_get(cache_thread_handle(s->cfg.markers), k, &v)) {
	case CACHE_HIT:
		inc(&s->stats.marker_hits);
		return v;
	case CACHE_MISS:
		return 0;
	default:
		return MARK_UNKNOWN;
	}
}

struct db *
srv_read_db(struct srv_worker *w, uint64_t key, int *ri)
{
	struct srv_replicas *reps = w->srv->reps;
	uint64_t now, mark;
	int behind = -1, asked = 0, by_marker = 0;
	int remote = reps != NULL && reps->ryw && w->srv->cfg.markers != NULL;

	*ri = -1;
	if (reps == NULL)
		return srv_worker_db(w);
	now = hs_now_ns();
	mark = reps->ryw ? __atomic_load_n(&reps->marks[key % SRV_MARKS],
					   __ATOMIC_ACQUIRE)
			 : 0;
	for (int k = 0; k < reps->n; k++) {
		int i = (int)(w->rr++ % (unsigned)reps->n), r;
		struct db *db;

		if (replica_down(w, i, now) || (db = replica_db(w, i)) == NULL)
			continue;
		if (remote && (r = too_far(w, i, db, now)) != 0) {
			if (r > 0)
				inc(&reps->r[i].too_far);
			continue;
		}
		if ((r = replayed(w, i, db, mark)) <= 0) {
			if (r == 0)
				behind = i;
			continue;
		}
		/* Our own mark lets a replica serve: the other servers'
		   writes may not (asked once per read). */
		if (remote && !asked) {
			uint64_t rm = remote_mark(w, key);

			asked = 1;
			if (rm > mark) {
				mark = rm;
				by_marker = 1;
				if ((r = replayed(w, i, db, mark)) <= 0) {
					if (r == 0)
						behind = i;
					continue;
				}
			}
		}
		*ri = i;
		return db;
	}
	if (behind >= 0)
		inc(&reps->r[behind].behind);
	if (by_marker)
		inc(&w->srv->stats.marker_primary);
	inc(&w->srv->stats.primary_reads);
	return srv_worker_db(w);
}

int
srv_read_retry(struct srv_worker *w, uint64_t key, int ri, int res)
{
	struct srv_replicas *reps = w->srv->reps;
	struct db_repl st;

	if (ri < 0) {
		/* Served by the primary: a mark whose position was not known
		   can now be set from the primary's, which is past the write. */
		if (reps &&
		    __atomic_load_n(&reps->marks[key % SRV_MARKS],
				    __ATOMIC_RELAXED) == MARK_UNKNOWN &&
		    res >= 0 && w->db && db_repl_status(w->db, &st) == DB_OK) {
			uint64_t unk = MARK_UNKNOWN;

			__atomic_compare_exchange_n(
				&reps->marks[key % SRV_MARKS], &unk, st.lsn, 0,
				__ATOMIC_RELEASE, __ATOMIC_RELAXED);
		}
		return 0;
	}
	if (res >= 0) {
		inc(&reps->r[ri].reads);
		__atomic_store_n(&reps->r[ri].fails, 0, __ATOMIC_RELAXED);
		return 0;
	}
	replica_failed(w, ri, res); /* ask elsewhere */
	return 1;
}

/* Tells the other servers (srv_replica.h): one marker per key slot. */
static void
raise_markers(struct srv_worker *w, const uint64_t *keys, int n, uint64_t lsn)
{
	struct srv *s = w->srv;
	struct cache *c = cache_thread_handle(s->cfg.markers);
	char k[CACHE_KEY_MAX];

	for (int i = 0; i < n; i++) {
		cache_key_marker(k, keys[i] % SRV_MARKS);
		if (cache_marker_raise(c, k, lsn, s->cfg.marker_ttl_s) == 0) {
			inc(&s->stats.marker_sets);
			continue;
		}
		inc(&s->stats.marker_set_errors);
		log_warnx_rl("cache: marker %s not raised; other servers may "
			     "read it from a lagging replica for up to %u s",
			     k, s->cfg.marker_ttl_s);
	}
}

void
srv_read_wrote(struct srv_worker *w, const uint64_t *keys, int n)
{
	struct srv_replicas *reps = w->srv->reps;
	struct db_repl st;
	uint64_t lsn = MARK_UNKNOWN;

	if (reps == NULL || !reps->ryw)
		return;
	/* The primary's written WAL now is at or past this commit's end. */
	if (w->db == NULL || db_repl_status(w->db, &st) != DB_OK)
		log_warnx_rl("WAL position after a write: %s; reads of its keys "
			     "go to the primary",
			     w->db ? db_errmsg(w->db) : "no connection");
	else
		lsn = st.lsn;
	for (int i = 0; i < n; i++)
		store_max(&reps->marks[keys[i] % SRV_MARKS], lsn);
	if (w->srv->cfg.markers != NULL)
		raise_markers(w, keys, n, lsn);
}

/* Replica i now: its counters, and its lag asked of it and the primary
   (prim NULL when the primary could not say). */
static void
sample(struct srv_worker *w, int i, const struct db_repl *prim,
       struct srv_replica_sample *out)
{
	struct srv_replica *rep = &w->srv->reps->r[i];
	struct db *db =
		replica_down(w, i, hs_now_ns()) ? NULL : replica_db(w, i);
	struct db_repl st;
	int up = db != NULL && db_repl_status(db, &st) == DB_OK;

	if (db != NULL && !up) {
		replica_reset(w, i);
		replica_skip(w, i);
	}
	if (up)
		store_max(&rep->replayed_lsn, st.lsn);
	out->up = up;
	out->reads = (int64_t)ld(&rep->reads);
	out->errors = (int64_t)ld(&rep->errors);
	out->behind = (int64_t)ld(&rep->behind);
	out->too_far = (int64_t)ld(&rep->too_far);
	out->lag_bytes = -1;
	out->replay_age_ns = -1;
	if (up && prim != NULL)
		out->lag_bytes =
			prim->lsn > st.lsn ? (int64_t)(prim->lsn - st.lsn) : 0;
	if (up && st.replay_age_ms >= 0)
		out->replay_age_ns = st.replay_age_ms * 1000000;
}

/* The primary's WAL position into *st; NULL when it cannot say. */
static const struct db_repl *
primary_pos(struct srv_worker *w, struct db_repl *st)
{
	struct db *db = srv_worker_db(w);

	return db != NULL && db_repl_status(db, st) == DB_OK ? st : NULL;
}

#define REP_NFAM     (0 SRV_REPLICA_METRICS(REP_ONE))
#define REP_ONE(...) +1

/* The sample as rows, in SRV_REPLICA_METRICS order. */
static void
sample_rows(const struct srv_replica_sample *v, const char *labels,
	    struct hs_metric *r)
{
	int n = 0;

#define REP_ROW(f, json, prom, type, unit, help)                              \
	r[n++] = (struct hs_metric){ json,           prom,   help, HS_##type, \
				     HS_UNIT_##unit, labels, v->f };
	SRV_REPLICA_METRICS(REP_ROW)
#undef REP_ROW
}

void
srv_replicas_stats(struct srv_worker *w, struct hs_buf *b,
		   const struct hs_metric *rows, size_t n)
{
	struct srv_replicas *reps = w->srv->reps;
	struct db_repl pst;
	const struct db_repl *prim;

	if (reps == NULL)
		return;
	prim = primary_pos(w, &pst);
	hs_buf_printf(b, ",\"replicas\":{\"read_your_writes\":%s,",
		      reps->ryw ? "true" : "false");
	hs_buf_puts(b, "\"remote_markers\":");
	if (reps->ryw && w->srv->cfg.markers != NULL)
		hs_buf_printf(b, "{\"ttl_s\":%u}", w->srv->cfg.marker_ttl_s);
	else
		hs_buf_puts(b, "null");
	hs_metrics_json(b, rows, n, 0);
	hs_buf_puts(b, ",\"list\":[");
	for (int i = 0; i < reps->n; i++) {
		struct srv_replica_sample v;
		struct hs_metric r[REP_NFAM];

		sample(w, i, prim, &v);
		sample_rows(&v, NULL, r);
		hs_buf_printf(b, "%s{\"url\":", i ? "," : "");
		hs_buf_json_str(b, reps->r[i].url);
		for (int k = 0; k < REP_NFAM; k++) {
			if (r[k].value >= 0)
				hs_metrics_json(b, &r[k], 1, 0);
			else
				hs_buf_printf(b, ",\"%s\":null", r[k].json);
		}
		hs_buf_puts(b, "}");
	}
	hs_buf_puts(b, "]}");
}

/* 'replica="URL"' with the label value escaped as Prometheus asks. */
static void
url_label(char *out, size_t len, const char *url)
{
	size_t o = 0;
	const char *pre = "replica=\"";

	while (*pre && o + 1 < len)
		out[o++] = *pre++;
	for (const char *p = url; *p && o + 4 < len; p++) {
		if (*p == '"' || *p == '\\' || *p == '\n') {
			out[o++] = '\\';
			out[o++] = *p == '\n' ? 'n' : *p;
		} else {
			out[o++] = *p;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
}

void
srv_replicas_prom(struct srv_worker *w, struct hs_buf *b)
{
	struct srv_replicas *reps = w->srv->reps;
	struct hs_metric r[SRV_READ_MAX][REP_NFAM], fam[SRV_READ_MAX];
	char labels[SRV_READ_MAX][600];
	struct db_repl pst;
	const struct db_repl *prim;

	if (reps == NULL)
		return;
	prim = primary_pos(w, &pst);
	for (int i = 0; i < reps->n; i++) {
		struct srv_replica_sample v;

		sample(w, i, prim, &v);
		url_label(labels[i], sizeof(labels[i]), reps->r[i].url);
		sample_rows(&v, labels[i], r[i]);
	}
	/* A family's samples adjacent; an unknown value has none. */
	for (int k = 0; k < REP_NFAM; k++) {
		size_t m = 0;

		for (int i = 0; i < reps->n; i++)
			if (r[i][k].value >= 0)
				fam[m++] = r[i][k];
		if (m == 0)
			hs_metrics_prom_head(b, "hs_", r[0][k].prom,
					     r[0][k].help,
					     r[0][k].type == HS_GAUGE
						     ? "gauge"
						     : "counter");
		else
			hs_metrics_prom(b, "hs_", fam, m);
	}
}

void
srv_worker_rdb_close(struct srv_worker *w)
{
	for (int i = 0; i < SRV_READ_MAX; i++)
		replica_reset(w, i);
}
