/*
 * The server's statistics block and what records into it (stats.c).
 *
 * Hot-path rule: nothing here takes a lock per request.  Counters are
 * relaxed atomic adds; each worker publishes its database totals with
 * relaxed stores, and /stats sums them.
 */
#ifndef HS_SRV_STATS_H
#define HS_SRV_STATS_H

#include <stdint.h>

#include "hs_hist.h"
#include "srv_metrics.h"
#include "srv_route.h"

struct srv;

struct srv_stats {
	uint64_t by_class[SRV_R_COUNT][6]; /* [route][status / 100] */
	uint64_t by_status[600];
	/* db_errors, inflight, cache_ns, ...: see srv_metrics.h (atomic) */
#define SRV_STATS_FIELD(f, ...) uint64_t f;
#define SRV_STATS_NOFIELD(...)
	SRV_METRICS(SRV_STATS_FIELD, SRV_STATS_NOFIELD)
#undef SRV_STATS_FIELD
#undef SRV_STATS_NOFIELD
	struct hs_hist latency[SRV_R_COUNT];
};

/* "GET /products/{id}" etc.; used as stats keys and metric labels. */
const char *srv_route_name(enum srv_route r);
/* One answered request: its route, status and time in microseconds. */
void srv_stats_record(struct srv *s, enum srv_route route, int status,
		      uint64_t us);

#endif
