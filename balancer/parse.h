/*
 * Strict HTTP/1.1 message framing for the balancer (RFC 9112).
 *
 * bal_parse_request() parses a request head from a contiguous buffer and
 * rejects every shape that lets two parsers disagree on where a message
 * ends (request smuggling): CL+TE, duplicate or malformed Content-Length,
 * codings other than a lone "chunked", bare CR or LF, obs-fold, space before
 * the colon, control bytes in values, missing or duplicate Host.
 * bal_parse_response() parses a backend's response head (strict as well:
 * a malformed answer becomes a 502).  bal_chunk_feed() walks chunked framing
 * so the proxy knows where a body ends while forwarding its bytes as is.
 *
 * The parsers keep no pointers: every field is an offset into the caller's
 * buffer, so the caller may re-run them after more bytes arrived.
 */
#ifndef BAL_PARSE_H
#define BAL_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BAL_MAX_HEADERS     100
#define BAL_MAX_CONN_TOKENS 8

enum bal_method {
	BAL_M_GET,
	BAL_M_HEAD,
	BAL_M_POST,
	BAL_M_PUT,
	BAL_M_DELETE,
	BAL_M_OPTIONS,
	BAL_M_PATCH,
	BAL_M_TRACE,
	BAL_M_COUNT
};

/* Header flags set by the parsers. */
#define BAL_HF_HOP 1u /* hop-by-hop: not forwarded */
#define BAL_HF_XFF 2u /* X-Forwarded-For: extended, not copied */
#define BAL_HF_XFP 4u /* X-Forwarded-Proto: replaced by ours */
#define BAL_HF_VIA 8u /* Via: extended, not copied */

struct bal_hdr {
	uint32_t name_off, name_len;
	uint32_t val_off, val_len; /* OWS already trimmed */
	uint32_t flags;
};

struct bal_limits {
	size_t max_line; /* request line, beyond it: 414 */
	size_t max_head; /* whole head, beyond it: 431 */
	int max_headers; /* header count, beyond it: 431 (<= BAL_MAX_HEADERS) */
};

struct bal_msg {
	size_t head_len;   /* bytes up to and including the blank line */
	int version_minor; /* 0 or 1 */
	/* Requests. */
	enum bal_method method;
	uint32_t target_off, target_len;
	/* Origin-form part to forward (path_len 0: "/"), authority if any. */
	uint32_t path_off, path_len, auth_off, auth_len;
	/* Responses. */
	int status;
	uint32_t reason_off, reason_len;
	/* Both. */
	int64_t content_length; /* -1 when absent */
	int chunked;            /* Transfer-Encoding: chunked */
	int keep_alive;         /* persistent per version and Connection */
	int has_te;             /* any Transfer-Encoding seen (responses) */
	int nhdrs;
	struct bal_hdr hdrs[BAL_MAX_HEADERS];
};

/*
 * Return value of both parsers: > 0 the head is complete and that many bytes
 * long; 0 more bytes are needed; < 0 the message is bad and -ret is the HTTP
 * status to answer with (400, 414, 431, 501, 505; 502 for responses).  On
 * error *why (if not NULL) points to a static, human-readable reason.
 */
ssize_t bal_parse_request(const char *buf, size_t len,
			  const struct bal_limits *lim, struct bal_msg *m,
			  const char **why);
ssize_t bal_parse_response(const char *buf, size_t len, size_t max_head,
			   struct bal_msg *m, const char **why);

const char *bal_method_name(enum bal_method m);
/* GET, HEAD, PUT, DELETE, OPTIONS, TRACE (RFC 9110 9.2.2). */
int bal_method_idempotent(enum bal_method m);

/* Chunked framing state; zero-initialise before the first feed. */
struct bal_chunk {
	int state;
	int digits;
	uint64_t left;  /* bytes left in the current chunk's data */
	uint64_t total; /* data bytes so far (for the body limit) */
	uint32_t line;  /* bytes in the current size or trailer line */
};

/*
 * Feeds n bytes of a chunked body.  Returns how many bytes belong to the
 * message (less than n only when the message ended inside p), or -1 on bad
 * framing (*why set).  bal_chunk_done() tells whether the last chunk and
 * trailers have been seen.
 */
ssize_t bal_chunk_feed(struct bal_chunk *c, const char *p, size_t n,
		       const char **why);
int bal_chunk_done(const struct bal_chunk *c);

/*
 * Normalizes the path of an origin-form target (p, n: up to the query) the
 * way a backend may before routing it: percent-escapes decoded, empty and
 * "." segments dropped, ".." segments resolved.  out needs n + 3 bytes;
 * it gets a NUL-terminated path starting with "/".  Returns its length.
 */
size_t bal_path_normalize(const char *p, size_t n, char *out);
/*
 * Whether a normalized path is prefix or lies below it: "/stats" matches
 * "/stats" and "/stats/x", not "/statsx"; "/a/" matches "/a/b".
 */
int bal_path_under(const char *path, size_t len, const char *prefix);

#endif
