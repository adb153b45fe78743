/*
 * The heads the proxy writes, the chunked-body walk and the --deny-path
 * check (rewrite.c); proxy.c's helpers, with no I/O of their own.
 */
#ifndef BAL_REWRITE_H
#define BAL_REWRITE_H

#include <sys/types.h>

#include "client.h"

/* The worker's scratch buffer, grown to need bytes (one user at a time). */
char *bal_scratch(struct bal_worker *w, size_t need);
/* Builds the head for the backend into c->fwd / c->fwd_len. */
void bal_forward_head(struct bal_client *c, const char *p,
		      const struct bal_msg *m);
/* Builds the head for the client in the worker's scratch; its length. */
size_t bal_response_head(struct bal_client *c, const char *p,
			 const struct bal_msg *m);
/*
 * Feeds buffered chunked bytes to st without consuming them.  Returns the
 * number of bytes that belong to the message, -1 on bad framing, -2 when
 * the body exceeds max (max < 0: no limit).
 */
ssize_t bal_scan_chunks(struct evbuffer *in, struct bal_chunk *st, int64_t max,
			const char **why);
/* Whether the request's path is one --deny-path keeps from clients. */
int bal_path_denied(struct bal_client *c, const char *p,
		    const struct bal_msg *m);

#endif
