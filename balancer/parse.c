/*
 * Strict HTTP/1.1 head and chunked-body parsers (see parse.h).
 *
 * Written by hand rather than over libhttp-parser: that library accepts bare
 * LF line ends and obs-fold by default and knows nothing of our limits, so
 * the strict checks would have to re-scan every header anyway.  One pass
 * here validates characters, splits fields and classifies the headers the
 * proxy cares about.
 */
#include <string.h>
#include <strings.h>

#include "hs_util.h"
#include "parse.h"

/* RFC 9110 tchar. */
static const unsigned char tchar[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
	['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
	['`'] = 1, ['|'] = 1, ['~'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1,
	['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1,
	['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,
	['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1,
	['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1,
	['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1,
	['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,
	['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
	['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,
	['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,
	['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static const char *const method_names[BAL_M_COUNT] = {
	"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE",
};

const char *
bal_method_name(enum bal_method m)
{
	return (unsigned)m < BAL_M_COUNT ? method_names[m] : "?";
}

int
bal_method_idempotent(enum bal_method m)
{
	return m != BAL_M_POST && m != BAL_M_PATCH;
}

/* Field-value octets: HTAB, SP, VCHAR, obs-text. */
static inline int
is_vchar(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int
eq_ci(const char *p, size_t n, const char *lit)
{
	return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

#define FAIL(st, msg)                 \
	do {                          \
		if (why)              \
			*why = (msg); \
		return -(st);         \
	} while (0)

/*
 * Parses header lines from pos up to and including the blank line.
 * err_status is 400 for requests, 502 for responses.  Returns the head
 * length, 0 when incomplete, or -status.
 */
static ssize_t
parse_fields(const char *buf, size_t len, size_t pos, size_t max_head,
	     int max_headers, int err_status, struct bal_msg *m,
	     const char **why)
{
	const unsigned char *b = (const unsigned char *)buf;

	m->nhdrs = 0;
	for (;;) {
		size_t ns, ne, vs, ve;

		if (pos > max_head)
			FAIL(431, "request header fields too large");
		if (pos >= len)
			goto incomplete;
		if (b[pos] == '\r') {
			if (pos + 1 >= len)
				goto incomplete;
			if (b[pos + 1] != '\n')
				FAIL(err_status, "bare CR in header section");
			pos += 2;
			if (pos > max_head)
				FAIL(431, "request header fields too large");
			return (ssize_t)pos;
		}
		if (b[pos] == '\n')
			FAIL(err_status, "bare LF in header section");
		if (b[pos] == ' ' || b[pos] == '\t')
			FAIL(err_status, "obsolete line folding");
		ns = pos;
		while (pos < len && tchar[b[pos]])
			pos++;
		if (pos >= len)
			goto incomplete;
		if (b[pos] != ':') {
			if (b[pos] == ' ' || b[pos] == '\t')
				FAIL(err_status, "whitespace before colon");
			FAIL(err_status, "invalid character in header name");
		}
		ne = pos++;
		if (ne == ns)
			FAIL(err_status, "empty header name");
		while (pos < len && (b[pos] == ' ' || b[pos] == '\t'))
			pos++;
		vs = pos;
		while (pos < len && is_vchar(b[pos]))
			pos++;
		if (pos >= len)
			goto incomplete;
		if (b[pos] == '\n')
			FAIL(err_status, "bare LF in header section");
		if (b[pos] != '\r') {
			if (b[pos] == 0)
				FAIL(err_status, "NUL in header value");
			FAIL(err_status, "control character in header value");
		}
		if (pos + 1 >= len)
			goto incomplete;
		if (b[pos + 1] != '\n')
			FAIL(err_status, "bare CR in header value");
		ve = pos;
		while (ve > vs && (b[ve - 1] == ' ' || b[ve - 1] == '\t'))
			ve--;
		pos += 2;
		if (m->nhdrs >= max_headers)
			FAIL(431, "too many header fields");
		struct bal_hdr *h = &m->hdrs[m->nhdrs++];
		h->name_off = (uint32_t)ns;
		h->name_len = (uint32_t)(ne - ns);
		h->val_off = (uint32_t)vs;
		h->val_len = (uint32_t)(ve - vs);
		h->flags = 0;
	}
incomplete:
	if (len >= max_head)
		FAIL(431, "request header fields too large");
	return 0;
}

/* Iterates comma-separated tokens of a list value; returns 0 at the end. */
static int
next_token(const char *v, size_t n, size_t *pos, size_t *ts, size_t *tl)
{
	size_t p = *pos;

	while (p < n && (v[p] == ' ' || v[p] == '\t' || v[p] == ','))
		p++;
	if (p >= n)
		return 0;
	*ts = p;
	while (p < n && v[p] != ',')
		p++;
	size_t e = p;
	while (e > *ts && (v[e - 1] == ' ' || v[e - 1] == '\t'))
		e--;
	*tl = e - *ts;
	*pos = p;
	return 1;
}

static int
parse_cl(const char *v, size_t n, int64_t *out)
{
	int64_t x = 0;

	if (n == 0 || n > 18)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		x = x * 10 + (v[i] - '0');
	}
	*out = x;
	return 0;
}

/* Host = uri-host [ ":" port ]; an empty value is allowed (RFC 9112 3.2). */
static int
host_ok(const unsigned char *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = v[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') ||
		      strchr("-._~!$&'()*+,;=:[]%", c)))
			return 0;
		if (c == 0)
			return 0;
	}
	return 1;
}

/* What classify() gathers over the header fields. */
struct classify_acc {
	int hosts, host_i, ncl, nte, close, ka, ntok;
	/* Options named in Connection: offsets and lengths in the buffer. */
	size_t tok_s[BAL_MAX_CONN_TOKENS], tok_l[BAL_MAX_CONN_TOKENS];
};

/* Connection: close, keep-alive, and the options it names. */
static int
classify_connection(struct bal_hdr *h, const char *v, struct classify_acc *a,
		    int st, const char **why)
{
	size_t p = 0, ts, tl, vl = h->val_len;

	h->flags |= BAL_HF_HOP;
	while (next_token(v, vl, &p, &ts, &tl)) {
		if (eq_ci(v + ts, tl, "close"))
			a->close = 1;
		else if (eq_ci(v + ts, tl, "keep-alive"))
			a->ka = 1;
		else if (a->ntok < BAL_MAX_CONN_TOKENS) {
			a->tok_s[a->ntok] = h->val_off + ts;
			a->tok_l[a->ntok++] = tl;
		} else
			FAIL(st, "too many Connection options");
	}
	return 0;
}

/* Transfer-Encoding: a request takes only a lone chunked. */
static int
classify_te(struct bal_msg *m, const char *v, size_t vl, int is_req,
	    struct classify_acc *a, int st, const char **why)
{
	if (++a->nte > 1)
		FAIL(st, "duplicate Transfer-Encoding");
	m->has_te = 1;
	if (is_req) {
		if (!eq_ci(v, vl, "chunked"))
			FAIL(st, "unsupported Transfer-Encoding");
		m->chunked = 1;
	} else {
		/* The final coding decides (RFC 9112 6.3). */
		size_t p = 0, ts = 0, tl = 0, ls = 0, ll = 0;
		while (next_token(v, vl, &p, &ts, &tl)) {
			ls = ts;
			ll = tl;
		}
		m->chunked = eq_ci(v + ls, ll, "chunked");
	}
	return 0;
}

/* One header field, by the length of its name.  Returns 0 or -status. */
static int
classify_field(const char *buf, struct bal_msg *m, int i, int is_req,
	       struct classify_acc *a, const char **why)
{
	int st = is_req ? 400 : 502;
	struct bal_hdr *h = &m->hdrs[i];
	const char *n = buf + h->name_off, *v = buf + h->val_off;
	size_t nl = h->name_len, vl = h->val_len;

	switch (nl) {
	case 2:
		if (eq_ci(n, nl, "te"))
			h->flags |= BAL_HF_HOP;
		break;
	case 3:
		if (is_req && eq_ci(n, nl, "via"))
			h->flags |= BAL_HF_VIA;
		break;
	case 4:
		if (eq_ci(n, nl, "host")) {
			a->hosts++;
			a->host_i = i;
			if (!host_ok((const unsigned char *)v, vl))
				FAIL(st, "invalid Host");
		}
		break;
	case 7:
		if (eq_ci(n, nl, "upgrade"))
			h->flags |= BAL_HF_HOP;
		break;
	case 10:
		if (eq_ci(n, nl, "connection"))
			return classify_connection(h, v, a, st, why);
		if (eq_ci(n, nl, "keep-alive"))
			h->flags |= BAL_HF_HOP;
		break;
	case 14:
		if (eq_ci(n, nl, "content-length")) {
			if (++a->ncl > 1)
				FAIL(st, "duplicate Content-Length");
			if (parse_cl(v, vl, &m->content_length) < 0)
				FAIL(st, "invalid Content-Length");
		}
		break;
	case 15:
		if (is_req && eq_ci(n, nl, "x-forwarded-for"))
			h->flags |= BAL_HF_XFF;
		break;
	case 16:
		if (eq_ci(n, nl, "proxy-connection"))
			h->flags |= BAL_HF_HOP;
		break;
	case 17:
		if (is_req && eq_ci(n, nl, "x-forwarded-proto"))
			h->flags |= BAL_HF_XFP;
		else if (eq_ci(n, nl, "transfer-encoding"))
			return classify_te(m, v, vl, is_req, a, st, why);
		break;
	}
	return 0;
}

/* Options named in Connection are hop-by-hop too, except framing. */
static void
mark_connection_options(const char *buf, struct bal_msg *m,
			const struct classify_acc *a)
{
	for (int t = 0; t < a->ntok; t++) {
		const char *tv = buf + a->tok_s[t];
		size_t tl = a->tok_l[t];
		if (eq_ci(tv, tl, "content-length") ||
		    eq_ci(tv, tl, "transfer-encoding") || eq_ci(tv, tl, "host"))
			continue;
		for (int i = 0; i < m->nhdrs; i++)
			if (m->hdrs[i].name_len == tl &&
			    strncasecmp(buf + m->hdrs[i].name_off, tv, tl) == 0)
				m->hdrs[i].flags |= BAL_HF_HOP;
	}
}

/* A request's Host: one, present in 1.1, naming any absolute target. */
static int
check_host(const char *buf, const struct bal_msg *m,
	   const struct classify_acc *a, const char **why)
{
	if (a->hosts > 1)
		FAIL(400, "duplicate Host");
	if (m->auth_len > 0) {
		/* Strict: Host must name the same authority. */
		int ok = 0;
		if (a->host_i >= 0)
			ok = m->hdrs[a->host_i].val_len == m->auth_len &&
			     strncasecmp(buf + m->hdrs[a->host_i].val_off,
					 buf + m->auth_off, m->auth_len) == 0;
		if (!ok && (a->hosts > 0 || m->version_minor >= 1))
			FAIL(400, "Host does not match the request target");
	}
	if (a->hosts == 0 && m->version_minor >= 1)
		FAIL(400, "missing Host");
	if (m->has_te && m->version_minor == 0)
		FAIL(400, "Transfer-Encoding in an HTTP/1.0 request");
	return 0;
}

/*
 * Classifies the headers: framing, Host, Connection and the hop-by-hop set.
 * Returns 0 or -status.
 */
static int
classify(const char *buf, struct bal_msg *m, int is_req, const char **why)
{
	struct classify_acc a;
	int rc;

	memset(&a, 0, sizeof(a));
	a.host_i = -1;
	m->content_length = -1;
	m->chunked = 0;
	m->has_te = 0;
	for (int i = 0; i < m->nhdrs; i++)
		if ((rc = classify_field(buf, m, i, is_req, &a, why)) < 0)
			return rc;
	mark_connection_options(buf, m, &a);
	if (m->has_te && m->content_length >= 0)
		FAIL(is_req ? 400 : 502,
		     "both Content-Length and Transfer-Encoding");
	if (is_req && (rc = check_host(buf, m, &a, why)) < 0)
		return rc;
	m->keep_alive = m->version_minor >= 1 ? !a.close : (a.ka && !a.close);
	return 0;
}

static int
match_method(const char *p, size_t n, enum bal_method *out)
{
	for (int i = 0; i < BAL_M_COUNT; i++)
		if (strlen(method_names[i]) == n &&
		    memcmp(method_names[i], p, n) == 0) {
			*out = (enum bal_method)i;
			return 0;
		}
	return -1;
}

/* "HTTP/1.x" at p (8 bytes available).  Returns 0, -400 or -505. */
static int
parse_version(const unsigned char *p, int *minor)
{
	if (memcmp(p, "HTTP/", 5) != 0 || p[6] != '.' || p[5] < '0' ||
	    p[5] > '9' || p[7] < '0' || p[7] > '9')
		return -400;
	if (p[5] != '1')
		return -505;
	*minor = p[7] == '0' ? 0 : 1;
	return 0;
}

ssize_t
bal_parse_request(const char *buf, size_t len, const struct bal_limits *lim,
		  struct bal_msg *m, const char **why)
{
	const unsigned char *b = (const unsigned char *)buf;
	size_t pos = 0, line_start, ms, me, ts, te;
	ssize_t r;
	int rc;

	/* RFC 9112 2.2: ignore empty lines before the request line. */
	while (pos < len && b[pos] == '\r') {
		if (pos + 1 >= len)
			return 0;
		if (b[pos + 1] != '\n')
			FAIL(400, "bare CR before request line");
		pos += 2;
		if (pos > 64)
			FAIL(400, "too many empty lines");
	}
	if (pos < len && b[pos] == '\n')
		FAIL(400, "bare LF before request line");
	line_start = ms = pos;
	while (pos < len && tchar[b[pos]])
		pos++;
	if (pos >= len)
		goto line_incomplete;
	if (b[pos] != ' ' || pos == ms)
		FAIL(400, "malformed request line");
	me = pos++;
	ts = pos;
	while (pos < len && b[pos] > 0x20 && b[pos] < 0x7f)
		pos++;
	if (pos >= len)
		goto line_incomplete;
	if (b[pos] != ' ' || pos == ts)
		FAIL(400, "malformed request target");
	te = pos++;
	if (len - pos < 10)
		goto line_incomplete_check;
	if ((rc = parse_version(b + pos, &m->version_minor)) < 0) {
		if (why)
			*why = rc == -505 ? "HTTP version not supported"
					  : "malformed HTTP version";
		return rc;
	}
	pos += 8;
	if (b[pos] != '\r' || b[pos + 1] != '\n')
		FAIL(400, "malformed request line end");
	pos += 2;
	if (pos - line_start > lim->max_line)
		FAIL(414, "request line too long");
	if (match_method(buf + ms, me - ms, &m->method) < 0)
		FAIL(501, "method not implemented");
	m->target_off = (uint32_t)ts;
	m->target_len = (uint32_t)(te - ts);
	m->path_off = m->target_off;
	m->path_len = m->target_len;
	m->auth_len = 0;
	if (te - ts > 7 && strncasecmp(buf + ts, "http://", 7) == 0) {
		/* Absolute form (RFC 9112 3.2.2): forwarded in origin form. */
		size_t as = ts + 7, ae = as;
		while (ae < te && b[ae] != '/')
			ae++;
		if (ae == as || memchr(buf + as, '?', ae - as) ||
		    memchr(buf + as, '@', ae - as))
			FAIL(400, "malformed absolute request target");
		m->auth_off = (uint32_t)as;
		m->auth_len = (uint32_t)(ae - as);
		m->path_off = (uint32_t)ae;
		m->path_len = (uint32_t)(te - ae); /* 0 means "/" */
	} else if (!(b[ts] == '/' || (m->method == BAL_M_OPTIONS &&
				      te - ts == 1 && b[ts] == '*'))) {
		FAIL(400, "malformed request target");
	}
	m->status = 0;
	r = parse_fields(buf, len, pos, lim->max_head, lim->max_headers, 400, m,
			 why);
	if (r <= 0)
		return r;
	m->head_len = (size_t)r;
	if ((rc = classify(buf, m, 1, why)) < 0)
		return rc;
	return r;

line_incomplete_check:
	/* Validate what we have of the version so junk fails early. */
	for (size_t i = pos; i < len; i++)
		if (b[i] == '\n' || (b[i] == '\r' && i + 1 < len))
			FAIL(400, "malformed request line end");
line_incomplete:
	if (len - line_start > lim->max_line)
		FAIL(414, "request line too long");
	return 0;
}

ssize_t
bal_parse_response(const char *buf, size_t len, size_t max_head,
		   struct bal_msg *m, const char **why)
{
	const unsigned char *b = (const unsigned char *)buf;
	size_t pos;
	ssize_t r;
	int rc;

	if (len < 14)
		goto incomplete;
	if (parse_version(b, &m->version_minor) < 0 || b[8] != ' ')
		FAIL(502, "malformed status line");
	if (b[9] < '1' || b[9] > '5' || b[10] < '0' || b[10] > '9' ||
	    b[11] < '0' || b[11] > '9')
		FAIL(502, "malformed status code");
	m->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
	pos = 12;
	if (b[pos] == ' ')
		pos++;
	else if (b[pos] != '\r')
		FAIL(502, "malformed status line");
	m->reason_off = (uint32_t)pos;
	while (pos < len && is_vchar(b[pos]))
		pos++;
	if (pos >= len)
		goto incomplete;
	if (b[pos] != '\r')
		FAIL(502, "malformed reason phrase");
	if (pos + 1 >= len)
		goto incomplete;
	if (b[pos + 1] != '\n')
		FAIL(502, "bare CR in status line");
	m->reason_len = (uint32_t)(pos - m->reason_off);
	pos += 2;
	r = parse_fields(buf, len, pos, max_head, BAL_MAX_HEADERS, 502, m, why);
	if (r < 0)
		FAIL(502, why && *why ? *why : "malformed response head");
	if (r == 0)
		return 0;
	m->head_len = (size_t)r;
	if ((rc = classify(buf, m, 0, why)) < 0)
		return rc;
	return r;
incomplete:
	if (len >= max_head)
		FAIL(502, "response head too large");
	return 0;
}

enum {
	CH_SIZE = 0,
	CH_EXT,
	CH_SIZE_LF,
	CH_DATA,
	CH_DATA_CR,
	CH_DATA_LF,
	CH_TRAILER,
	CH_TRAILER_NAME,
	CH_TRAILER_LINE,
	CH_TRAILER_LF,
	CH_END_LF,
	CH_DONE
};

#define CHUNK_LINE_MAX 4096

#undef FAIL
#define FAIL(msg)                     \
	do {                          \
		if (why)              \
			*why = (msg); \
		return -1;            \
	} while (0)

/* One byte of a size line or of the CRLF after data; NULL or an error. */
static const char *
chunk_size_byte(struct bal_chunk *c, unsigned char ch)
{
	int hv;

	switch (c->state) {
	case CH_SIZE:
		if ((hv = hs_hexval(ch)) >= 0) {
			if (++c->digits > 15)
				return "chunk size too large";
			c->left = c->left * 16 + (uint64_t)hv;
		} else if (c->digits == 0) {
			return "bad chunk size";
		} else if (ch == ';') {
			c->state = CH_EXT;
		} else if (ch == '\r') {
			c->state = CH_SIZE_LF;
		} else {
			return "bad chunk size";
		}
		return NULL;
	case CH_EXT:
		if (ch == '\r')
			c->state = CH_SIZE_LF;
		else if (!is_vchar(ch))
			return "bad chunk extension";
		else if (++c->line > CHUNK_LINE_MAX)
			return "chunk extension too long";
		return NULL;
	case CH_SIZE_LF:
		if (ch != '\n')
			return "bare CR in chunk size line";
		c->digits = 0;
		c->line = 0;
		c->total += c->left;
		c->state = c->left ? CH_DATA : CH_TRAILER;
		return NULL;
	case CH_DATA_CR:
		if (ch != '\r')
			return "chunk data longer than its size";
		c->state = CH_DATA_LF;
		return NULL;
	case CH_DATA_LF:
		if (ch != '\n')
			return "bare CR after chunk data";
		c->state = CH_SIZE;
		return NULL;
	}
	return "bad chunk state";
}

/* One byte of the trailer section or the final CRLF; NULL or an error. */
static const char *
chunk_trailer_byte(struct bal_chunk *c, unsigned char ch)
{
	switch (c->state) {
	case CH_TRAILER:
		if (ch == '\r')
			c->state = CH_END_LF;
		else if (ch == ' ' || ch == '\t' || !tchar[ch])
			return "bad trailer field";
		else
			c->state = CH_TRAILER_NAME;
		return NULL;
	case CH_TRAILER_NAME:
		/* A token, then a colon: a line without one would reach
		   the backend's own (non-JSON) error page. */
		if (ch == ':')
			c->state = CH_TRAILER_LINE;
		else if (!tchar[ch])
			return "bad trailer field name";
		else if (++c->line > CHUNK_LINE_MAX)
			return "trailer field too long";
		return NULL;
	case CH_TRAILER_LINE:
		if (ch == '\r')
			c->state = CH_TRAILER_LF;
		else if (!is_vchar(ch))
			return "bad trailer field";
		else if (++c->line > CHUNK_LINE_MAX)
			return "trailer field too long";
		return NULL;
	case CH_TRAILER_LF:
		if (ch != '\n')
			return "bare CR in trailer";
		c->line = 0;
		c->state = CH_TRAILER;
		return NULL;
	case CH_END_LF:
		if (ch != '\n')
			return "bare CR after last chunk";
		c->state = CH_DONE;
		return NULL;
	}
	return "bad chunk state";
}

ssize_t
bal_chunk_feed(struct bal_chunk *c, const char *p, size_t n, const char **why)
{
	const unsigned char *b = (const unsigned char *)p;
	size_t i = 0;

	while (i < n && c->state != CH_DONE) {
		const char *err;

		if (c->state == CH_DATA) {
			/* Data goes by in one step, not byte by byte. */
			size_t k = n - i;
			if ((uint64_t)k > c->left)
				k = (size_t)c->left;
			c->left -= k;
			i += k;
			if (c->left == 0)
				c->state = CH_DATA_CR;
			continue;
		}
		err = c->state < CH_TRAILER ? chunk_size_byte(c, b[i])
					    : chunk_trailer_byte(c, b[i]);
		if (err != NULL)
			FAIL(err);
		i++;
	}
	return (ssize_t)i;
}

int
bal_chunk_done(const struct bal_chunk *c)
{
	return c->state == CH_DONE;
}

size_t
bal_path_normalize(const char *p, size_t n, char *out)
{
	size_t o = 0, seg;

	out[o++] = '/';
	for (size_t i = 0; i < n;) {
		/* One segment of the input, decoded, appended after a '/'. */
		while (i < n && p[i] == '/')
			i++;
		if (i == n)
			break;
		seg = o;
		while (i < n && p[i] != '/') {
			int hi, lo;
			if (p[i] == '%' && i + 2 < n &&
			    (hi = hs_hexval((unsigned char)p[i + 1])) >= 0 &&
			    (lo = hs_hexval((unsigned char)p[i + 2])) >= 0) {
				out[o++] = (char)(hi << 4 | lo);
				i += 3;
			} else {
				out[o++] = p[i++];
			}
		}
		if (o - seg == 1 && out[seg] == '.') {
			o = seg;
		} else if (o - seg == 2 && out[seg] == '.' &&
			   out[seg + 1] == '.') {
			/* Back to the '/' before the previous segment. */
			o = seg - 1;
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o == 0)
				o = 1;
		} else {
			out[o++] = '/';
		}
	}
	/* A trailing '/' only where the input had one. */
	if (o > 1 && (n == 0 || p[n - 1] != '/'))
		o--;
	out[o] = '\0';
	return o;
}

int
bal_path_under(const char *path, size_t len, const char *prefix)
{
	size_t pl = strlen(prefix);

	if (pl == 0 || len < pl || memcmp(path, prefix, pl) != 0)
		return 0;
	return len == pl || prefix[pl - 1] == '/' || path[pl] == '/';
}
