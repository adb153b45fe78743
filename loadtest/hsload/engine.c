/*
 * One open-loop run on a libevent loop.  A timer walks the schedule
 * (uniform or Poisson gaps) and hands each planned request to an idle
 * keep-alive connection, whatever the answers are doing; with none idle the
 * request waits in a FIFO for the first connection that frees up, and the
 * pool grows (up to --connections) while requests wait.  Latency is taken
 * from the planned time (corrected: a request delayed by a slow server, by
 * the wait for a connection or by our own lateness pays for it) and from
 * the actual send (uncorrected, what closed-loop tools report).
 *
 * With a per-connection schedule (--per-connection) each of the C
 * connections is a client of its own instead: it is opened at the start,
 * plans its requests at rate/C on its own timer (a random phase, then
 * uniform or Poisson gaps), and sends them in order on its connection, one
 * in flight; a request planned while the previous one is unanswered waits
 * in the client's own queue (its wait counts in its corrected latency), as
 * a user's browser does on its keep-alive connection, and counts as a
 * timeout once it has waited --timeout from its plan.  A connection lost
 * (timeout, error, closed by the server) is opened again for the client's
 * next request.  This is the load of many users who pause between requests:
 * a server that gives each connection a worker until it closes serves only
 * as many clients as it has workers, and the clients it never answers are
 * counted (clients_starved).
 *
 * Raw non-blocking sockets with two events each, not bufferevents: a
 * request is one send(2), an answer one or two read(2)s into a fixed
 * buffer, framed by resp.c.  The timer uses EVENT_BASE_FLAG_PRECISE_TIMER
 * (timerfd), so requests are not batched to epoll's millisecond.
 */
#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hs_log.h"
#include "hs_util.h"
#include "hsload.h"

#define HSL_RBUF     16384
#define HSL_PUMP_MAX 4096 /* planned requests handled per timer call */
#define HSL_SWEEP_MS 50   /* timeouts and the end of the drain */

enum hsl_conn_state {
	HSL_CONN_CONNECTING, /**< non-blocking connect() in progress */
	HSL_CONN_IDLE,       /**< connected, on the idle stack */
	HSL_CONN_BUSY, /**< a request sent (or being sent), no answer yet */
};

struct hsl_engine;

/* A FIFO of planned send times. */
struct hsl_ring {
	uint64_t *v;
	size_t head, len, cap;
};

struct hsl_conn;

/* One client of a per-connection schedule. */
struct hsl_client {
	struct hsl_engine *e;
	struct hsl_conn *conn; /* NULL between connections */
	struct event timer;
	uint64_t next_ns;      /* its next planned request */
	struct hsl_ring queue; /* planned, waiting for its connection */
	uint64_t answered;     /* answers to its measured requests */
	int scheduling;        /* still planning requests */
};

struct hsl_conn {
	TAILQ_ENTRY(hsl_conn) link;
	struct hsl_engine *e;
	struct hsl_client *client; /* per-connection schedule; else NULL */
	enum hsl_conn_state state;
	int fd;
	int wev_on;
	int connect_err; /* connect(2) failed at once: reported later */
	struct event rev, wev;
	uint64_t since_ns;   /* connect start, or the request's send */
	uint64_t planned_ns; /* the request's planned send */
	int measured;        /* planned inside the measured window */
	struct hsl_resp resp;
	size_t wlen, woff;
	char wbuf[HSL_REQ_MAX];
	size_t rlen;
	char rbuf[HSL_RBUF];
};

TAILQ_HEAD(hsl_conn_list, hsl_conn);

enum hsl_phase {
	HSL_PHASE_CONNECT,  /**< the first connection is being made */
	HSL_PHASE_SCHEDULE, /**< the timer walks the schedule */
	HSL_PHASE_DRAIN,    /**< the schedule is over; answers still due */
	HSL_PHASE_OVER,     /**< the loop is breaking */
};

