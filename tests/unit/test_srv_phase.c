/*
 * Unit tests for the request life cycle's table (server/phase.c), driven
 * without libmicrohttpd: every path a request takes is accepted, every
 * other change is refused, leaves the phase as it was and is counted in
 * the server's phase_refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "srv_core.h"
#include "srv_req.h"

static struct srv srv;

static void
req_init(struct srv_req *rq)
{
	memset(rq, 0, sizeof(*rq));
	rq->srv = &srv;
	rq->route = SRV_R_PRODUCT_GET;
	rq->phase = SRV_PH_HEAD;
}

/* Walks rq through path (ending at SRV_PH_COUNT); every step accepted. */
static void
walk(const enum srv_phase *path)
{
	struct srv_req rq;
	uint64_t refused = srv.stats.phase_refused;

	req_init(&rq);
	for (const enum srv_phase *p = path; *p != SRV_PH_COUNT; p++) {
		assert_int_equal(srv_phase_set(&rq, *p), 0);
		assert_int_equal(rq.phase, *p);
	}
	assert_int_equal(rq.phase, SRV_PH_ANSWERED);
	assert_int_equal(srv.stats.phase_refused, refused);
}

static void
test_legal_paths(void **state)
{
	/* An error, a 413, or a bad head. */
	static const enum srv_phase error[] = { SRV_PH_ANSWERED, SRV_PH_COUNT };
	/* Served on the loop. */
	static const enum srv_phase loop[] = { SRV_PH_LOOP, SRV_PH_ANSWERED,
					       SRV_PH_COUNT };
	/* A batched cache hit. */
	static const enum srv_phase hit[] = { SRV_PH_LOOP,     SRV_PH_PARKED,
					      SRV_PH_BATCHED,  SRV_PH_LOOP,
					      SRV_PH_ANSWERED, SRV_PH_COUNT };
	/* A batched miss finished on a database thread. */
	static const enum srv_phase miss[] = { SRV_PH_LOOP,     SRV_PH_PARKED,
					       SRV_PH_BATCHED,  SRV_PH_LOOP,
					       SRV_PH_OFFLOAD,  SRV_PH_QUEUED,
					       SRV_PH_POOL,     SRV_PH_BUILT,
					       SRV_PH_ANSWERED, SRV_PH_COUNT };
	/* A write, straight to a database thread. */
	static const enum srv_phase write[] = { SRV_PH_QUEUED, SRV_PH_POOL,
						SRV_PH_BUILT, SRV_PH_ANSWERED,
						SRV_PH_COUNT };

	(void)state;
	walk(error);
	walk(loop);
	walk(hit);
	walk(miss);
	walk(write);
}

/* Refused changes, each one counted, the phase left as it was. */
static void
test_illegal_refused(void **state)
{
	static const struct {
		enum srv_phase from, to;
	} bad[] = {
		{ SRV_PH_HEAD, SRV_PH_BUILT },  /* a response nobody built */
		{ SRV_PH_HEAD, SRV_PH_PARKED }, /* parked without a run */
		{ SRV_PH_PARKED, SRV_PH_LOOP }, /* run before the multi-get */
		{ SRV_PH_PARKED, SRV_PH_ANSWERED },
		{ SRV_PH_BATCHED, SRV_PH_ANSWERED },
		{ SRV_PH_QUEUED, SRV_PH_ANSWERED }, /* sent while suspended */
		{ SRV_PH_POOL, SRV_PH_ANSWERED }, /* sent from a database thread */
		{ SRV_PH_BUILT, SRV_PH_LOOP },    /* run twice */
		{ SRV_PH_ANSWERED, SRV_PH_ANSWERED }, /* answered twice */
		{ SRV_PH_ANSWERED, SRV_PH_LOOP },
		{ SRV_PH_LOOP, SRV_PH_LOOP },
	};
	uint64_t refused = srv.stats.phase_refused;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct srv_req rq;

		req_init(&rq);
		rq.phase = bad[i].from;
		assert_int_equal(srv_phase_set(&rq, bad[i].to), -1);
		assert_int_equal(rq.phase, bad[i].from);
		assert_int_equal(srv.stats.phase_refused, refused + i + 1);
	}
	/* Out of range, and a request without a server (counted nowhere). */
	{
		struct srv_req rq;

		req_init(&rq);
		assert_int_equal(srv_phase_set(&rq, SRV_PH_COUNT), -1);
		assert_int_equal(rq.phase, SRV_PH_HEAD);
		rq.srv = NULL;
		assert_int_equal(srv_phase_set(&rq, SRV_PH_BUILT), -1);
	}
	assert_string_equal(srv_phase_name(SRV_PH_COUNT), "?");
	assert_string_equal(srv_phase_name(SRV_PH_PARKED), "parked");
}

/* Every change either way agrees with srv_phase_legal and is counted
   exactly when refused. */
static void
test_whole_table(void **state)
{
	int legal = 0;

	(void)state;
	for (int f = 0; f < SRV_PH_COUNT; f++)
		for (int t = 0; t < SRV_PH_COUNT; t++) {
			struct srv_req rq;
			uint64_t before = srv.stats.phase_refused;
			int ok = srv_phase_legal(f, t);

			req_init(&rq);
			rq.phase = f;
			assert_int_equal(srv_phase_set(&rq, t), ok ? 0 : -1);
			assert_int_equal(rq.phase, ok ? t : f);
			assert_int_equal(srv.stats.phase_refused,
					 before + (ok ? 0 : 1));
			legal += ok;
		}
	/* The 12 arrows of phase.c's table, no more. */
	assert_int_equal(legal, 12);
}

/* From HEAD every phase is reachable, and from each ANSWERED is. */
static void
test_reachable(void **state)
{
	unsigned seen = 1u << SRV_PH_HEAD;

	(void)state;
	for (int round = 0; round < SRV_PH_COUNT; round++)
		for (int f = 0; f < SRV_PH_COUNT; f++)
			for (int t = 0; t < SRV_PH_COUNT; t++)
				if ((seen & (1u << f)) && srv_phase_legal(f, t))
					seen |= 1u << t;
	assert_int_equal(seen, (1u << SRV_PH_COUNT) - 1);
	for (int start = 0; start < SRV_PH_COUNT; start++) {
		unsigned from = 1u << start;

		for (int round = 0; round < SRV_PH_COUNT; round++)
			for (int f = 0; f < SRV_PH_COUNT; f++)
				for (int t = 0; t < SRV_PH_COUNT; t++)
					if ((from & (1u << f)) &&
					    srv_phase_legal(f, t))
						from |= 1u << t;
		assert_true(from & (1u << SRV_PH_ANSWERED));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_legal_paths),
		cmocka_unit_test(test_illegal_refused),
		cmocka_unit_test(test_whole_table),
		cmocka_unit_test(test_reachable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
