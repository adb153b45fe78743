/*
 * The proxy's non-blocking I/O leaf: a socket with its read and write
 * events and two evbuffers.  It knows nothing of clients, backends or HTTP.
 *
 * Why not bufferevents: a socket bufferevent writes only when the loop next
 * reports the socket writable, which costs two epoll_ctl calls and one more
 * loop turn per write, twice per proxied request.  struct bal_io writes at
 * once and arms EV_WRITE only when the kernel buffer is full, and reads
 * with one read(2) into reserved evbuffer space (evbuffer_read() issues a
 * FIONREAD ioctl first).  evbuffers are still used for zero-copy moves of
 * body bytes between the two sides.
 */
#ifndef BAL_IO_H
#define BAL_IO_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

struct bal_io {
	int fd;
	struct event rev, wev;
	struct evbuffer *in, *out;
	unsigned rd_on : 1, wr_on : 1;
};

/* Takes fd; the events are assigned, not added (see bal_io_rd). */
void bal_io_init(struct bal_io *io, struct event_base *base, int fd,
		 event_callback_fn rcb, event_callback_fn wcb, void *arg);
/* Removes the events, closes fd and frees both buffers (set to NULL). */
void bal_io_close(struct bal_io *io);
/* > 0 bytes read, 0 EOF, -1 error, -2 nothing to read now. */
int bal_io_read(struct bal_io *io);
/* Writes what it can now, arms EV_WRITE for the rest; -1 on error. */
int bal_io_flush(struct bal_io *io);
/* Turns reading on or off (an epoll_ctl only when it changes). */
void bal_io_rd(struct bal_io *io, int on);
/* Arms EV_WRITE (a connect in progress reports through it). */
void bal_io_wr(struct bal_io *io);

#endif
