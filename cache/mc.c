/*
 * The memcached text protocol, spoken strictly: one connection per server
 * per handle, one command and one complete reply at a time, and every reply
 * checked before a byte of it is used.
 *
 * Why not libmemcached's own I/O (it still does the key distribution):
 * libmemcached 1.1 trusts the peer.  Measured against a fake memcached, an
 * add or cas answered END, DELETED or OK trips assert(memcached_failed(rc))
 * in memcached_send_ascii (SIGABRT; Debian builds keep asserts), a VALUE
 * line with a key longer than 250 bytes overruns memcached_result_st's
 * item_key, a length near 2^64 wraps its "length + 2" and writes before its
 * buffer (SIGSEGV), a wrong terminator is served as a body, and
 * memcached_get returns whatever key a VALUE line names.  Here a reply that
 * is not exactly what the command allows is MEMCACHED_PROTOCOL_ERROR,
 * counted in protocol_errors, and its connection is closed, so that nothing
 * left on it can be read as the answer to a later command.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "cache_int.h"
#include "hs_log.h"
#include "hs_util.h"

#define MC_RBUF     16384 /* read buffer; holds any reply line */
#define MC_LINE_MAX 1024  /* longest reply line accepted */
#define MC_KEY_MAX  250   /* the protocol's key limit */
/*
 * io_timeout_ms bounds each wait for the socket; a command and its whole
 * reply get this many of them at most, so that a peer that trickles bytes
 * cannot hold a thread for long.
 */
#define MC_CMD_WAITS 20

struct mc_conn {
	int fd;
	uint64_t deadline_ns; /* the current command's end */
	size_t off, len;      /* unread bytes are rbuf[off, len) */
	char rbuf[MC_RBUF];
};

/* ---- connections ------------------------------------------------------ */

struct mc_conn *
cache_mc_conns_new(unsigned n)
{
	struct mc_conn *v = hs_xcalloc(n, sizeof(*v));

	for (unsigned i = 0; i < n; i++)
		v[i].fd = -1;
	return v;
}

static void
conn_close(struct mc_conn *m)
{
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	m->off = m->len = 0;
}

void
cache_mc_close_all(struct cache *c)
{
	for (unsigned i = 0; i < c->sh->nbrk; i++)
		conn_close(&c->conns[i]);
}

void
cache_mc_conns_free(struct mc_conn *v, unsigned n)
{
	if (v == NULL)
		return;
	for (unsigned i = 0; i < n; i++)
		conn_close(&v[i]);
	free(v);
}

/* A reply that breaks the protocol: counted, logged (limited), closed. */
static memcached_return_t
proto_err(struct cache *c, unsigned srv, const char *what)
{
	struct cache_breaker *b = &c->sh->brk[srv];

	conn_close(&c->conns[srv]);
	CNT_INC(c->sh, protocol_errors);
	snprintf(c->err, sizeof(c->err), "%s: protocol error: %s", b->name,
		 what);
	log_warnx_rl("cache: memcached %s: %s; connection closed "
		     "(counted in protocol_errors)",
		     b->name, what);
	return MEMCACHED_PROTOCOL_ERROR;
}

/* Waits for ev on fd up to ms, and not past deadline_ns (0: none);
   MEMCACHED_SUCCESS or TIMEOUT / ERRNO. */
