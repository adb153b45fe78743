/*
 * A minimal incremental HTTP/1.1 response parser for the load generator:
 * the status line, the three headers that frame a response
 * (Content-Length, Transfer-Encoding: chunked, Connection), and the body
 * skipped without copying.  It only has to frame the answers of servers
 * under test, not to defend against them, so it is lenient where a proxy
 * must be strict, and stops at anything it cannot frame.  Measured against
 * libevent's evhttp client it costs a fraction: one memmem for the header
 * block and a scan of its lines, then a counter for the body.
 */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "hsload.h"

void
hsl_resp_init(struct hsl_resp *r)
{
	memset(r, 0, sizeof(*r));
	r->state = HSL_RESP_HEAD;
}

/* A header line "name: value" where name matches (any case). */
static const char *
hsl_header_value(const char *line, const char *end, const char *name,
		 size_t namelen)
{
	const char *v;

	if ((size_t)(end - line) <= namelen || line[namelen] != ':' ||
	    strncasecmp(line, name, namelen) != 0)
		return NULL;
	for (v = line + namelen + 1; v < end && (*v == ' ' || *v == '\t'); v++)
		;
	return v;
}

/* Does the comma-separated list value[..end) hold word (any case)? */
static int
hsl_has_token(const char *value, const char *end, const char *word)
{
	size_t n = strlen(word);

	for (const char *v = value; v + n <= end; v++) {
		int starts = v == value || v[-1] == ',' || v[-1] == ' ' ||
			     v[-1] == '\t';
		int ends = v + n == end || v[n] == ',' || v[n] == ' ' ||
			   v[n] == '\t';

		if (starts && ends && strncasecmp(v, word, n) == 0)
			return 1;
	}
	return 0;
}

