/*
 * Reads from streaming replicas (replica.c): hs-server --db-read URL
 * (repeatable) sends the product and category reads to hot standbys, round
 * robin per call, and every write to --db.  A replica that cannot be
 * reached or fails a query is skipped for a second (the read goes to the
 * next one, or to the primary: counted, never an error by itself).
 *
 * Read your writes (--read-your-writes on, the default): after a commit
 * the server records the primary's WAL position L against the keys the
 * write invalidated (a fixed table of slots: two keys sharing a slot only
 * send more reads to the primary).  A read of such a key goes to a replica
 * only once that replica has replayed L, else to the primary; so a read
 * that starts after a write was acknowledged, or a cache fill after its
 * invalidation, never sees the older version through this server (the
 * "remote marker" of Scaling Memcache at Facebook, section 5).
 *
 * Across servers (with a cache, --memcached): the writer also raises a
 * marker in memcached per key slot ("hs1:rm:<slot>", value L, TTL
 * --marker-ttl), after the commit and before the cache delete and the
 * answer.  A server about to read a key from a replica that its own mark
 * does not already keep away asks memcached for the marker (one get) and
 * reads from the primary unless the replica has replayed it.  memcached
 * unusable: the primary.  The bound: a marker lives --marker-ttl seconds,
 * so a replica lagging longer than that could serve another server's write
 * stale; so such a replica (behind the primary, its last replayed commit
 * older than the TTL; decided at most once a second) serves no reads until
 * it catches up.  With --cache off the marks stay local.
 */
#ifndef HS_SRV_REPLICA_H
#define HS_SRV_REPLICA_H

#include <stddef.h>
#include <stdint.h>

struct db;
struct hs_metric;
struct hs_buf;
struct srv;
struct srv_worker;

#define SRV_READ_MAX 8    /* --db-read URLs */
#define SRV_MARKS    4096 /* slots of the write marks */

/*
 * What /stats (db.replicas.list[]) and /metrics (hs_<prom>{replica="URL"})
 * show per replica: X(field of struct srv_replica_sample, JSON key,
 * Prometheus name, type, unit, help).  A negative value is unknown: JSON
 * null, no Prometheus sample.
 */
#define SRV_REPLICA_METRICS(X)                                                 \
	X(up, "up", "replica_up", GAUGE, BOOL,                                 \
	  "1 when the replica answered a status query at this scrape.")        \
	X(reads, "reads", "replica_reads_total", COUNTER, COUNT,               \
	  "Reads the replica answered.")                                       \
	X(errors, "errors", "replica_errors_total", COUNTER, COUNT,            \
	  "Reads the replica failed (then asked elsewhere).")                  \
	X(behind, "behind", "replica_behind_total", COUNTER, COUNT,            \
	  "Reads sent to the primary instead: the replica had not replayed "   \
	  "the key's last write.")                                             \
	X(too_far, "too_far", "replica_too_far_total", COUNTER, COUNT,         \
	  "Reads sent elsewhere: the replica was behind the primary and its "  \
	  "last replayed commit older than --marker-ttl.")                     \
	X(lag_bytes, "lag_bytes", "replica_lag_bytes", GAUGE, COUNT,           \
	  "The primary's WAL written minus the replica's replayed, sampled "   \
	  "at the scrape.")                                                    \
	X(replay_age_ns, "replay_age_ms", "replica_replay_age_seconds", GAUGE, \
	  NS_MS,                                                               \
	  "Now minus the last replayed commit's time (lag under writes; "      \
	  "grows while the primary is idle).")

struct srv_replica_sample {
#define SRV_REPLICA_FIELD(f, ...) int64_t f;
	SRV_REPLICA_METRICS(SRV_REPLICA_FIELD)
#undef SRV_REPLICA_FIELD
};

/* What one replica did; counters are atomic, read by /stats. */
struct srv_replica {
	const char *url;         /* borrowed from the config */
	uint64_t reads;          /* reads it answered */
	uint64_t errors;         /* reads it failed (then retried elsewhere) */
	uint64_t behind;         /* reads sent to the primary instead: it
					had not replayed the key's last write */
	uint64_t replayed_lsn;   /* highest replay position seen (bytes) */
	uint64_t too_far;        /* reads sent elsewhere: it lagged past the
				  markers' TTL */
	uint64_t far_checked_ns; /* when far was last decided */
	int far;                 /* 1: behind, and its last replayed commit
				    older than --marker-ttl */
	uint64_t down_until_ns;  /* skipped by every worker until then: it
				    failed (replica.c, replica_skip) */
	unsigned fails;          /* failures in a row (the skip doubles) */
};

/* The server's replicas (s->cfg.ndb_read of them) and write marks. */
struct srv_replicas {
	int n;
	int ryw; /* read your writes */
	struct srv_replica r[SRV_READ_MAX];
	uint64_t marks[SRV_MARKS]; /* WAL position of the last write per
					key slot; UINT64_MAX: not known */
};

/* Key slots of the read paths. */
uint64_t srv_key_product(int64_t id);
uint64_t srv_key_category(int64_t id);

/*
 * The connection a read of key should use: a replica's (*ri its index) or,
 * *ri = -1, the worker's primary connection.  NULL when even that cannot
 * be opened.
 */
struct db *srv_read_db(struct srv_worker *w, uint64_t key, int *ri);
/*
 * After a read on srv_read_db(w, key, &ri) returned res: 1 when it failed
 * on a replica (now skipped for a while) and must be asked again, 0 when
 * res stands.  Loop: do { db = srv_read_db(); res = ...; } while (retry).
 */
int srv_read_retry(struct srv_worker *w, uint64_t key, int ri, int res);
/* After a write committed on the primary: marks keys[0..n-1]. */
void srv_read_wrote(struct srv_worker *w, const uint64_t *keys, int n);
/*
 * /stats: samples each replica's lag and writes ,"replicas":{...} with the
 * server's REPL rows (srv_metrics.h, n of them) after read_your_writes.
 */
void srv_replicas_stats(struct srv_worker *w, struct hs_buf *b,
			const struct hs_metric *rows, size_t n);
/* /metrics: the per replica families of SRV_REPLICA_METRICS. */
void srv_replicas_prom(struct srv_worker *w, struct hs_buf *b);
/* Closes the worker's replica connections (adding their totals). */
void srv_worker_rdb_close(struct srv_worker *w);

#endif