static memcached_return_t
wait_fd(int fd, short ev, unsigned ms, uint64_t deadline_ns)
{
	struct pollfd p = { .fd = fd, .events = ev };
	uint64_t now = hs_now_ns();
	int n;

	if (deadline_ns != 0) {
		if (now >= deadline_ns)
			return MEMCACHED_TIMEOUT;
		if ((deadline_ns - now) / 1000000u < ms)
			ms = (unsigned)((deadline_ns - now) / 1000000u) + 1;
	}
	do
		n = poll(&p, 1, (int)ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return MEMCACHED_ERRNO;
	if (n == 0)
		return MEMCACHED_TIMEOUT;
	return MEMCACHED_SUCCESS;
}

/* Connects to one address of the server, within connect_timeout_ms. */
static int
connect_one(const struct addrinfo *ai, unsigned ms)
{
	int fd, one = 1, err = 0;
	socklen_t elen = sizeof(err);

	fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
	if (fd < 0)
		return -1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return fd;
	if (errno == EINPROGRESS &&
	    wait_fd(fd, POLLOUT, ms, 0) == MEMCACHED_SUCCESS &&
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0)
		return fd;
	close(fd);
	return -1;
}

static memcached_return_t
conn_open(struct cache *c, unsigned srv)
{
	struct cache_breaker *b = &c->sh->brk[srv];
	struct mc_conn *m = &c->conns[srv];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	char port[16];
	int fd = -1;

	snprintf(port, sizeof(port), "%d", b->port);
	if (getaddrinfo(b->host, port, &hints, &res) != 0 || res == NULL)
		return MEMCACHED_HOST_LOOKUP_FAILURE;
	/* Every address in turn, as "localhost" may name ::1 first. */
	for (const struct addrinfo *ai = res; ai != NULL && fd < 0;
	     ai = ai->ai_next)
		fd = connect_one(ai, c->sh->o.connect_timeout_ms);
	freeaddrinfo(res);
	if (fd < 0)
		return MEMCACHED_CONNECTION_FAILURE;
	m->fd = fd;
	m->off = m->len = 0;
	return MEMCACHED_SUCCESS;
}

/*
 * A connection is used only in step with the server: bytes that arrived
 * unasked (a late reply, a lie) make it unusable; an end of file (the
 * server restarted) just means reconnecting.
 */
static memcached_return_t
conn_ready(struct cache *c, unsigned srv)
{
	struct mc_conn *m = &c->conns[srv];
	char ch;
	ssize_t n;

	if (m->fd >= 0) {
		if (m->len > m->off)
			return proto_err(c, srv,
					 "unasked bytes before a command");
		n = recv(m->fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n > 0)
			return proto_err(c, srv,
					 "unasked bytes before a command");
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			conn_close(m);
	}
	if (m->fd < 0) {
		memcached_return_t rc = conn_open(c, srv);

		if (rc != MEMCACHED_SUCCESS)
			return rc;
	}
	m->deadline_ns = hs_now_ns() + (uint64_t)MC_CMD_WAITS *
					       c->sh->o.io_timeout_ms *
					       1000000u;
	return MEMCACHED_SUCCESS;
}

static memcached_return_t
send_iov(struct cache *c, unsigned srv, struct iovec *iov, int cnt)
{
	struct mc_conn *m = &c->conns[srv];
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)cnt };
	memcached_return_t rc;

	while (mh.msg_iovlen > 0) {
		ssize_t n = sendmsg(m->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				rc = MEMCACHED_WRITE_FAILURE;
				goto fail;
			}
			rc = wait_fd(m->fd, POLLOUT, c->sh->o.io_timeout_ms,
				     m->deadline_ns);
			if (rc != MEMCACHED_SUCCESS)
				goto fail;
			continue;
		}
		while (mh.msg_iovlen > 0 && (size_t)n >= mh.msg_iov->iov_len) {
			n -= (ssize_t)mh.msg_iov->iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen > 0) {
			mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + n;
			mh.msg_iov->iov_len -= (size_t)n;
		}
	}
	return MEMCACHED_SUCCESS;
fail:
	conn_close(m);
	return rc;
}

