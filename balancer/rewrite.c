/*
 * What the proxy writes besides the bytes it relays: the head sent to the
 * backend (hop-by-hop fields out, X-Forwarded-*, Via), the head sent to
 * the client, the walk over chunked framing that finds a body's end, and
 * the --deny-path check.  No I/O: buffers in, buffers out.
 */
#include <stdlib.h>
#include <string.h>

#include "hs_util.h"
#include "rewrite.h"

#define PUT(o, n, s, l)                      \
	do {                                 \
		memcpy((o) + (n), (s), (l)); \
		(n) += (l);                  \
	} while (0)
#define PUTS(o, n, lit) PUT(o, n, lit, sizeof(lit) - 1)

char *
bal_scratch(struct bal_worker *w, size_t need)
{
	if (need > w->scratch_cap) {
		w->scratch_cap = need;
		w->scratch = hs_xrealloc(w->scratch, need);
	}
	return w->scratch;
}

/* Appends the fields marked with none of skip, as "Name: value" lines. */
static inline size_t
put_fields(char *o, size_t n, const char *p, const struct bal_msg *m,
	   uint32_t skip)
{
	for (int i = 0; i < m->nhdrs; i++) {
		const struct bal_hdr *h = &m->hdrs[i];
		if (h->flags & skip)
			continue;
		PUT(o, n, p + h->name_off, h->name_len);
		PUTS(o, n, ": ");
		PUT(o, n, p + h->val_off, h->val_len);
		PUTS(o, n, "\r\n");
	}
	return n;
}

/* Appends the non-empty values of the fields marked flag, each + ", ". */
static inline size_t
put_values(char *o, size_t n, const char *p, const struct bal_msg *m,
	   uint32_t flag)
{
	for (int i = 0; i < m->nhdrs; i++) {
		const struct bal_hdr *h = &m->hdrs[i];
		if (!(h->flags & flag) || h->val_len == 0)
			continue;
		PUT(o, n, p + h->val_off, h->val_len);
		PUTS(o, n, ", ");
	}
	return n;
}

/* The head sent to the backend: hop-by-hop fields out, X-Forwarded-*, Via. */
void
bal_forward_head(struct bal_client *c, const char *p, const struct bal_msg *m)
{
	const char *mname = bal_method_name(m->method);
	size_t ve = m->target_off + m->target_len + 1; /* "HTTP/1.x" */
	size_t need = 2 * m->head_len + strlen(c->ip) + 256, n = 0;
	char *o;

	if (need > c->fwd_cap) {
		c->fwd_cap = need;
		c->fwd = hs_xrealloc(c->fwd, need);
	}
	o = c->fwd;
	PUT(o, n, mname, strlen(mname));
	PUTS(o, n, " ");
	if (m->path_len > 0)
		PUT(o, n, p + m->path_off, m->path_len);
	else
		PUTS(o, n, "/");
	PUTS(o, n, " ");
	PUT(o, n, p + ve, 8);
	PUTS(o, n, "\r\n");
	n = put_fields(o, n, p, m,
		       BAL_HF_HOP | BAL_HF_XFF | BAL_HF_XFP | BAL_HF_VIA);
	PUTS(o, n, "X-Forwarded-For: ");
	n = put_values(o, n, p, m, BAL_HF_XFF);
	PUT(o, n, c->ip, strlen(c->ip));
	/* The client's claim of a scheme is not ours to pass on. */
	PUTS(o, n, "\r\nX-Forwarded-Proto: http\r\nVia: ");
	n = put_values(o, n, p, m, BAL_HF_VIA);
	PUTS(o, n, "1.1 hs-balancer\r\n\r\n");
	c->fwd_len = n;
}

/* The head sent to the client: hop-by-hop fields out, our Connection in. */
size_t
bal_response_head(struct bal_client *c, const char *p, const struct bal_msg *m)
{
	char *o = bal_scratch(c->w, m->head_len + m->nhdrs + 64);
	size_t n = 0;

	PUTS(o, n, "HTTP/1.1 ");
	PUT(o, n, p + 9, m->reason_off + m->reason_len - 9);
	PUTS(o, n, "\r\n");
	n = put_fields(o, n, p, m, BAL_HF_HOP);
	if (c->close_after)
		PUTS(o, n, "Connection: close\r\n");
	else if (c->version_minor == 0)
		PUTS(o, n, "Connection: keep-alive\r\n");
	PUTS(o, n, "\r\n");
	return n;
}

/*
 * Feeds buffered chunked bytes to st without consuming them.  Returns the
 * number of bytes that belong to the message, -1 on bad framing, -2 when
 * the body exceeds max.
 */
ssize_t
bal_scan_chunks(struct evbuffer *in, struct bal_chunk *st, int64_t max,
		const char **why)
{
	size_t total = 0, len = evbuffer_get_length(in);

	/* Peeks 16 chains at a time: a body may sit in many more. */
	while (total < len) {
		struct evbuffer_iovec v[16];
		struct evbuffer_ptr pos;
		int n;

		if (evbuffer_ptr_set(in, &pos, total, EVBUFFER_PTR_SET) < 0)
			break;
		n = evbuffer_peek(in, -1, &pos, v, 16);
		if (n > 16)
			n = 16;
		if (n <= 0)
			break;
		for (int i = 0; i < n; i++) {
			ssize_t r = bal_chunk_feed(st, v[i].iov_base,
						   v[i].iov_len, why);
			if (r < 0)
				return -1;
			if (max >= 0 && st->total > (uint64_t)max) {
				*why = "request body too large";
				return -2;
			}
			total += (size_t)r;
			if (bal_chunk_done(st) || (size_t)r < v[i].iov_len)
				return (ssize_t)total;
		}
	}
	return (ssize_t)total;
}

/* Whether the request's path is one --deny-path keeps from clients. */
int
bal_path_denied(struct bal_client *c, const char *p, const struct bal_msg *m)
{
	const struct bal_config *cfg = &c->w->app->cfg;
	const char *path = p + m->path_off;
	size_t n = m->path_len, len;
	char *norm;

	if (cfg->ndeny == 0)
		return 0;
	for (size_t i = 0; i < m->path_len; i++)
		if (path[i] == '?') {
			n = i;
			break;
		}
	/* The scratch buffer is free until a response head is built. */
	norm = bal_scratch(c->w, n + 3);
	len = bal_path_normalize(path, n, norm);
	for (int i = 0; i < cfg->ndeny; i++)
		if (bal_path_under(norm, len, cfg->deny[i]))
			return 1;
	return 0;
}
