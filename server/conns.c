/*
 * The connection guard: what keeps hs-server reachable when clients hold
 * connections open on purpose.  libmicrohttpd has an idle timer (reset by
 * every byte) and a connection cap, nothing more, so this file adds:
 *
 *   - a cap on all connections and one per client address, counted
 *     across every loop when MHD reports a new connection (MHD's own
 *     per-IP limit counts per daemon, and each loop is a daemon); a
 *     client over either gets a 503 and is closed;
 *   - an absolute deadline for a request head: a new connection has
 *     --header-timeout-ms to send its first complete head (then 408), a
 *     keep-alive connection --idle-timeout-ms after a response to send the
 *     next one (then it is closed); trickling bytes extends neither;
 *   - a closed peer's slot freed at once.  MHD reads until a short read and
 *     then waits for the next edge, so a FIN that arrived with the last
 *     bytes is never seen: the connection sits in CLOSE-WAIT until the idle
 *     timer.  Each loop watches its sockets for EPOLLRDHUP in an epoll set
 *     of its own, nested in MHD's.
 *
 * To close a connection MHD owns, the guard shuts its socket down: MHD's
 * epoll then reports a hang-up and MHD closes and frees it on its next
 * pass.  Everything here runs on the loop's thread, except the counts
 * (atomics) and the address table (shared, under a mutex).
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "hs_log.h"
#include "hs_util.h"
#include "srv_conns.h"
#include "srv_core.h"

#define SRV_IP_BUCKETS   1024
#define SRV_WATCH_EVENTS 64

/* Clients with at least one open connection. */
struct srv_ip {
	unsigned char addr[16]; /* IPv4 as v4-mapped IPv6 */
	unsigned n;             /* open connections */
	struct srv_ip *next;
};

struct srv_ip_table {
	pthread_mutex_t lock;
	struct srv_ip *b[SRV_IP_BUCKETS];
};

static const char *const state_names[] = {
	[SRV_CONN_HEAD_FIRST] = "head-first",
	[SRV_CONN_HEAD_NEXT] = "head-next",
	[SRV_CONN_BODY] = "body",
	[SRV_CONN_ANSWER] = "answer",
	[SRV_CONN_CLOSING] = "closing",
};

/* One warning a second at most per kind: a flood must not flood the log. */
static void
warn_limited(uint64_t *last_ns, const char *what, unsigned long long n)
{
	uint64_t now = hs_now_ns(),
		 prev = __atomic_load_n(last_ns, __ATOMIC_RELAXED);

	if (now - prev < 1000000000ULL ||
	    !__atomic_compare_exchange_n(last_ns, &prev, now, 0,
					 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return;
	log_warnx("%s (%llu so far)", what, n);
}

static void
addr_key(const struct sockaddr *sa, unsigned char key[16])
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr,
		       4);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	}
}

static unsigned
addr_hash(const unsigned char key[16])
{
	uint32_t h = 2166136261u;

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % SRV_IP_BUCKETS;
}

struct srv_ip_table *
srv_ip_table_new(void)
{
	struct srv_ip_table *t = hs_xcalloc(1, sizeof(*t));

	pthread_mutex_init(&t->lock, NULL);
	return t;
}