struct hsl_engine {
	const struct hsl_run_opts *o;
	struct hsl_mix *mix;
	struct hsl_stats *st;
	struct hsl_result *res;
	struct event_base *base;
	struct event *tick, *sweep, *sigint, *sigterm, *progress;
	enum hsl_phase phase;
	struct hsl_conn_list conns;
	int nconns, nconnecting, nbusy;
	struct hsl_conn **idle;
	int nidle;
	struct hsl_ring queue; /* pool: planned, waiting for a connection */
	struct hsl_client *clients; /* per-connection schedule, else NULL */
	int nclients, clients_scheduling;
	size_t cqueued; /* the clients' queues, together */
	double client_gap_ns;
	uint64_t start_ns, measure_ns, end_ns, drain_ns;
	uint64_t next_ns, seq;
	double gap_ns;
	struct hsl_rng arrivals;
	int ever_connected;
	int socket_warned;
	uint64_t last_done_ns; /* the last answer to a measured request */
	/* --progress-ms: every answer and loss, warmup included; win holds
	 * the latencies of the interval since the last line. */
	struct hs_hist *win;
	uint64_t answers, lost, win_answers, win_lost;
};

void
hsl_stats_record(struct hsl_stats *st, uint64_t planned_ns, uint64_t sent_ns,
		 uint64_t done_ns, int status)
{
	hs_hist_record(&st->corrected, done_ns > planned_ns
					       ? (done_ns - planned_ns) / 1000
					       : 0);
	hs_hist_record(&st->uncorrected,
		       done_ns > sent_ns ? (done_ns - sent_ns) / 1000 : 0);
	st->requests++;
	switch (status / 100) {
	case 2:
		st->s2xx++;
		break;
	case 3:
		st->s3xx++;
		break;
	case 4:
		st->s4xx++;
		break;
	case 5:
		st->s5xx++;
		break;
	default:
		st->sother++;
		break;
	}
}

/* ------------------------------------------------------------ queue */

static void
hsl_ring_push(struct hsl_ring *r, uint64_t planned)
{
	if (r->len == r->cap) {
		size_t ncap = r->cap ? r->cap * 2 : 16;
		uint64_t *q = hs_xmalloc(ncap * sizeof(*q));

		for (size_t i = 0; i < r->len; i++)
			q[i] = r->v[(r->head + i) % r->cap];
		free(r->v);
		r->v = q;
		r->cap = ncap;
		r->head = 0;
	}
	r->v[(r->head + r->len) % r->cap] = planned;
	r->len++;
}

static uint64_t
hsl_ring_pop(struct hsl_ring *r)
{
	uint64_t v = r->v[r->head];

	r->head = (r->head + 1) % r->cap;
	r->len--;
	return v;
}

/* Planned requests of r at or after from (the measured ones). */
static uint64_t
hsl_ring_count_from(const struct hsl_ring *r, uint64_t from)
{
	uint64_t n = 0;

	for (size_t i = 0; i < r->len; i++)
		if (r->v[(r->head + i) % r->cap] >= from)
			n++;
	return n;
}

/* The queue a request of c (or of the pool, c NULL) waits in. */
static struct hsl_ring *
hsl_queue_of(struct hsl_engine *e, struct hsl_client *cl)
{
	return cl ? &cl->queue : &e->queue;
}

static void
hsl_queue_push(struct hsl_engine *e, struct hsl_client *cl, uint64_t planned)
{
	hsl_ring_push(hsl_queue_of(e, cl), planned);
	if (cl)
		e->cqueued++;
}

static uint64_t
hsl_queue_pop(struct hsl_engine *e, struct hsl_client *cl)
{
	if (cl)
		e->cqueued--;
	return hsl_ring_pop(hsl_queue_of(e, cl));
}

/* ------------------------------------------------------------ connections */

static void hsl_conn_read(evutil_socket_t fd, short what, void *arg);
static void hsl_conn_write(evutil_socket_t fd, short what, void *arg);
static void hsl_conn_ready(struct hsl_conn *c);
static void hsl_check_end(struct hsl_engine *e);

static void
hsl_end(struct hsl_engine *e)
{
	e->phase = HSL_PHASE_OVER;
	event_base_loopbreak(e->base);
}

