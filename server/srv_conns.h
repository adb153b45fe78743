/*
 * The connection guard (conns.c): slots per server and per client
 * address, head deadlines, peers that left.  Runs on the loop threads.
 */
#ifndef HS_SRV_CONNS_H
#define HS_SRV_CONNS_H

#include <stdint.h>
#include <sys/queue.h>

#include <microhttpd.h>

struct srv_loop;

/* Where a client connection is, for the connection guard (conns.c). */
enum srv_conn_state {
	SRV_CONN_HEAD_FIRST, /**< new: its first head is due */
	SRV_CONN_HEAD_NEXT,  /**< keep-alive: the next head is due */
	SRV_CONN_BODY,       /**< head received, body arriving */
	SRV_CONN_ANSWER,     /**< request complete, being answered */
	SRV_CONN_CLOSING,    /**< shut down; MHD closes it next pass */
};

/* One per client connection (MHD's socket context), owned by its loop. */
struct srv_conn {
	enum srv_conn_state state;
	uint64_t deadline_ns;       /* the head's deadline (HEAD_* states) */
	struct srv_loop *loop;      /* NULL: not guarded */
	int fd;                     /* MHD's socket (borrowed) */
	int counted;                /* holds a slot (srv->admitted, per IP) */
	int peer_closed;            /* the client shut its side */
	int rearmed;                /* ... and its bytes were not all read */
	unsigned char addr[16];     /* client address, v4-mapped */
	TAILQ_ENTRY(srv_conn) link; /* its loop's list for the HEAD_* wait */
};
TAILQ_HEAD(srv_conn_list, srv_conn);

struct srv_ip_table *srv_ip_table_new(void);
void srv_ip_table_free(struct srv_ip_table *t);
/* MHD_OPTION_NOTIFY_CONNECTION, cls the loop: slots, deadlines, the watch
   set. */
void srv_on_connection(void *cls, struct MHD_Connection *conn,
		       void **socket_context,
		       enum MHD_ConnectionNotificationCode code);
/* A request's connection state; NULL when the connection is not guarded. */
struct srv_conn *srv_conn_of(struct MHD_Connection *conn);
/* The request's head is in (the access handler's first call). */
void srv_conn_head_done(struct srv_conn *sc);
/* The request is complete and is being answered. */
void srv_conn_answering(struct srv_conn *sc);
/* Its response is sent (MHD's completion callback). */
void srv_conn_request_done(struct srv_conn *sc);
/* After each MHD pass: closes expired heads and peers that left. */
void srv_conns_sweep(struct srv_loop *l);
/* How long the loop may wait for events, in ms; -1: no deadline. */
int64_t srv_conns_wait_ms(struct srv_loop *l);

#endif
