/*
 * The I/O leaf described in io.h: one read(2) into reserved evbuffer
 * space, writes at once, EV_WRITE armed only while output waits.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "hs_log.h"
#include "hs_util.h"
#include "io.h"

#define READ_CHUNK 16384

void
bal_io_init(struct bal_io *io, struct event_base *base, int fd,
	    event_callback_fn rcb, event_callback_fn wcb, void *arg)
{
	io->fd = fd;
	io->in = evbuffer_new();
	io->out = evbuffer_new();
	if (io->in == NULL || io->out == NULL)
		fatalx("out of memory");
	event_assign(&io->rev, base, fd, EV_READ | EV_PERSIST, rcb, arg);
	event_assign(&io->wev, base, fd, EV_WRITE | EV_PERSIST, wcb, arg);
	io->rd_on = io->wr_on = 0;
}

void
bal_io_close(struct bal_io *io)
{
	if (io->rd_on)
		event_del(&io->rev);
	if (io->wr_on)
		event_del(&io->wev);
	io->rd_on = io->wr_on = 0;
	hs_close(&io->fd);
	if (io->in)
		evbuffer_free(io->in);
	if (io->out)
		evbuffer_free(io->out);
	io->in = io->out = NULL;
}

int
bal_io_read(struct bal_io *io)
{
	struct evbuffer_iovec v;
	ssize_t r;

	if (evbuffer_reserve_space(io->in, READ_CHUNK, &v, 1) < 1)
		return -1;
	r = read(io->fd, v.iov_base, v.iov_len);
	if (r > 0) {
		v.iov_len = (size_t)r;
		evbuffer_commit_space(io->in, &v, 1);
		return (int)r;
	}
	if (r == 0)
		return 0;
	return (errno == EAGAIN || errno == EINTR) ? -2 : -1;
}

int
bal_io_flush(struct bal_io *io)
{
	if (evbuffer_get_length(io->out) > 0) {
		int n = evbuffer_write(io->out, io->fd);
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
	}
	if (evbuffer_get_length(io->out) > 0) {
		bal_io_wr(io);
	} else if (io->wr_on) {
		event_del(&io->wev);
		io->wr_on = 0;
	}
	return 0;
}

void
bal_io_wr(struct bal_io *io)
{
	if (!io->wr_on) {
		event_add(&io->wev, NULL);
		io->wr_on = 1;
	}
}

void
bal_io_rd(struct bal_io *io, int on)
{
	if (on && !io->rd_on)
		event_add(&io->rev, NULL);
	else if (!on && io->rd_on)
		event_del(&io->rev);
	io->rd_on = on ? 1 : 0;
}