/* Counts a lost request (the one c carried, if measured) as an error. */
static void
hsl_lost(struct hsl_engine *e, int measured, uint64_t *counter)
{
	e->lost++;
	e->win_lost++;
	if (!measured)
		return;
	(*counter)++;
	e->st->errors++;
}

/* Closes and frees c; the caller must not touch c afterwards. */
static void
hsl_conn_close(struct hsl_conn *c)
{
	struct hsl_engine *e = c->e;

	switch (c->state) {
	case HSL_CONN_CONNECTING:
		e->nconnecting--;
		break;
	case HSL_CONN_IDLE:
		/* A client's connection is never on the idle stack. */
		for (int i = 0; i < e->nidle && !c->client; i++) {
			if (e->idle[i] == c) {
				e->idle[i] = e->idle[--e->nidle];
				break;
			}
		}
		break;
	case HSL_CONN_BUSY:
		e->nbusy--;
		break;
	}
	event_del(&c->rev);
	if (c->wev_on)
		event_del(&c->wev);
	hs_close(&c->fd);
	if (c->client)
		c->client->conn = NULL;
	TAILQ_REMOVE(&e->conns, c, link);
	e->nconns--;
	free(c);
}

/* Starts a connection (cl's, or the pool's when cl is NULL); -1 (errno
 * set) if no socket could be had. */
static int
hsl_conn_open(struct hsl_engine *e, struct hsl_client *cl)
{
	struct hsl_conn *c;
	int fd;

	fd = socket(e->o->addr->sa_family,
		    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		/* Out of descriptors: retried from the sweep, logged once. */
		if (!e->socket_warned)
			log_warn("socket");
		e->socket_warned = 1;
		return -1;
	}
	c = hs_xcalloc(1, sizeof(*c));
	c->e = e;
	c->client = cl;
	if (cl)
		cl->conn = c;
	c->fd = fd;
	c->state = HSL_CONN_CONNECTING;
	c->since_ns = hs_now_ns();
	event_assign(&c->rev, e->base, fd, EV_READ | EV_PERSIST, hsl_conn_read,
		     c);
	event_assign(&c->wev, e->base, fd, EV_WRITE | EV_PERSIST,
		     hsl_conn_write, c);
	TAILQ_INSERT_TAIL(&e->conns, c, link);
	e->nconns++;
	e->nconnecting++;
	if (connect(fd, e->o->addr, e->o->addrlen) != 0 && errno != EINPROGRESS)
		c->connect_err = errno;
	event_add(&c->rev, NULL);
	event_add(&c->wev, NULL);
	c->wev_on = 1;
	/* A failure at once (loopback refuses synchronously) is reported
	 * from the write event, not from here: the caller may be iterating. */
	if (c->connect_err)
		event_active(&c->wev, EV_WRITE, 1);
	return 0;
}

/* Grows the pool while requests wait for more connections than are coming;
 * with clients, opens again the lost connection of each client that has
 * requests waiting. */
static void
hsl_grow(struct hsl_engine *e)
{
	if (!e->ever_connected)
		return;
	if (e->clients) {
		for (int i = 0; i < e->nclients && e->cqueued > 0; i++) {
			struct hsl_client *cl = &e->clients[i];

			if (cl->conn == NULL && cl->queue.len > 0 &&
			    hsl_conn_open(e, cl) != 0)
				break;
		}
		return;
	}
	while (e->queue.len > (size_t)e->nconnecting &&
	       e->nconns < e->o->connections)
		if (hsl_conn_open(e, NULL) != 0)
			break;
}

static void
hsl_connect_failed(struct hsl_conn *c, int err)
{
	struct hsl_engine *e = c->e;
	struct hsl_client *cl = c->client;

	hsl_conn_close(c);
	if (!e->ever_connected) {
		snprintf(e->res->error, sizeof(e->res->error),
			 "cannot connect to %s: %s", e->o->target,
			 strerror(err));
		e->res->end = HSL_RUN_NO_CONNECT;
		hsl_end(e);
		return;
	}
	/* Each failed attempt costs one waiting request, so that a dead
	 * server makes errors, not a reconnect loop. */
	if (hsl_queue_of(e, cl)->len > 0) {
		uint64_t planned = hsl_queue_pop(e, cl);

		hsl_lost(e, planned >= e->measure_ns, &e->st->err_connect);
	}
	hsl_grow(e);
	hsl_check_end(e);
}