/* Reads more into the buffer (compacting it first). */
static memcached_return_t
fill(struct cache *c, unsigned srv)
{
	struct mc_conn *m = &c->conns[srv];
	memcached_return_t rc;
	ssize_t n;

	if (m->off > 0) {
		memmove(m->rbuf, m->rbuf + m->off, m->len - m->off);
		m->len -= m->off;
		m->off = 0;
	}
	for (;;) {
		n = recv(m->fd, m->rbuf + m->len, sizeof(m->rbuf) - m->len,
			 MSG_DONTWAIT);
		if (n > 0) {
			m->len += (size_t)n;
			return MEMCACHED_SUCCESS;
		}
		if (n == 0) {
			rc = MEMCACHED_CONNECTION_FAILURE;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			rc = MEMCACHED_READ_FAILURE;
			break;
		}
		rc = wait_fd(m->fd, POLLIN, c->sh->o.io_timeout_ms,
			     m->deadline_ns);
		if (rc != MEMCACHED_SUCCESS)
			break;
	}
	conn_close(m);
	return rc;
}

/*
 * The next reply line, without its CRLF, in *line / *len (valid until the
 * next read).  A line longer than MC_LINE_MAX, or with a NUL or a bare LF,
 * is a protocol error.
 */
static memcached_return_t
read_line(struct cache *c, unsigned srv, const char **line, size_t *len)
{
	struct mc_conn *m = &c->conns[srv];
	memcached_return_t rc;

	for (;;) {
		char *p = m->rbuf + m->off;
		size_t avail = m->len - m->off;
		char *nl = memchr(p, '\n', avail);

		if (nl != NULL) {
			size_t n = (size_t)(nl - p);

			if (n == 0 || p[n - 1] != '\r' || n - 1 > MC_LINE_MAX ||
			    memchr(p, '\0', n) != NULL)
				return proto_err(c, srv,
						 "malformed reply line");
			*line = p;
			*len = n - 1;
			m->off += n + 1;
			return MEMCACHED_SUCCESS;
		}
		if (avail > MC_LINE_MAX)
			return proto_err(c, srv, "reply line too long");
		rc = fill(c, srv);
		if (rc != MEMCACHED_SUCCESS)
			return rc;
	}
}

/* Reads exactly n data bytes and their CRLF into a malloc'd, NUL-terminated
   buffer. */
static memcached_return_t
read_data(struct cache *c, unsigned srv, size_t n, char **out)
{
	struct mc_conn *m = &c->conns[srv];
	char *v = hs_xmalloc(n + 1);
	size_t got = 0;
	memcached_return_t rc;

	*out = NULL;
	for (;;) {
		size_t avail = m->len - m->off, take = n - got;

		if (take > avail)
			take = avail;
		memcpy(v + got, m->rbuf + m->off, take);
		got += take;
		m->off += take;
		if (got == n && m->len - m->off >= 2)
			break;
		rc = fill(c, srv);
		if (rc != MEMCACHED_SUCCESS) {
			free(v);
			return rc;
		}
	}
	if (memcmp(m->rbuf + m->off, "\r\n", 2) != 0) {
		free(v);
		return proto_err(c, srv, "value not followed by CRLF");
	}
	m->off += 2;
	v[n] = '\0';
	*out = v;
	return MEMCACHED_SUCCESS;
}

/* The reply is complete: anything after it was never asked for. */
static memcached_return_t
reply_done(struct cache *c, unsigned srv, memcached_return_t rc)
{
	struct mc_conn *m = &c->conns[srv];

	if (m->fd >= 0 && m->len > m->off)
		return proto_err(c, srv, "bytes after a complete reply");
	return rc;
}

static bool
line_is(const char *line, size_t len, const char *word)
{
	size_t wl = strlen(word);

	return len == wl && memcmp(line, word, wl) == 0;
}

static bool
line_starts(const char *line, size_t len, const char *word)
{
	size_t wl = strlen(word);

	return len >= wl && memcmp(line, word, wl) == 0 &&
	       (len == wl || line[wl] == ' ');
}

