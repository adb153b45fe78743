/*
 * Small helpers shared by every hammerstack program: allocation that aborts
 * on failure, monotonic time, strict number and address parsing, HTTP dates.
 */
#ifndef HS_UTIL_H
#define HS_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Allocation failure is fatal: these never return NULL. */
void *hs_xmalloc(size_t n);
void *hs_xcalloc(size_t nmemb, size_t size);
void *hs_xrealloc(void *p, size_t n);
char *hs_xstrdup(const char *s);

/* Monotonic clock. */
uint64_t hs_now_ns(void);
static inline uint64_t
hs_now_us(void)
{
	return hs_now_ns() / 1000;
}

/* The value of one hex digit, or -1 (also for a negative char). */
static inline int
hs_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Parses a whole decimal integer in [min, max].  Leading/trailing junk,
 * overflow and out-of-range values fail.  Returns 0 or -1.
 */
int hs_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
int hs_parse_int(const char *s, int min, int max, int *out);
/* Parses a finite decimal number in [min, max]. Returns 0 or -1. */
int hs_parse_double(const char *s, double min, double max, double *out);

/*
 * Parses "HOST:PORT", "[V6]:PORT" or ":PORT" (host defaults to 127.0.0.1)
 * into host (NUL-terminated, at most hostlen-1 bytes) and port (0..65535).
 * Returns 0 or -1.
 */
int hs_parse_hostport(const char *s, char *host, size_t hostlen, int *port);

/*
 * Writes an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") for the current
 * second into buf (at least 30 bytes), cached per thread so that it costs a
 * time(2) call and a compare when the second has not changed.
 */
void hs_http_date(char buf[30]);

/*
 * Creates a listening TCP socket bound to host:port (port 0 picks a free
 * port), non-blocking when nonblock is set, with SO_REUSEADDR.  The bound
 * port is stored in *bound.  Returns the fd or -1 with errno set.
 */
int hs_listen_tcp(const char *host, int port, int backlog, int nonblock,
		  int *bound);
/*
 * The same, non-blocking and with SO_REUSEPORT too, so that several
 * listeners (one per worker thread) can share host:port and the kernel
 * spreads connections among them.
 */
int hs_listen_reuseport(const char *host, int port, int backlog, int *bound);

/* Closes *fd unless it is -1 already, and sets it to -1. */
void hs_close(int *fd);

#endif