static void
hsl_conn_send(struct hsl_conn *c, uint64_t planned)
{
	struct hsl_engine *e = c->e;
	enum hsl_kind kind;
	ssize_t n;

	c->wlen = hsl_mix_next(e->mix, c->wbuf, sizeof(c->wbuf), &kind);
	c->woff = 0;
	c->planned_ns = planned;
	c->measured = planned >= e->measure_ns;
	c->since_ns = hs_now_ns();
	c->state = HSL_CONN_BUSY;
	e->nbusy++;
	hsl_resp_init(&c->resp);
	if (c->measured) {
		e->st->kinds[kind]++;
		if (c->since_ns > planned + HSL_LATE_NS)
			e->st->late++;
	}
	n = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL);
	if (n == (ssize_t)c->wlen)
		return;
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
		hsl_lost(e, c->measured, &e->st->err_io);
		hsl_conn_close(c);
		hsl_grow(e);
		return;
	}
	c->woff = n > 0 ? (size_t)n : 0;
	event_add(&c->wev, NULL);
	c->wev_on = 1;
}

/* c is free for a request: the oldest waiting one, or the idle stack. */
static void
hsl_conn_ready(struct hsl_conn *c)
{
	struct hsl_engine *e = c->e;

	if (hsl_queue_of(e, c->client)->len > 0) {
		hsl_conn_send(c, hsl_queue_pop(e, c->client));
		return;
	}
	c->state = HSL_CONN_IDLE;
	if (!c->client)
		e->idle[e->nidle++] = c;
}

static void hsl_schedule_start(struct hsl_engine *e);

static void
hsl_conn_write(evutil_socket_t fd, short what, void *arg)
{
	struct hsl_conn *c = arg;
	struct hsl_engine *e = c->e;
	ssize_t n;

	if (c->state == HSL_CONN_CONNECTING) {
		int err = 0, one = 1;
		socklen_t len = sizeof(err);

		if (c->connect_err)
			err = c->connect_err;
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
			err = errno;
		if (err != 0) {
			hsl_connect_failed(c, err);
			return;
		}
		event_del(&c->wev);
		c->wev_on = 0;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		e->nconnecting--;
		e->st->connections++;
		if (!e->ever_connected) {
			e->ever_connected = 1;
			hsl_schedule_start(e);
		}
		hsl_conn_ready(c);
		return;
	}
	if (c->state != HSL_CONN_BUSY || c->woff >= c->wlen) {
		event_del(&c->wev);
		c->wev_on = 0;
		return;
	}
	n = send(fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		hsl_lost(e, c->measured, &e->st->err_io);
		hsl_conn_close(c);
		hsl_grow(e);
		hsl_check_end(e);
		return;
	}
	c->woff += (size_t)n;
	if (c->woff == c->wlen) {
		event_del(&c->wev);
		c->wev_on = 0;
	}
}

static void hsl_pump(struct hsl_engine *e, uint64_t now);

/* A whole answer arrived on c.  Returns 1 if c was closed. */
static int
hsl_conn_done(struct hsl_conn *c)
{
	struct hsl_engine *e = c->e;
	uint64_t now = hs_now_ns();

	if (c->measured) {
		hsl_stats_record(e->st, c->planned_ns, c->since_ns, now,
				 c->resp.status);
		e->last_done_ns = now;
		if (c->client)
			c->client->answered++;
	}
	e->answers++;
	e->win_answers++;
	if (e->win != NULL)
		hs_hist_record(e->win, now > c->planned_ns
					       ? (now - c->planned_ns) / 1000
					       : 0);
	if (c->resp.close || c->rlen > 0) {
		/* Closed by the server, or bytes nobody asked for. */
		hsl_conn_close(c);
		hsl_grow(e);
		hsl_check_end(e);
		return 1;
	}
	e->nbusy--;
	hsl_conn_ready(c);
	/* Requests fallen due while we read go out now, not at the timer. */
	if (!e->clients && e->phase == HSL_PHASE_SCHEDULE && e->next_ns <= now)
		hsl_pump(e, now);
	hsl_check_end(e);
	return 0;
}

