/* --io blocking (blocking.c): one connection per worker thread. */
#ifndef HS_SRV_BLOCKING_H
#define HS_SRV_BLOCKING_H

#include <stddef.h>

struct srv;
struct srv_blocking;

/*
 * Starts cfg.threads blocking workers on s->listen_fd (made blocking) and
 * sets s->blocking; s->blocking_busy counts the workers serving a
 * connection.  On failure returns -1 with a message in err; the caller's
 * stop then frees what was started.
 */
int srv_blocking_start(struct srv *s, char *err, size_t errlen);
/*
 * Joins the workers (after s->stopping, the wake-up and the listener's
 * shutdown) and stops their daemons, closing the connections they held.
 * NULL is a no-op.
 */
void srv_blocking_free(struct srv_blocking *p);

#endif
