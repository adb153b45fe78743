/*
 * Unit tests of the balancing policies: smooth weighted round robin gives
 * exact shares and interleaves (no bursts), skips down and tried backends;
 * least connections prefers the least loaded, weighted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bal.h"

static struct bal_backend bs[3];
static struct bal_backend *ptrs[3] = { &bs[0], &bs[1], &bs[2] };
static struct bal_set set = { 3, ptrs, NULL };

static void
reset(int w0, int w1, int w2)
{
	memset(bs, 0, sizeof(bs));
	int w[3] = { w0, w1, w2 };
	for (int i = 0; i < 3; i++) {
		bs[i].id = i;
		bs[i].weight = w[i];
		bs[i].up = 1;
	}
}

static void
test_rr_equal(void **state)
{
	void *st = bal_policy_rr.state_new();

	reset(1, 1, 1);
	for (int i = 0; i < 9; i++)
		assert_ptr_equal(bal_policy_rr.pick(st, &set, NULL),
				 &bs[i % 3]);
	bal_policy_rr.state_free(st);
}

static void
test_rr_weights(void **state)
{
	void *st = bal_policy_rr.state_new();
	int count[3] = { 0 }, run = 0, maxrun = 0;
	struct bal_backend *prev = NULL;

	reset(5, 1, 1);
	for (int i = 0; i < 700; i++) {
		struct bal_backend *b = bal_policy_rr.pick(st, &set, NULL);
		count[b->id]++;
		run = b == prev ? run + 1 : 1;
		maxrun = run > maxrun ? run : maxrun;
		prev = b;
	}
	assert_int_equal(count[0], 500);
	assert_int_equal(count[1], 100);
	assert_int_equal(count[2], 100);
	assert_true(maxrun <=
		    4); /* smooth: a,a,b,a,c,a,a; never five in a row */
	bal_policy_rr.state_free(st);
}

static void
test_rr_skip(void **state)
{
	void *st = bal_policy_rr.state_new();
	unsigned char tried[BAL_MAX_BACKENDS] = { 0 };

	reset(1, 1, 1);
	bs[1].up = 0;
	for (int i = 0; i < 10; i++)
		assert_ptr_not_equal(bal_policy_rr.pick(st, &set, NULL),
				     &bs[1]);
	tried[0] = 1;
	for (int i = 0; i < 10; i++)
		assert_ptr_equal(bal_policy_rr.pick(st, &set, tried), &bs[2]);
	tried[2] = 1;
	assert_null(bal_policy_rr.pick(st, &set, tried));
	bal_policy_rr.state_free(st);
}

static void
test_leastconn(void **state)
{
	void *st = bal_policy_leastconn.state_new();

	reset(1, 1, 1);
	bs[0].active = 5;
	bs[1].active = 2;
	bs[2].active = 7;
	for (int i = 0; i < 5; i++)
		assert_ptr_equal(bal_policy_leastconn.pick(st, &set, NULL),
				 &bs[1]);
	/* Weighted: 6 active on weight 4 beats 2 active on weight 1. */
	bs[0].weight = 4;
	bs[0].active = 6;
	assert_ptr_equal(bal_policy_leastconn.pick(st, &set, NULL), &bs[0]);
	/* Ties spread. */
	reset(1, 1, 1);
	int seen[3] = { 0 };
	for (int i = 0; i < 6; i++)
		seen[bal_policy_leastconn.pick(st, &set, NULL)->id]++;
	assert_int_equal(seen[0], 2);
	assert_int_equal(seen[1], 2);
	assert_int_equal(seen[2], 2);
	bal_policy_leastconn.state_free(st);
}

static void
test_spec(void **state)
{
	struct bal_spec s;

	assert_int_equal(bal_spec_parse("127.0.0.1:80", &s), 0);
	assert_int_equal(s.weight, 1);
	assert_int_equal(s.port, 80);
	assert_int_equal(bal_spec_parse("127.0.0.1:81,weight=7", &s), 0);
	assert_int_equal(s.weight, 7);
	assert_int_equal(bal_spec_parse("127.0.0.1:81,weight=0", &s), -1);
	assert_int_equal(bal_spec_parse("127.0.0.1:81,w=2", &s), -1);
	assert_int_equal(bal_spec_parse("127.0.0.1", &s), -1);
	assert_int_equal(bal_spec_parse("127.0.0.1:0", &s), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rr_equal),
		cmocka_unit_test(test_rr_weights),
		cmocka_unit_test(test_rr_skip),
		cmocka_unit_test(test_leastconn),
		cmocka_unit_test(test_spec),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