static void
hsl_conn_read(evutil_socket_t fd, short what, void *arg)
{
	struct hsl_conn *c = arg;
	struct hsl_engine *e = c->e;
	ssize_t n;
	size_t used;

	n = read(fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen);
	if (n < 0 &&
	    (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (c->state == HSL_CONN_CONNECTING) {
		if (n < 0) {
			hsl_connect_failed(c, c->connect_err ? c->connect_err
							     : errno);
			return;
		}
		/* Readable before writable: let the write event see it. */
		return;
	}
	if (c->state != HSL_CONN_BUSY) {
		/* The server closed an idle connection (or spoke unasked). */
		hsl_conn_close(c);
		return;
	}
	if (n <= 0) {
		if (n == 0 && hsl_resp_eof(&c->resp)) {
			c->resp.close = 1;
			hsl_conn_done(c);
			return;
		}
		hsl_lost(e, c->measured, &e->st->err_io);
		hsl_conn_close(c);
		hsl_grow(e);
		hsl_check_end(e);
		return;
	}
	c->rlen += (size_t)n;
	used = hsl_resp_parse(&c->resp, c->rbuf, c->rlen);
	if (used > 0 && used < c->rlen)
		memmove(c->rbuf, c->rbuf + used, c->rlen - used);
	c->rlen -= used;
	if (c->resp.state == HSL_RESP_DONE) {
		hsl_conn_done(c);
	} else if (c->resp.state == HSL_RESP_ERROR) {
		hsl_lost(e, c->measured, &e->st->err_parse);
		hsl_conn_close(c);
		hsl_grow(e);
		hsl_check_end(e);
	}
}

/* ------------------------------------------------------------ schedule */

static void
hsl_advance(struct hsl_engine *e)
{
	e->seq++;
	if (e->o->arrival == HSL_ARRIVAL_POISSON)
		e->next_ns +=
			(uint64_t)(-log(1.0 - hsl_rng_unit(&e->arrivals)) *
				   e->gap_ns);
	else /* from the start, so that rounding does not drift */
		e->next_ns =
			e->start_ns + (uint64_t)((double)e->seq * e->gap_ns);
}

static void
hsl_dispatch(struct hsl_engine *e, uint64_t planned)
{
	if (e->nidle > 0) {
		hsl_conn_send(e->idle[--e->nidle], planned);
		return;
	}
	hsl_queue_push(e, NULL, planned);
	hsl_grow(e);
}

static void
hsl_arm(struct hsl_engine *e, uint64_t now)
{
	uint64_t d = e->next_ns > now ? e->next_ns - now : 0;
	struct timeval tv = { (time_t)(d / 1000000000ULL),
			      (suseconds_t)(d % 1000000000ULL / 1000) };

	evtimer_add(e->tick, &tv);
}

static void
hsl_pump(struct hsl_engine *e, uint64_t now)
{
	int n = 0;

	while (e->phase == HSL_PHASE_SCHEDULE && e->next_ns <= now &&
	       n++ < HSL_PUMP_MAX) {
		if (e->next_ns >= e->end_ns) {
			e->phase = HSL_PHASE_DRAIN;
			e->drain_ns = now + (uint64_t)(e->o->timeout_s * 1e9);
			hsl_check_end(e);
			return;
		}
		hsl_dispatch(e, e->next_ns);
		hsl_advance(e);
	}
	if (e->phase == HSL_PHASE_SCHEDULE)
		hsl_arm(e, now);
}

static void
hsl_on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct hsl_engine *e = arg;

	hsl_pump(e, hs_now_ns());
}

static void
hsl_drain_start(struct hsl_engine *e, uint64_t now)
{
	e->phase = HSL_PHASE_DRAIN;
	e->drain_ns = now + (uint64_t)(e->o->timeout_s * 1e9);
	hsl_check_end(e);
}

static uint64_t
hsl_client_gap(struct hsl_engine *e)
{
	if (e->o->arrival == HSL_ARRIVAL_POISSON)
		return (uint64_t)(-log(1.0 - hsl_rng_unit(&e->arrivals)) *
				  e->client_gap_ns);
	return (uint64_t)e->client_gap_ns;
}

/* A client's timer: its requests fallen due go out on its connection, or
 * wait in its queue behind the one in flight. */
static void
hsl_client_tick(evutil_socket_t fd, short what, void *arg)
{
	struct hsl_client *cl = arg;
	struct hsl_engine *e = cl->e;
	uint64_t now = hs_now_ns();
	struct timeval tv;
	uint64_t d;

	while (e->phase == HSL_PHASE_SCHEDULE && cl->next_ns <= now) {
		if (cl->next_ns >= e->end_ns) {
			cl->scheduling = 0;
			if (--e->clients_scheduling == 0)
				hsl_drain_start(e, now);
			return;
		}
		if (cl->conn && cl->conn->state == HSL_CONN_IDLE) {
			hsl_conn_send(cl->conn, cl->next_ns);
		} else {
			hsl_queue_push(e, cl, cl->next_ns);
			if (cl->conn == NULL)
				hsl_conn_open(e, cl);
		}
		cl->next_ns += hsl_client_gap(e);
	}
	if (e->phase != HSL_PHASE_SCHEDULE)
		return;
	d = cl->next_ns - now;
	tv.tv_sec = (time_t)(d / 1000000000ULL);
	tv.tv_usec = (suseconds_t)(d % 1000000000ULL / 1000);
	evtimer_add(&cl->timer, &tv);
}

/* Every client opens its connection and starts its schedule at a random
 * phase within its first gap, so that the clients do not send in step. */
static void
hsl_clients_start(struct hsl_engine *e)
{
	e->clients_scheduling = e->nclients;
	for (int i = 0; i < e->nclients; i++) {
		struct hsl_client *cl = &e->clients[i];

		cl->scheduling = 1;
		cl->next_ns =
			e->start_ns + (uint64_t)(hsl_rng_unit(&e->arrivals) *
						 e->client_gap_ns);
		if (cl->conn == NULL)
			hsl_conn_open(e, cl);
		hsl_client_tick(-1, 0, cl);
	}
}

static void
hsl_schedule_start(struct hsl_engine *e)
{
	e->phase = HSL_PHASE_SCHEDULE;
	e->start_ns = hs_now_ns();
	e->measure_ns = e->start_ns + (uint64_t)(e->o->warmup_s * 1e9);
	e->end_ns = e->measure_ns + (uint64_t)(e->o->duration_s * 1e9);
	e->next_ns = e->start_ns;
	if (e->clients)
		hsl_clients_start(e);
	else
		hsl_arm(e, e->start_ns);
}

static void
hsl_check_end(struct hsl_engine *e)
{
	if (e->phase == HSL_PHASE_DRAIN && e->queue.len == 0 &&
	    e->cqueued == 0 && e->nbusy == 0)
		hsl_end(e);
}

/* Every HSL_SWEEP_MS: requests and connects past --timeout, the drain. */
static void
hsl_on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct hsl_engine *e = arg;
	uint64_t now = hs_now_ns(), limit = (uint64_t)(e->o->timeout_s * 1e9);
	struct hsl_conn *c, *next;

	for (c = TAILQ_FIRST(&e->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, link);
		if (c->state == HSL_CONN_IDLE || now - c->since_ns < limit)
			continue;
		if (c->state == HSL_CONN_CONNECTING) {
			hsl_connect_failed(c, ETIMEDOUT);
			if (e->phase == HSL_PHASE_OVER)
				return;
			continue;
		}
		hsl_lost(e, c->measured, &e->st->err_timeout);
		hsl_conn_close(c);
	}
	/* A client gives up on a request nobody took up within --timeout of
	 * its plan, as a user does: its wait is a timeout, not a backlog the
	 * client still sends once its connection is served. */
	for (int i = 0; i < e->nclients; i++) {
		struct hsl_client *cl = &e->clients[i];

		while (cl->queue.len > 0 &&
		       now - cl->queue.v[cl->queue.head] >= limit)
			hsl_lost(e, hsl_queue_pop(e, cl) >= e->measure_ns,
				 &e->st->err_timeout);
	}
	hsl_grow(e);
	if (e->phase == HSL_PHASE_DRAIN && now >= e->drain_ns)
		hsl_end(e);
	else
		hsl_check_end(e);
}

