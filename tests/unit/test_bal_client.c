/*
 * Unit tests of the balancer's connection life cycles (balancer/client.c):
 * the client and backend-connection state tables take the sequences the
 * proxy runs and refuse the others, through the tables and through the
 * setters (which leave the state unchanged on a refusal); every state is
 * reachable from NEW and can be closed; closing a client marks it and its
 * backend connection CLOSED, releases sockets and counters at once, and
 * frees both only in bal_worker_reap().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>

#include "client.h"
#include "hs_log.h"

#define C(s) BAL_CS_##s
#define B(s) BAL_BS_##s

/* Walks seq through bal_client_set_state; all must be accepted. */
static void
client_walk(const enum bal_client_state *seq, int n)
{
	struct bal_client c;

	memset(&c, 0, sizeof(c));
	strcpy(c.ip, "test");
	c.state = seq[0];
	for (int i = 1; i < n; i++) {
		assert_true(bal_client_state_ok(seq[i - 1], seq[i]));
		assert_int_equal(bal_client_set_state(&c, seq[i]), 0);
		assert_int_equal(c.state, seq[i]);
	}
}

static void
test_client_legal(void **state)
{
	/* keep-alive: a GET, a POST with a body, a client not reading. */
	static const enum bal_client_state ka[] = {
		C(NEW),  C(HEAD), C(WAIT),    C(IDLE),   C(HEAD),
		C(BODY), C(WAIT), C(IDLE),    C(FULL),   C(IDLE),
		C(HEAD), C(WAIT), C(CLOSING), C(LINGER), C(CLOSED)
	};
	/* an error answered in each request phase, then keep-alive or not */
	static const enum bal_client_state err1[] = { C(NEW), C(HEAD), C(IDLE),
						      C(CLOSING), C(CLOSED) };
	static const enum bal_client_state err2[] = { C(NEW),    C(HEAD),
						      C(BODY),   C(CLOSING),
						      C(LINGER), C(CLOSED) };
	static const enum bal_client_state err3[] = { C(NEW),     C(HEAD),
						      C(CLOSING), C(CLOSING),
						      C(LINGER),  C(CLOSED) };
	/* a slow reader closed by its idle timer */
	static const enum bal_client_state slow[] = { C(NEW),  C(HEAD),
						      C(WAIT), C(IDLE),
						      C(FULL), C(CLOSED) };

	client_walk(ka, sizeof(ka) / sizeof(ka[0]));
	client_walk(err1, sizeof(err1) / sizeof(err1[0]));
	client_walk(err2, sizeof(err2) / sizeof(err2[0]));
	client_walk(err3, sizeof(err3) / sizeof(err3[0]));
	client_walk(slow, sizeof(slow) / sizeof(slow[0]));
}

static void
test_client_illegal(void **state)
{
	static const enum bal_client_state bad[][2] = {
		{ C(NEW), C(WAIT) }, /* no request parsed yet */
		{ C(NEW), C(IDLE) },
		{ C(NEW), C(LINGER) }, /* lingering only after CLOSING */
		{ C(IDLE), C(WAIT) },
		{ C(BODY), C(IDLE) }, /* the body was not all read */
		{ C(WAIT), C(HEAD) }, /* the next request goes via IDLE */
		{ C(FULL), C(HEAD) },
		{ C(CLOSING), C(IDLE) }, /* no way back from closing */
		{ C(LINGER), C(HEAD) },
		{ C(LINGER), C(CLOSING) },
		{ C(CLOSED), C(NEW) }, /* closed is final */
		{ C(CLOSED), C(IDLE) },
		{ C(CLOSED), C(LINGER) },
	};
	struct bal_client c;

	memset(&c, 0, sizeof(c));
	strcpy(c.ip, "test");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_false(bal_client_state_ok(bad[i][0], bad[i][1]));
		c.state = bad[i][0];
		assert_int_equal(bal_client_set_state(&c, bad[i][1]), -1);
		assert_int_equal(c.state, bad[i][0]);
	}
	/* Out of range either way. */
	assert_false(bal_client_state_ok(BAL_CS_COUNT, C(IDLE)));
	assert_false(bal_client_state_ok(C(IDLE), BAL_CS_COUNT));
	assert_false(bal_client_state_ok((enum bal_client_state) - 1, C(IDLE)));
}

/* Every state is reachable from NEW, and every state can be closed. */
static void
test_client_table_shape(void **state)
{
	int seen[BAL_CS_COUNT] = { 0 }, grew = 1;

	seen[C(NEW)] = 1;
	while (grew) {
		grew = 0;
		for (int f = 0; f < BAL_CS_COUNT; f++)
			for (int t = 0; t < BAL_CS_COUNT; t++)
				if (seen[f] && !seen[t] &&
				    bal_client_state_ok(f, t))
					seen[t] = grew = 1;
	}
	for (int s = 0; s < BAL_CS_COUNT; s++) {
		assert_true(seen[s]);
		assert_true(bal_client_state_ok(s, C(CLOSED)));
		assert_true(bal_client_state_ok(s, s));
		assert_non_null(bal_client_state_name(s));
		for (int t = 0; t < s; t++)
			assert_string_not_equal(bal_client_state_name(s),
						bal_client_state_name(t));
	}
	for (int t = 0; t < BAL_CS_COUNT; t++)
		if (t != C(CLOSED))
			assert_false(bal_client_state_ok(C(CLOSED), t));
}

