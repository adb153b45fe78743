/*
 * The request life cycle's one setter and its table (srv_req.h has the
 * phases, one doc line each).  Every change of rq->phase goes through
 * srv_phase_set(), so a request's path can be read here in one place:
 *
 *   HEAD -> ANSWERED                         an error in the head or body
 *   HEAD -> LOOP -> ANSWERED                 served on the loop
 *   HEAD -> LOOP -> PARKED -> BATCHED -> LOOP -> ANSWERED
 *                                            a batched cache read
 *   HEAD -> QUEUED -> POOL -> BUILT -> ANSWERED
 *                                            straight to a database thread
 *   ... LOOP -> OFFLOAD -> QUEUED -> ...     the loop's run needs one
 *
 * A change not in the table is a bug in the server: it is refused (the
 * request keeps its phase; a caller that cannot go on without it closes
 * the connection), logged with both names, and counted (/stats
 * "phase_refused").
 */
#include "hs_log.h"
#include "srv_core.h"
#include "srv_req.h"

#define PH(p) (1u << SRV_PH_##p)

/* From each phase, the phases it may move to. */
static const unsigned srv_phase_next[SRV_PH_COUNT] = {
	[SRV_PH_HEAD] = PH(LOOP) | PH(QUEUED) | PH(ANSWERED),
	[SRV_PH_LOOP] = PH(PARKED) | PH(OFFLOAD) | PH(ANSWERED),
	[SRV_PH_PARKED] = PH(BATCHED),
	[SRV_PH_BATCHED] = PH(LOOP),
	[SRV_PH_OFFLOAD] = PH(QUEUED),
	[SRV_PH_QUEUED] = PH(POOL),
	[SRV_PH_POOL] = PH(BUILT),
	[SRV_PH_BUILT] = PH(ANSWERED),
	[SRV_PH_ANSWERED] = 0,
};

static const char *const srv_phase_names[SRV_PH_COUNT] = {
	[SRV_PH_HEAD] = "head",         [SRV_PH_LOOP] = "loop",
	[SRV_PH_PARKED] = "parked",     [SRV_PH_BATCHED] = "batched",
	[SRV_PH_OFFLOAD] = "offload",   [SRV_PH_QUEUED] = "queued",
	[SRV_PH_POOL] = "pool",         [SRV_PH_BUILT] = "built",
	[SRV_PH_ANSWERED] = "answered",
};

const char *
srv_phase_name(enum srv_phase p)
{
	return (unsigned)p < SRV_PH_COUNT ? srv_phase_names[p] : "?";
}

int
srv_phase_legal(enum srv_phase from, enum srv_phase to)
{
	if ((unsigned)from >= SRV_PH_COUNT || (unsigned)to >= SRV_PH_COUNT)
		return 0;
	return (srv_phase_next[from] & (1u << to)) != 0;
}

int
srv_phase_set(struct srv_req *rq, enum srv_phase to)
{
	if (!srv_phase_legal(rq->phase, to)) {
		if (rq->srv != NULL)
			__atomic_fetch_add(&rq->srv->stats.phase_refused, 1,
					   __ATOMIC_RELAXED);
		log_warnx_rl("%s: request phase %s -> %s refused",
			     srv_route_name(rq->route),
			     srv_phase_name(rq->phase), srv_phase_name(to));
		return -1;
	}
	rq->phase = to;
	return 0;
}
