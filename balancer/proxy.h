/*
 * The request / response flow between a client and a backend connection
 * (proxy.c).  Its entry points are the client's event callbacks, which
 * worker.c hands to each accepted client; the backend connections' own
 * callbacks stay inside proxy.c.  Each callback ends by freeing what it
 * closed (bal_worker_reap(), client.h).
 */
#ifndef BAL_PROXY_H
#define BAL_PROXY_H

#include <event2/event.h>

void bal_proxy_client_read_cb(evutil_socket_t fd, short what, void *arg);
void bal_proxy_client_write_cb(evutil_socket_t fd, short what, void *arg);
void bal_proxy_client_timer_cb(evutil_socket_t fd, short what, void *arg);

#endif