static void
test_bconn_table(void **state)
{
	static const enum bal_bconn_state legal[][2] = {
		{ B(CONNECTING), B(SENT) },   { B(SENT), B(BODY) },
		{ B(BODY), B(IDLE) },         { B(IDLE), B(SENT) },
		{ B(CONNECTING), B(CLOSED) }, { B(IDLE), B(CLOSED) },
		{ B(SENT), B(CLOSED) },       { B(BODY), B(CLOSED) },
	};
	static const enum bal_bconn_state bad[][2] = {
		{ B(CONNECTING), B(BODY) }, { B(CONNECTING), B(IDLE) },
		{ B(IDLE), B(BODY) },       { B(SENT), B(IDLE) },
		{ B(BODY), B(SENT) },       { B(CLOSED), B(SENT) },
		{ B(CLOSED), B(IDLE) },     { B(IDLE), B(CONNECTING) },
	};

	for (size_t i = 0; i < sizeof(legal) / sizeof(legal[0]); i++)
		assert_true(bal_bconn_state_ok(legal[i][0], legal[i][1]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(bal_bconn_state_ok(bad[i][0], bad[i][1]));
	assert_false(bal_bconn_state_ok(BAL_BS_COUNT, B(SENT)));
}

static void
nop_cb(evutil_socket_t fd, short what, void *arg)
{
}

/*
 * Closing marks and releases at once; the memory stays until the reap.
 * (Under the ASan build a double free or a leak here fails the test.)
 */
static void
test_close_then_reap(void **state)
{
	static const struct timeval tv = { 10, 0 };
	struct bal_app *app = calloc(1, sizeof(*app));
	struct bal_worker *w = calloc(1, sizeof(*w));
	struct bal_backend *be = calloc(1, sizeof(*be));
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct bal_client *c;
	struct bal_bconn *bc;
	int cfd[2], bfd[2];

	assert_non_null(app);
	assert_non_null(w);
	assert_non_null(be);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, cfd), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, bfd), 0);
	w->app = app;
	w->base = event_base_new();
	assert_non_null(w->base);
	w->tv_header = &tv;
	for (int i = 0; i < BAL_MAX_BACKENDS; i++)
		TAILQ_INIT(&w->idle[i]);
	TAILQ_INIT(&w->clients);
	TAILQ_INIT(&w->closed_clients);
	TAILQ_INIT(&w->closed_bconns);
	strcpy(be->name, "b:1");

	c = bal_client_new(w, cfd[0], (struct sockaddr *)&sin, nop_cb, nop_cb,
			   nop_cb);
	assert_int_equal(c->state, C(NEW));
	assert_int_equal(w->nclients, 1);
	assert_int_equal(app->conns, 1);
	bc = bal_bconn_new(w, be, bfd[0], nop_cb, nop_cb, nop_cb);
	assert_int_equal(bal_bconn_set_state(bc, B(SENT)), 0);
	bc->c = c;
	c->bc = bc;
	be->active = 1;
	c->fwd = malloc(16);

	bal_client_close(c);
	/* Released now: counters, sockets, the link between the two. */
	assert_int_equal(c->state, C(CLOSED));
	assert_int_equal(bc->state, B(CLOSED));
	assert_int_equal(w->nclients, 0);
	assert_int_equal(app->conns, 0);
	assert_int_equal(be->active, 0);
	assert_null(c->bc);
	assert_null(bc->c);
	assert_int_equal(c->io.fd, -1);
	assert_int_equal(bc->io.fd, -1);
	assert_true(TAILQ_EMPTY(&w->clients));
	assert_ptr_equal(TAILQ_FIRST(&w->closed_clients), c);
	assert_ptr_equal(TAILQ_FIRST(&w->closed_bconns), bc);
	/* The peers see the close before the memory goes. */
	{
		char ch;
		assert_int_equal(read(cfd[1], &ch, 1), 0);
		assert_int_equal(read(bfd[1], &ch, 1), 0);
	}
	/* Closing twice is harmless. */
	bal_client_close(c);
	bal_bconn_close(bc);
	assert_int_equal(w->nclients, 0);
	assert_int_equal(app->conns, 0);

	bal_worker_reap(w);
	assert_true(TAILQ_EMPTY(&w->closed_clients));
	assert_true(TAILQ_EMPTY(&w->closed_bconns));
	bal_worker_reap(w); /* nothing left to free */

	close(cfd[1]);
	close(bfd[1]);
	event_base_free(w->base);
	free(be);
	free(w);
	free(app);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_legal),
		cmocka_unit_test(test_client_illegal),
		cmocka_unit_test(test_client_table_shape),
		cmocka_unit_test(test_bconn_table),
		cmocka_unit_test(test_close_then_reap),
	};

	hs_log_init("test_bal_client", HS_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