/* An error the server may send to any command; 0 if the line is not one. */
static memcached_return_t
server_error(struct cache *c, unsigned srv, const char *line, size_t len)
{
	memcached_return_t rc;

	if (line_starts(line, len, "SERVER_ERROR"))
		rc = MEMCACHED_SERVER_ERROR;
	else if (line_starts(line, len, "CLIENT_ERROR"))
		rc = MEMCACHED_CLIENT_ERROR;
	else if (line_is(line, len, "ERROR"))
		rc = MEMCACHED_ERROR;
	else
		return MEMCACHED_SUCCESS;
	/* Answered, but what follows on this connection is not ours to
	   guess (memcached swallows a refused value's bytes): start anew. */
	conn_close(&c->conns[srv]);
	snprintf(c->err, sizeof(c->err), "%s: %.*s", c->sh->brk[srv].name,
		 (int)(len > 100 ? 100 : len), line);
	return rc;
}

static bool
key_ok(const char *key, size_t klen)
{
	if (klen == 0 || klen > MC_KEY_MAX)
		return false;
	for (size_t i = 0; i < klen; i++)
		if ((unsigned char)key[i] <= ' ' || key[i] == 0x7f)
			return false;
	return true;
}

unsigned
cache_mc_server_of(struct cache *c, const char *key, size_t klen)
{
	uint32_t i;

	if (c->sh->nbrk == 1)
		return 0;
	i = memcached_generate_hash(c->mc, key, klen);
	return i < c->sh->nbrk ? i : 0;
}

/* ---- storage and delete ----------------------------------------------- */

memcached_return_t
cache_mc_store(struct cache *c, enum cache_mc_verb verb, const char *key,
	       size_t klen, const char *val, size_t vlen, uint32_t flags,
	       unsigned exptime, uint64_t cas)
{
	static const char *const names[] = { "set", "add", "cas" };
	unsigned srv = cache_mc_server_of(c, key, klen);
	char head[128], tail[64];
	struct iovec iov[5];
	const char *line;
	size_t len;
	memcached_return_t rc;
	int tl;

	if (!key_ok(key, klen))
		return MEMCACHED_BAD_KEY_PROVIDED;
	rc = conn_ready(c, srv);
	if (rc != MEMCACHED_SUCCESS)
		return rc;
	if (verb == CACHE_MC_CAS)
		tl = snprintf(tail, sizeof(tail),
			      " %" PRIu32 " %u %zu %" PRIu64 "\r\n", flags,
			      exptime, vlen, cas);
	else
		tl = snprintf(tail, sizeof(tail), " %" PRIu32 " %u %zu\r\n",
			      flags, exptime, vlen);
	snprintf(head, sizeof(head), "%s ", names[verb]);
	iov[0] = (struct iovec){ head, strlen(head) };
	iov[1] = (struct iovec){ (void *)key, klen };
	iov[2] = (struct iovec){ tail, (size_t)tl };
	iov[3] = (struct iovec){ (void *)val, vlen };
	iov[4] = (struct iovec){ "\r\n", 2 };
	rc = send_iov(c, srv, iov, 5);
	if (rc != MEMCACHED_SUCCESS)
		return rc;
	rc = read_line(c, srv, &line, &len);
	if (rc != MEMCACHED_SUCCESS)
		return rc;
	if (line_is(line, len, "STORED"))
		return reply_done(c, srv, MEMCACHED_SUCCESS);
	if (line_is(line, len, "NOT_STORED") && verb != CACHE_MC_CAS)
		return reply_done(c, srv, MEMCACHED_NOTSTORED);
	if (line_is(line, len, "EXISTS") && verb == CACHE_MC_CAS)
		return reply_done(c, srv, MEMCACHED_DATA_EXISTS);
	if (line_is(line, len, "NOT_FOUND") && verb == CACHE_MC_CAS)
		return reply_done(c, srv, MEMCACHED_NOTFOUND);
	rc = server_error(c, srv, line, len);
	if (rc != MEMCACHED_SUCCESS)
		return rc;
	return proto_err(c, srv, "unexpected reply to a store");
}

