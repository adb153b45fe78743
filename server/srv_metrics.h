/*
 * The server's scalar statistics, one line each and in export order: the
 * counters kept in struct srv_stats (S) and the values read from elsewhere
 * when /stats or /metrics is asked for (D, an expression over stats.c's
 * snapshot v).  This list is the fields of struct srv_stats and the rows of
 * both exports, so a new counter is one S line here plus its increment.
 *
 *   S(field,  group, JSON key, Prometheus name after "hs_", type, unit, help)
 *   D(value,  group, ...the same)
 *
 * group is the /stats object the key sits in (TOP, DB, CACHE, or REPL:
 * db.replicas, exported only with --db-read); a NULL JSON
 * key or Prometheus name leaves the row out of that export; unit is one of
 * hs_metrics.h's HS_UNIT_* (NS_MS: nanoseconds shown as ms and seconds).
 * Requests by route and status, and the latency histograms, are families
 * with labels that stats.c writes from their arrays.
 */
#ifndef HS_SRV_METRICS_H
#define HS_SRV_METRICS_H

#define SRV_METRICS(S, D)                                                      \
	D(v->uptime_ns, TOP, "uptime_s", "uptime_seconds", GAUGE, NS_S,        \
	  "Seconds since start.")                                              \
	D(v->threads, TOP, "threads", NULL, GAUGE, COUNT, NULL)                \
	D(v->requests, TOP, "requests", NULL, COUNTER, COUNT, NULL)            \
	S(inflight, TOP, "inflight", "inflight_requests", GAUGE, COUNT,        \
	  "Requests being served.")                                            \
	D(v->open_conns, TOP, "connections", "open_connections", GAUGE, COUNT, \
	  "Client connections open.")                                          \
	D(v->refused, TOP, "connections_refused", "connections_refused_total", \
	  COUNTER, COUNT,                                                      \
	  "Clients answered 503 at --max-conns or --max-conns-per-ip.")        \
	D(v->head_timeouts, TOP, "head_timeouts", "head_timeouts_total",       \
	  COUNTER, COUNT,                                                      \
	  "Connections closed with 408: no request head "                      \
	  "within --header-timeout-ms.")                                       \
	S(phase_refused, TOP, "phase_refused", "request_phase_refused_total",  \
	  COUNTER, COUNT,                                                      \
	  "Request phase changes refused (a server bug; each is logged).")     \
	D(v->db_queries, DB, "queries", "db_queries_total", COUNTER, COUNT,    \
	  "SQL statements run.")                                               \
	D(v->db_time_ns, DB, "time_ms", "db_time_seconds_total", COUNTER,      \
	  NS_MS, "Time spent in SQLite.")                                      \
	S(db_errors, DB, "errors", "db_errors_total", COUNTER, COUNT,          \
	  "Requests answered 503 after a database failure.")                   \
	D(v->db_workers, DB, "workers", NULL, GAUGE, COUNT, NULL)              \
	D(v->db_threads, DB, "threads", NULL, GAUGE, COUNT, NULL)              \
	S(db_jobs, DB, "jobs", "db_jobs_total", COUNTER, COUNT,                \
	  "Requests run on the database threads.")                             \
	S(db_queue_ns, DB, "queue_ms", "db_queue_seconds_total", COUNTER,      \
	  NS_MS, "Time requests waited for a database thread.")                \
	S(cache_ns, CACHE, "time_ms", "cache_time_seconds_total", COUNTER,     \
	  NS_MS, "Time in memcached calls (reads and deletes).")               \
	S(cache_wait_ns, CACHE, "wait_ms", "cache_wait_seconds_total",         \
	  COUNTER, NS_MS, "Time readers waited on another reader's lease.")    \
	S(batch_queue_ns, CACHE, "batch_queue_ms",                             \
	  "cache_batch_queue_seconds_total", COUNTER, NS_MS,                   \
	  "Time parked reads waited for their multi-get to start.")            \
	S(resume_wait_ns, CACHE, "resume_wait_ms",                             \
	  "cache_resume_wait_seconds_total", COUNTER, NS_MS,                   \
	  "Time batched reads waited to be served after the answer.")          \
	S(primary_reads, REPL, "primary_reads", "replica_primary_reads_total", \
	  COUNTER, COUNT,                                                      \
	  "Replica-eligible reads the primary served: no replica up, or "      \
	  "none had replayed the key's last write.")                           \
	S(marker_gets, REPL, "marker_gets", "replica_marker_gets_total",       \
	  COUNTER, COUNT,                                                      \
	  "Remote markers asked of memcached before a replica read.")          \
	S(marker_hits, REPL, "marker_hits", "replica_marker_hits_total",       \
	  COUNTER, COUNT,                                                      \
	  "Remote markers found: the key was written within --marker-ttl.")    \
	S(marker_primary, REPL, "marker_primary_reads",                        \
	  "replica_marker_primary_reads_total", COUNTER, COUNT,                \
	  "Reads sent to the primary by a remote marker no replica had "       \
	  "replayed, or because memcached could not be asked.")                \
	S(marker_sets, REPL, "marker_sets", "replica_marker_sets_total",       \
	  COUNTER, COUNT, "Remote markers raised after writes.")               \
	S(marker_set_errors, REPL, "marker_set_errors",                        \
	  "replica_marker_set_errors_total", COUNTER, COUNT,                   \
	  "Remote markers memcached could not be told about (other servers "   \
	  "may read those keys stale from a lagging replica).")

#endif
