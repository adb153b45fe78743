/*
 * One request's state between the calls of the access handler, and its
 * life cycle as one named phase.
 *
 * A request moves loop -> (maybe) the loop's read batcher -> (maybe) a
 * database thread -> loop, and MHD calls the access handler for it up to
 * four times, on two threads.  Where it is, is rq->phase; it changes only
 * through srv_phase_set(), which checks each change against one table
 * (phase.c) and refuses, logs and counts any other.  The threads hand a
 * request over in order: the loop suspends the connection before a
 * database thread sees it, and the database thread's MHD resume (under
 * MHD's mutex) comes after its last write.
 */
#ifndef HS_SRV_REQ_H
#define HS_SRV_REQ_H

#include <stdint.h>

#include "cache.h"
#include "hs_buf.h"
#include "srv_route.h"

struct MHD_Connection;
struct srv;
struct srv_conn;
struct srv_loop;
struct srv_worker;

/* The request life cycle (phase.c has the legal changes). */
enum srv_phase {
	SRV_PH_HEAD,     /**< head in, routed and checked; the body, if
			      any, arriving; MHD's last call dispatches */
	SRV_PH_LOOP,     /**< its handler runs on the loop thread */
	SRV_PH_PARKED,   /**< its key waits in the loop's read batcher; no
			      response yet, MHD calls again each pass */
	SRV_PH_BATCHED,  /**< the batcher's multi-get answered (rq->batch);
			      the next call runs the handler again */
	SRV_PH_OFFLOAD,  /**< the loop's run needs the database: to be
			      handed to a database thread */
	SRV_PH_QUEUED,   /**< connection suspended, in the pool's queue */
	SRV_PH_POOL,     /**< a database thread runs its handler into
			      rq->pool_resp */
	SRV_PH_BUILT,    /**< rq->pool_resp is done, the connection
			      resumed; the loop sends it on MHD's next call */
	SRV_PH_ANSWERED, /**< a response is queued; later calls only drain
			      the body */
	SRV_PH_COUNT
};

/* Request state kept by MHD between calls of the access handler. */
struct srv_req {
	enum srv_phase phase; /* only srv_phase_set() writes it */
	struct srv *srv;
	enum srv_route route;
	int64_t id;     /* {id} from the path, when the route has one */
	int err_status; /* an error found in the headers (415, 400, ...) */
	const char *err_msg;
	const char *allow; /* for 405 */
	int wants_body;    /* PUT / POST: keep the body */
	uint64_t t0_ns;
	size_t seen; /* body bytes received so far */
	struct hs_buf body;
	struct srv_conn *sconn; /* its connection's guard state, or NULL */
	struct srv_loop *loop;  /* the loop serving it (from its guard
					state); NULL in blocking workers */
	/* The read batcher it was parked on (NULL: never parked), and the
	   answer of its multi-get (from SRV_PH_BATCHED on). */
	struct cache_batcher *batcher;
	struct cache_batch_req batch;
	/* Handed to a database thread (the connection is suspended). */
	struct MHD_Connection *conn;
	struct srv_req *pool_next;  /* the pool's queue */
	uint64_t pool_t0_ns;        /* when it was queued */
	uint64_t pool_db_ns;        /* database time of the pool's run */
	struct srv_resp *pool_resp; /* the response it builds (QUEUED on) */
};

/* The response a handler builds; the router turns it into an MHD response. */
struct srv_resp {
	int status;
	struct hs_buf body;
	const char *ctype;  /* default application/json */
	const char *allow;  /* Allow header, for 405 */
	const char *xcache; /* X-Cache header on cacheable routes */
	int retry_after;    /* seconds; 0 = no header */
	uint64_t cache_ns; /* Server-Timing cache;dur (memcached + lease wait) */
};

/* What a handler gets: its worker, the request, the connection, and the
   loop it runs on (NULL on a database thread or a blocking worker). */
struct srv_ctx {
	struct srv *srv;
	struct srv_worker *w;
	struct srv_req *rq;
	struct MHD_Connection *conn;
	struct srv_loop *loop;
};

/*
 * Moves rq to phase to.  A change the table does not allow is refused:
 * rq keeps its phase, the refusal is logged (rate-limited) and counted in
 * rq->srv's stats (phase_refused), and -1 is returned.  0 on success.
 */
int srv_phase_set(struct srv_req *rq, enum srv_phase to);
/* Whether the table allows from -> to. */
int srv_phase_legal(enum srv_phase from, enum srv_phase to);
/* "head", "loop", ...; "?" out of range. */
const char *srv_phase_name(enum srv_phase p);

#endif