/*
 * One --progress-ms line: the interval's answers and their latency from
 * the planned send time (the open-loop, client-side view, as the final
 * percentiles), then a new interval.
 */
static void
hsl_progress_line(struct hsl_engine *e)
{
	static const char *phase[] = { "connect", "schedule", "drain", "over" };
	uint64_t now = hs_now_ns();
	struct timespec wall;

	clock_gettime(CLOCK_REALTIME, &wall);
	printf("{\"progress\":true,\"t\":%.3f,\"elapsed_s\":%.3f,"
	       "\"phase\":\"%s\",\"measuring\":%d,\"offered_rps\":%g,"
	       "\"answers\":%llu,\"lost\":%llu,\"interval_answers\":%llu,"
	       "\"interval_lost\":%llu,\"interval_p50_us\":%llu,"
	       "\"interval_p99_us\":%llu,\"interval_max_us\":%llu}\n",
	       (double)wall.tv_sec + wall.tv_nsec / 1e9,
	       e->start_ns ? (double)(now - e->start_ns) / 1e9 : 0.0,
	       phase[e->phase],
	       e->start_ns && now >= e->measure_ns && now < e->end_ns,
	       e->o->rate, (unsigned long long)e->answers,
	       (unsigned long long)e->lost, (unsigned long long)e->win_answers,
	       (unsigned long long)e->win_lost,
	       (unsigned long long)hs_hist_quantile(e->win, 0.5),
	       (unsigned long long)hs_hist_quantile(e->win, 0.99),
	       (unsigned long long)e->win->max_us);
	fflush(stdout);
	memset(e->win, 0, sizeof(*e->win));
	e->win_answers = e->win_lost = 0;
}