memcached_return_t
cache_mc_delete(struct cache *c, const char *key, size_t klen)
{
	unsigned srv = cache_mc_server_of(c, key, klen);
	struct iovec iov[3];
	const char *line;
	size_t len;
	memcached_return_t rc;

	if (!key_ok(key, klen))
		return MEMCACHED_BAD_KEY_PROVIDED;
	rc = conn_ready(c, srv);
	if (rc != MEMCACHED_SUCCESS)
		return rc;
	iov[0] = (struct iovec){ "delete ", 7 };
	iov[1] = (struct iovec){ (void *)key, klen };
	iov[2] = (struct iovec){ "\r\n", 2 };
	rc = send_iov(c, srv, iov, 3);
	if (rc != MEMCACHED_SUCCESS)
		return rc;
	rc = read_line(c, srv, &line, &len);
	if (rc != MEMCACHED_SUCCESS)
		return rc;
	if (line_is(line, len, "DELETED"))
		return reply_done(c, srv, MEMCACHED_SUCCESS);
	if (line_is(line, len, "NOT_FOUND"))
		return reply_done(c, srv, MEMCACHED_NOTFOUND);
	rc = server_error(c, srv, line, len);
	if (rc != MEMCACHED_SUCCESS)
		return rc;
	return proto_err(c, srv, "unexpected reply to a delete");
}

/* ---- gets ------------------------------------------------------------- */