void
srv_ip_table_free(struct srv_ip_table *t)
{
	if (t == NULL)
		return;
	for (int i = 0; i < SRV_IP_BUCKETS; i++)
		while (t->b[i] != NULL) {
			struct srv_ip *e = t->b[i];

			t->b[i] = e->next;
			free(e);
		}
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* Takes a slot for key; 0, or -1 when the address is at its cap. */
static int
ip_take(struct srv_ip_table *t, const unsigned char key[16], unsigned cap)
{
	struct srv_ip **pp, *e;
	int rc = 0;

	pthread_mutex_lock(&t->lock);
	pp = &t->b[addr_hash(key)];
	for (e = *pp; e != NULL; e = e->next)
		if (memcmp(e->addr, key, 16) == 0)
			break;
	if (e == NULL) {
		e = hs_xcalloc(1, sizeof(*e));
		memcpy(e->addr, key, 16);
		e->next = *pp;
		*pp = e;
	}
	if (e->n >= cap)
		rc = -1;
	else
		e->n++;
	pthread_mutex_unlock(&t->lock);
	return rc;
}

static void
ip_release(struct srv_ip_table *t, const unsigned char key[16])
{
	struct srv_ip **pp, *e;

	pthread_mutex_lock(&t->lock);
	for (pp = &t->b[addr_hash(key)]; (e = *pp) != NULL; pp = &e->next)
		if (memcmp(e->addr, key, 16) == 0)
			break;
	if (e != NULL && e->n > 0 && --e->n == 0) {
		*pp = e->next;
		free(e);
	}
	pthread_mutex_unlock(&t->lock);
}

/*
 * Takes a slot for a new connection: 0, or -1 when the server is at
 * --max-conns or the client at --max-conns-per-ip.  Counted here rather
 * than in MHD's accept policy so that a refused client gets a 503 and
 * every slot taken is given back by the same close notification.
 */
static int
slot_take(struct srv *s, struct srv_conn *sc)
{
	unsigned n = __atomic_add_fetch(&s->admitted, 1, __ATOMIC_RELAXED);
	const char *why = NULL;

	if (n > s->cfg.conn_limit)
		why = "connection refused: at --max-conns";
	else if (s->cfg.conn_limit_per_ip > 0 &&
		 ip_take(s->ips, sc->addr, s->cfg.conn_limit_per_ip) < 0)
		why = "connection refused: client at --max-conns-per-ip";
	if (why == NULL) {
		sc->counted = 1;
		return 0;
	}
	__atomic_fetch_sub(&s->admitted, 1, __ATOMIC_RELAXED);
	warn_limited(&s->refused_log_ns, why,
		     __atomic_add_fetch(&s->refused, 1, __ATOMIC_RELAXED));
	return -1;
}

static void
slot_release(struct srv *s, struct srv_conn *sc)
{
	if (!sc->counted)
		return;
	__atomic_fetch_sub(&s->admitted, 1, __ATOMIC_RELAXED);
	if (s->cfg.conn_limit_per_ip > 0)
		ip_release(s->ips, sc->addr);
}

static struct srv_conn_list *
list_of(struct srv_loop *l, enum srv_conn_state st)
{
	if (st == SRV_CONN_HEAD_FIRST)
		return &l->head_first;
	if (st == SRV_CONN_HEAD_NEXT)
		return &l->head_next;
	return NULL;
}

/*
 * The one place a connection changes state.  A connection waiting for a
 * head sits on its loop's list for that wait, in deadline order (every
 * entry of a list has the same timeout, so appending keeps the order).
 */
static void
conn_set_state(struct srv_conn *sc, enum srv_conn_state st,
	       uint64_t deadline_ns)
{
	struct srv_loop *l = sc->loop;
	struct srv_conn_list *from = list_of(l, sc->state),
			     *to = list_of(l, st);

	if (sc->state == SRV_CONN_CLOSING)
		return; /* final: MHD closes it on its next pass */
	log_debug("connection %d: %s -> %s", sc->fd, state_names[sc->state],
		  state_names[st]);
	if (from != NULL)
		TAILQ_REMOVE(from, sc, link);
	sc->state = st;
	sc->deadline_ns = deadline_ns;
	if (to != NULL)
		TAILQ_INSERT_TAIL(to, sc, link);
}

/*
 * Makes MHD close the connection: optionally a last response of our own
 * (MHD is not writing: the connection waits for a head), then shutdown(2),
 * which MHD's epoll reports as a hang-up.
 */
static void
conn_close(struct srv_conn *sc, const char *resp, size_t len)
{
	if (sc->fd >= 0) {
		if (resp != NULL &&
		    send(sc->fd, resp, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			log_debug("connection %d: cannot send the 408", sc->fd);
		(void)shutdown(sc->fd, SHUT_RDWR);
	}
	conn_set_state(sc, SRV_CONN_CLOSING, 0);
}

static const char r503[] =
	"HTTP/1.1 503 Service Unavailable\r\n"
	"Server: hammerstack\r\n"
	"Content-Type: application/json\r\n"
	"Retry-After: 1\r\n"
	"Connection: close\r\n"
	"Content-Length: 46\r\n\r\n"
	"{\"error\":\"too many connections\",\"status\":503}\n";

/* Opened and closed connections: slots, the watch set, /stats. */
void
srv_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
		  enum MHD_ConnectionNotificationCode code)
{
	struct srv_loop *l = cls;
	struct srv *s = l->srv;
	struct srv_conn *sc = *socket_context;
	const union MHD_ConnectionInfo *ci;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		__atomic_fetch_add(&s->open_conns, 1, __ATOMIC_RELAXED);
		sc = hs_xcalloc(1, sizeof(*sc));
		sc->fd = -1;
		ci = MHD_get_connection_info(conn,
					     MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		if (ci != NULL && ci->client_addr != NULL)
			addr_key(ci->client_addr, sc->addr);
		ci = MHD_get_connection_info(conn,
					     MHD_CONNECTION_INFO_CONNECTION_FD);
		if (ci != NULL)
			sc->fd = ci->connect_fd;
		*socket_context = sc;
		sc->loop = l;
		sc->state = SRV_CONN_ANSWER;
		if (slot_take(s, sc) < 0) {
			conn_close(sc, r503, sizeof(r503) - 1);
			return;
		}
		conn_set_state(sc, SRV_CONN_HEAD_FIRST,
			       hs_now_ns() +
				       s->cfg.header_timeout_ms * 1000000ULL);
		if (sc->fd >= 0) {
			struct epoll_event ev = { .events =
							  EPOLLRDHUP | EPOLLET,
						  .data.ptr = sc };

			if (epoll_ctl(l->watch_fd, EPOLL_CTL_ADD, sc->fd, &ev) <
			    0)
				log_warn("cannot watch connection %d", sc->fd);
		}
		return;
	}
	if (code != MHD_CONNECTION_NOTIFY_CLOSED || sc == NULL)
		return;
	__atomic_fetch_sub(&s->open_conns, 1, __ATOMIC_RELAXED);
	slot_release(s, sc);
	if (sc->loop != NULL) {
		struct srv_conn_list *from = list_of(sc->loop, sc->state);

		if (from != NULL)
			TAILQ_REMOVE(from, sc, link);
		if (sc->counted && sc->fd >= 0)
			(void)epoll_ctl(sc->loop->watch_fd, EPOLL_CTL_DEL,
					sc->fd, NULL);
	}
	free(sc);
	*socket_context = NULL;
}

/* The guard state of a request's connection (NULL off the loops). */
struct srv_conn *
srv_conn_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn,
					MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct srv_conn *sc = ci != NULL ? ci->socket_context : NULL;

	return sc != NULL && sc->loop != NULL ? sc : NULL;
}

void
srv_conn_head_done(struct srv_conn *sc)
{
	if (sc != NULL)
		conn_set_state(sc, SRV_CONN_BODY, 0);
}

void
srv_conn_answering(struct srv_conn *sc)
{
	if (sc != NULL)
		conn_set_state(sc, SRV_CONN_ANSWER, 0);
}

/*
 * The response is sent: the next head is due within the idle timeout.  A
 * peer that already closed its side will send none; its deadline is now,
 * so the loop closes it after this pass (unless the pass finds a pipelined
 * request already in MHD's buffer).
 */
void
srv_conn_request_done(struct srv_conn *sc)
{
	struct srv *s;

	if (sc == NULL)
		return;
	s = sc->loop->srv;
	conn_set_state(sc, SRV_CONN_HEAD_NEXT,
		       sc->peer_closed ? hs_now_ns()
				       : hs_now_ns() + s->cfg.idle_timeout_ms *
							       1000000ULL);
	if (sc->peer_closed && sc->state == SRV_CONN_HEAD_NEXT) {
		/* Due now: to the front, so the next sweep sees it. */
		TAILQ_REMOVE(&sc->loop->head_next, sc, link);
		TAILQ_INSERT_HEAD(&sc->loop->head_next, sc, link);
	}
}

static void
expire(struct srv_loop *l, uint64_t now)
{
	static const char r408[] =
		"HTTP/1.1 408 Request Timeout\r\n"
		"Server: hammerstack\r\n"
		"Content-Type: application/json\r\n"
		"Connection: close\r\n"
		"Content-Length: 51\r\n\r\n"
		"{\"error\":\"request head not received\",\"status\":408}\n";
	struct srv *s = l->srv;
	struct srv_conn *sc;

	while ((sc = TAILQ_FIRST(&l->head_first)) != NULL &&
	       sc->deadline_ns <= now) {
		warn_limited(&s->head_timeout_log_ns,
			     "connection closed: no request head within "
			     "--header-timeout-ms",
			     __atomic_add_fetch(&s->head_timeouts, 1,
						__ATOMIC_RELAXED));
		conn_close(sc, r408, sizeof(r408) - 1);
	}
	while ((sc = TAILQ_FIRST(&l->head_next)) != NULL &&
	       sc->deadline_ns <= now)
		conn_close(sc, NULL, 0);
}

/*
 * Whether bytes the peer sent before its FIN still wait in the socket:
 * MHD has an edge for them and reads them on its next pass.
 */
static int
unread_bytes(int fd)
{
	char c;

	return fd >= 0 && recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/* Peers that closed their side: see the file comment. */
static void
reap_closed_peers(struct srv_loop *l)
{
	struct epoll_event ev[SRV_WATCH_EVENTS];
	int n;

	do {
		n = epoll_wait(l->watch_fd, ev, SRV_WATCH_EVENTS, 0);
		for (int i = 0; i < n; i++) {
			struct srv_conn *sc = ev[i].data.ptr;
			struct epoll_event again = {
				.events = EPOLLRDHUP | EPOLLET, .data.ptr = sc
			};

			sc->peer_closed = 1;
			/*
			 * A request being answered is answered first (a
			 * client may half-close after sending it);
			 * srv_conn_request_done closes it.
			 */
			if (sc->state != SRV_CONN_HEAD_FIRST &&
			    sc->state != SRV_CONN_HEAD_NEXT &&
			    sc->state != SRV_CONN_BODY)
				continue;
			/*
			 * Waiting for a head or a body: once MHD has read
			 * what is left, none can come.  Until then, re-arm
			 * (the hang-up is still there, so the next sweep
			 * sees it again), a bounded number of times.
			 */
			if (unread_bytes(sc->fd) && sc->rearmed < 64 &&
			    epoll_ctl(l->watch_fd, EPOLL_CTL_MOD, sc->fd,
				      &again) == 0) {
				sc->rearmed++;
				continue;
			}
			conn_close(sc, NULL, 0);
		}
	} while (n == SRV_WATCH_EVENTS);
}

/* After each MHD pass. */
void
srv_conns_sweep(struct srv_loop *l)
{
	reap_closed_peers(l);
	expire(l, hs_now_ns());
}

/* How long the loop may block: until the earliest head deadline (-1: no
   deadline). */
int64_t
srv_conns_wait_ms(struct srv_loop *l)
{
	struct srv_conn *a = TAILQ_FIRST(&l->head_first);
	struct srv_conn *b = TAILQ_FIRST(&l->head_next);
	uint64_t d, now;

	if (a == NULL && b == NULL)
		return -1;
	d = a == NULL                         ? b->deadline_ns
	    : b == NULL                       ? a->deadline_ns
	    : a->deadline_ns < b->deadline_ns ? a->deadline_ns
					      : b->deadline_ns;
	now = hs_now_ns();
	/* Rounded up: waking early would only spin. */
	return d <= now ? 0 : (int64_t)((d - now + 999999) / 1000000);
}