static void
hsl_on_progress(evutil_socket_t fd, short what, void *arg)
{
	hsl_progress_line(arg);
}

static void
hsl_on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct hsl_engine *e = arg;

	e->res->end = HSL_RUN_INTERRUPTED;
	hsl_end(e);
}

/* The engine of one run before its event base: the schedule, the pools. */
static void
hsl_engine_init(struct hsl_engine *e, const struct hsl_run_opts *o,
		struct hsl_mix *mix, struct hsl_stats *st,
		struct hsl_result *res)
{
	memset(e, 0, sizeof(*e));
	memset(st, 0, sizeof(*st));
	memset(res, 0, sizeof(*res));
	e->o = o;
	e->mix = mix;
	e->st = st;
	e->res = res;
	e->phase = HSL_PHASE_CONNECT;
	e->gap_ns = 1e9 / o->rate;
	hsl_rng_seed(&e->arrivals, o->seed ^ 0x5bd1e995ULL);
	TAILQ_INIT(&e->conns);
	e->idle = hs_xcalloc((size_t)o->connections, sizeof(*e->idle));
	if (o->per_connection) {
		e->nclients = o->connections;
		e->clients =
			hs_xcalloc((size_t)e->nclients, sizeof(*e->clients));
		e->client_gap_ns = e->gap_ns * e->nclients;
	}
}