/* Decimal digits only, no sign, no overflow past max. */
static bool
parse_u64(const char *p, size_t n, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		if (v > (max - (uint64_t)(p[i] - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	*out = v;
	return true;
}

/* Splits "VALUE <key> <flags> <bytes> <cas>" (single spaces, nothing more). */
static bool
parse_value_line(const char *line, size_t len, struct cache_mc_item *it)
{
	const char *f[5];
	size_t fl[5], nf = 0, i = 0;
	uint64_t v;

	while (i < len && nf < 5) {
		size_t j = i;

		while (j < len && line[j] != ' ')
			j++;
		f[nf] = line + i;
		fl[nf++] = j - i;
		if (j == len)
			break;
		i = j + 1;
		if (i == len)
			return false; /* trailing space */
	}
	if (nf != 5 || (size_t)(f[4] + fl[4] - line) != len || fl[0] != 5 ||
	    memcmp(f[0], "VALUE", 5) != 0)
		return false;
	if (!key_ok(f[1], fl[1]))
		return false;
	it->key = f[1];
	it->klen = fl[1];
	if (!parse_u64(f[2], fl[2], UINT32_MAX, &v))
		return false;
	it->flags = (uint32_t)v;
	if (!parse_u64(f[3], fl[3], CACHE_VALUE_MAX, &v))
		return false;
	it->vlen = (size_t)v;
	return parse_u64(f[4], fl[4], UINT64_MAX, &it->cas);
}

struct srv_keys {
	size_t *idx; /* indexes into the caller's keys, in the order sent */
	size_t n;
};

/*
 * Reads one server's reply to "gets": VALUE items for the keys it was asked,
 * in the order asked (memcached answers in that order, skipping misses),
 * then END.  The items are handed to cb only once the whole reply checked
 * out, so that a reply that goes wrong half-way serves nothing.
 */
static memcached_return_t
read_gets(struct cache *c, unsigned srv, const char *const *keys,
	  const size_t *lens, const struct srv_keys *sk, cache_mc_item_fn cb,
	  void *arg)
{
	struct cache_mc_item *items =
		hs_xcalloc(sk->n ? sk->n : 1, sizeof(*items));
	size_t nit = 0, next = 0;
	memcached_return_t rc;

	for (;;) {
		const char *line;
		size_t len;
		struct cache_mc_item it;
		char *kcopy;

		rc = read_line(c, srv, &line, &len);
		if (rc != MEMCACHED_SUCCESS)
			goto out;
		if (line_is(line, len, "END"))
			break;
		if (!line_starts(line, len, "VALUE")) {
			rc = server_error(c, srv, line, len);
			if (rc == MEMCACHED_SUCCESS)
				rc = proto_err(c, srv,
					       "unexpected reply to gets");
			goto out;
		}
		memset(&it, 0, sizeof(it));
		if (!parse_value_line(line, len, &it)) {
			rc = proto_err(c, srv, "malformed VALUE line");
			goto out;
		}
		/* Only a key we asked for, and only in the order asked. */
		while (next < sk->n &&
		       !(lens[sk->idx[next]] == it.klen &&
			 memcmp(keys[sk->idx[next]], it.key, it.klen) == 0))
			next++;
		if (next == sk->n) {
			rc = proto_err(c, srv, "VALUE for a key not asked for");
			goto out;
		}
		it.idx = sk->idx[next++];
		/* The line lives in the read buffer, which read_data reuses. */
		kcopy = hs_xmalloc(it.klen + 1);
		memcpy(kcopy, it.key, it.klen);
		kcopy[it.klen] = '\0';
		it.key = kcopy;
		rc = read_data(c, srv, it.vlen, &it.value);
		if (rc != MEMCACHED_SUCCESS) {
			free(kcopy);
			goto out;
		}
		items[nit++] = it;
	}
	rc = reply_done(c, srv, MEMCACHED_SUCCESS);
	if (rc != MEMCACHED_SUCCESS)
		goto out;
	for (size_t i = 0; i < nit; i++)
		cb(arg, &items[i]);
out:
	for (size_t i = 0; i < nit; i++) {
		free(items[i].value);
		free((char *)items[i].key);
	}
	free(items);
	return rc;
}

memcached_return_t
cache_mc_gets(struct cache *c, const char *const *keys, const size_t *lens,
	      size_t n, memcached_return_t *srv_rc, cache_mc_item_fn cb,
	      void *arg)
{
	unsigned ns = c->sh->nbrk;
	struct srv_keys *sk = hs_xcalloc(ns, sizeof(*sk));
	memcached_return_t *own = NULL, rc, first = MEMCACHED_SUCCESS;

	if (srv_rc == NULL)
		srv_rc = own = hs_xcalloc(ns, sizeof(*srv_rc));
	for (unsigned j = 0; j < ns; j++) {
		sk[j].idx = hs_xcalloc(n ? n : 1, sizeof(size_t));
		srv_rc[j] = MEMCACHED_SUCCESS;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned j;

		if (!key_ok(keys[i], lens[i])) {
			first = MEMCACHED_BAD_KEY_PROVIDED;
			goto out;
		}
		j = cache_mc_server_of(c, keys[i], lens[i]);
		sk[j].idx[sk[j].n++] = i;
	}
	/* Ask every server first, then read: the servers work in parallel. */
	for (unsigned j = 0; j < ns; j++) {
		if (sk[j].n == 0)
			continue;
		rc = conn_ready(c, j);
		if (rc == MEMCACHED_SUCCESS) {
			size_t total = 6, off = 4;
			char *cmd;
			struct iovec iov;

			for (size_t k = 0; k < sk[j].n; k++)
				total += 1 + lens[sk[j].idx[k]];
			cmd = hs_xmalloc(total);
			memcpy(cmd, "gets", 4);
			for (size_t k = 0; k < sk[j].n; k++) {
				size_t i = sk[j].idx[k];

				cmd[off++] = ' ';
				memcpy(cmd + off, keys[i], lens[i]);
				off += lens[i];
			}
			memcpy(cmd + off, "\r\n", 2);
			iov = (struct iovec){ cmd, off + 2 };
			rc = send_iov(c, j, &iov, 1);
			free(cmd);
		}
		srv_rc[j] = rc;
	}
	for (unsigned j = 0; j < ns; j++) {
		if (sk[j].n == 0 || srv_rc[j] != MEMCACHED_SUCCESS)
			continue;
		srv_rc[j] = read_gets(c, j, keys, lens, &sk[j], cb, arg);
	}
	for (unsigned j = 0; j < ns; j++)
		if (sk[j].n > 0 && srv_rc[j] != MEMCACHED_SUCCESS &&
		    first == MEMCACHED_SUCCESS)
			first = srv_rc[j];
out:
	for (unsigned j = 0; j < ns; j++)
		free(sk[j].idx);
	free(sk);
	free(own);
	return first;
}