static int
hsl_parse_u64(const char *v, const char *end, int base, uint64_t *out)
{
	uint64_t n = 0;
	int digits = 0;

	for (; v < end; v++, digits++) {
		int d;

		if (isdigit((unsigned char)*v))
			d = *v - '0';
		else if (base == 16 && isxdigit((unsigned char)*v))
			d = (tolower((unsigned char)*v) - 'a') + 10;
		else
			break;
		if (n > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
			return -1;
		n = n * (uint64_t)base + (uint64_t)d;
	}
	if (digits == 0)
		return -1;
	/* Only blanks (or a chunk extension) may follow. */
	for (; v < end; v++) {
		if (*v == ';' && base == 16)
			break;
		if (*v != ' ' && *v != '\t' && *v != '\r')
			return -1;
	}
	*out = n;
	return 0;
}

/* Parses the header block head[len] (up to and including CRLFCRLF). */
static void
hsl_parse_head(struct hsl_resp *r, const char *head, size_t len)
{
	const char *p = head, *end = head + len, *eol;
	int chunked = 0, have_len = 0, http10 = 0, keepalive = 0;
	uint64_t clen = 0;

	if (len < 12 || strncmp(p, "HTTP/1.", 7) != 0 ||
	    (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
	    !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) ||
	    !isdigit((unsigned char)p[11])) {
		r->state = HSL_RESP_ERROR;
		return;
	}
	http10 = p[7] == '0';
	r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	r->close = 0;
	for (p = memchr(p, '\n', len) + 1; p < end; p = eol + 1) {
		const char *v, *le;

		eol = memchr(p, '\n', (size_t)(end - p));
		le = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
		if (le == p)
			break; /* the empty line */
		switch (tolower((unsigned char)*p)) {
		case 'c':
			if ((v = hsl_header_value(p, le, "content-length",
						  14))) {
				if (hsl_parse_u64(v, le, 10, &clen) != 0) {
					r->state = HSL_RESP_ERROR;
					return;
				}
				have_len = 1;
			} else if ((v = hsl_header_value(p, le, "connection",
							 10))) {
				if (hsl_has_token(v, le, "close"))
					r->close = 1;
				if (hsl_has_token(v, le, "keep-alive"))
					keepalive = 1;
			}
			break;
		case 't':
			if ((v = hsl_header_value(p, le, "transfer-encoding",
						  17)) &&
			    hsl_has_token(v, le, "chunked"))
				chunked = 1;
			break;
		}
	}
	if (http10 && !keepalive)
		r->close = 1;
	if (r->status / 100 == 1 || r->status == 204 || r->status == 304) {
		/* No body; a 1xx is followed by the real response. */
		if (r->status / 100 == 1)
			hsl_resp_init(r);
		else
			r->state = HSL_RESP_DONE;
	} else if (chunked) {
		r->state = HSL_RESP_CHUNK_SIZE;
	} else if (have_len) {
		r->left = clen;
		r->state = clen ? HSL_RESP_BODY_LEN : HSL_RESP_DONE;
	} else {
		r->close = 1;
		r->state = HSL_RESP_BODY_EOF;
	}
}

/* The length of the line at buf (with its LF), or 0 if it is incomplete. */
static size_t
hsl_line(const char *buf, size_t len)
{
	const char *nl = memchr(buf, '\n', len);

	return nl ? (size_t)(nl - buf) + 1 : 0;
}

size_t
hsl_resp_parse(struct hsl_resp *r, const char *buf, size_t len)
{
	size_t off = 0, n;
	const char *e;

	while (off < len) {
		const char *p = buf + off;
		size_t avail = len - off;

		switch (r->state) {
		case HSL_RESP_HEAD:
			e = memmem(p, avail, "\r\n\r\n", 4);
			if (e == NULL) {
				if (avail >= HSL_RESP_HEAD_MAX)
					r->state = HSL_RESP_ERROR;
				return off;
			}
			n = (size_t)(e - p) + 4;
			hsl_parse_head(r, p, n);
			off += n;
			break;
		case HSL_RESP_BODY_LEN:
		case HSL_RESP_CHUNK_DATA:
			n = avail < r->left ? avail : (size_t)r->left;
			r->left -= n;
			off += n;
			if (r->left == 0)
				r->state = r->state == HSL_RESP_BODY_LEN
						   ? HSL_RESP_DONE
						   : HSL_RESP_CHUNK_CRLF;
			break;
		case HSL_RESP_CHUNK_SIZE:
			if ((n = hsl_line(p, avail)) == 0) {
				if (avail >= HSL_RESP_HEAD_MAX)
					r->state = HSL_RESP_ERROR;
				return off;
			}
			if (hsl_parse_u64(p, p + n - 1, 16, &r->left) != 0) {
				r->state = HSL_RESP_ERROR;
				return off;
			}
			off += n;
			r->state = r->left ? HSL_RESP_CHUNK_DATA
					   : HSL_RESP_TRAILERS;
			break;
		case HSL_RESP_CHUNK_CRLF:
			if ((n = hsl_line(p, avail)) == 0)
				return off;
			if (n > 2 || (n == 2 && p[0] != '\r')) {
				r->state = HSL_RESP_ERROR;
				return off;
			}
			off += n;
			r->state = HSL_RESP_CHUNK_SIZE;
			break;
		case HSL_RESP_TRAILERS:
			if ((n = hsl_line(p, avail)) == 0) {
				if (avail >= HSL_RESP_HEAD_MAX)
					r->state = HSL_RESP_ERROR;
				return off;
			}
			off += n;
			if (n <= 2)
				r->state = HSL_RESP_DONE;
			break;
		case HSL_RESP_BODY_EOF:
			return len;
		case HSL_RESP_DONE:
		case HSL_RESP_ERROR:
			return off;
		}
		if (r->state == HSL_RESP_DONE || r->state == HSL_RESP_ERROR)
			return off;
	}
	return off;
}

int
hsl_resp_eof(struct hsl_resp *r)
{
	if (r->state == HSL_RESP_BODY_EOF) {
		r->state = HSL_RESP_DONE;
		return 1;
	}
	return 0;
}