/* The event base and its timers and signals; -1 if libevent fails. */
static int
hsl_engine_events(struct hsl_engine *e)
{
	const struct hsl_run_opts *o = e->o;
	struct event_config *cfg;
	struct timeval sweep = { 0, HSL_SWEEP_MS * 1000 };

	if ((cfg = event_config_new()) == NULL)
		return -1;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
	e->base = event_base_new_with_config(cfg);
	event_config_free(cfg); /* the base keeps no reference to it */
	if (e->base == NULL)
		return -1;
	e->tick = evtimer_new(e->base, hsl_on_tick, e);
	e->sweep = event_new(e->base, -1, EV_PERSIST, hsl_on_sweep, e);
	e->sigint = evsignal_new(e->base, SIGINT, hsl_on_signal, e);
	e->sigterm = evsignal_new(e->base, SIGTERM, hsl_on_signal, e);
	if (!e->tick || !e->sweep || !e->sigint || !e->sigterm)
		return -1;
	if (o->progress_ms > 0) {
		struct timeval every = { o->progress_ms / 1000,
					 o->progress_ms % 1000 * 1000 };

		e->win = hs_xcalloc(1, sizeof(*e->win));
		e->progress =
			event_new(e->base, -1, EV_PERSIST, hsl_on_progress, e);
		if (e->progress == NULL)
			return -1;
		event_add(e->progress, &every);
	}
	event_add(e->sweep, &sweep);
	event_add(e->sigint, NULL);
	event_add(e->sigterm, NULL);
	for (int i = 0; i < e->nclients; i++) {
		e->clients[i].e = e;
		evtimer_assign(&e->clients[i].timer, e->base, hsl_client_tick,
			       &e->clients[i]);
	}
	return 0;
}

/* After the loop: the measured window, and what was left unanswered. */
static void
hsl_engine_account(struct hsl_engine *e)
{
	struct hsl_stats *st = e->st;
	struct hsl_result *res = e->res;
	struct hsl_conn *c;
	uint64_t now;

	if (e->win != NULL && e->win_answers + e->win_lost > 0)
		hsl_progress_line(e); /* the run's last, shorter interval */
	now = hs_now_ns();
	if (e->start_ns != 0 && now > e->measure_ns) {
		uint64_t end = now < e->end_ns ? now : e->end_ns;

		res->elapsed_s = (double)(end - e->measure_ns) / 1e9;
		if (e->last_done_ns > end)
			end = e->last_done_ns;
		res->span_s = (double)(end - e->measure_ns) / 1e9;
	}
	st->unfinished += hsl_ring_count_from(&e->queue, e->measure_ns);
	for (int i = 0; i < e->nclients; i++) {
		struct hsl_client *cl = &e->clients[i];

		st->unfinished +=
			hsl_ring_count_from(&cl->queue, e->measure_ns);
		if (cl->answered > 0)
			st->clients_answered++;
		else
			st->clients_starved++;
	}
	while ((c = TAILQ_FIRST(&e->conns)) != NULL) {
		if (c->state == HSL_CONN_BUSY && c->measured)
			st->unfinished++;
		hsl_conn_close(c);
	}
}

static void
hsl_engine_free(struct hsl_engine *e)
{
	if (e->progress)
		event_free(e->progress);
	free(e->win);
	for (int i = 0; i < e->nclients; i++) {
		if (e->clients[i].e) /* its timer was assigned */
			event_del(&e->clients[i].timer);
		free(e->clients[i].queue.v);
	}
	free(e->clients);
	if (e->tick)
		event_free(e->tick);
	if (e->sweep)
		event_free(e->sweep);
	if (e->sigint)
		event_free(e->sigint);
	if (e->sigterm)
		event_free(e->sigterm);
	if (e->base)
		event_base_free(e->base);
	free(e->queue.v);
	free(e->idle);
}

int
hsl_run(const struct hsl_run_opts *o, struct hsl_mix *mix, struct hsl_stats *st,
	struct hsl_result *res)
{
	struct hsl_engine e;
	int rc = -1;

	hsl_engine_init(&e, o, mix, st, res);
	if (hsl_engine_events(&e) != 0)
		goto out;
	res->end = HSL_RUN_DONE;
	if (hsl_conn_open(&e, e.clients) != 0) {
		snprintf(res->error, sizeof(res->error),
			 "cannot open a "
			 "socket: %s",
			 strerror(errno));
		res->end = HSL_RUN_NO_CONNECT;
	} else {
		event_base_dispatch(e.base);
	}
	hsl_engine_account(&e);
	rc = 0;
out:
	hsl_engine_free(&e);
	return rc;
}
