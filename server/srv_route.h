/*
 * Routing and the libmicrohttpd callbacks (router.c): method + path to a
 * route, the head checks where libmicrohttpd is lenient, and the access
 * handler that moves a request through its phases (srv_req.h).
 */
#ifndef HS_SRV_ROUTE_H
#define HS_SRV_ROUTE_H

#include <stddef.h>

#include <microhttpd.h>

struct srv;
struct srv_req;

/* Every route the server knows; stats are kept per route. */
enum srv_route {
	SRV_R_PLAINTEXT,
	SRV_R_JSON,
	SRV_R_DB,
	SRV_R_QUERIES,
	SRV_R_UPDATES,
	SRV_R_HEALTHZ,
	SRV_R_STATS,
	SRV_R_CATALOG,
	SRV_R_METRICS,
	SRV_R_PRODUCT_GET,
	SRV_R_PRODUCT_PUT,
	SRV_R_PRODUCT_DELETE,
	SRV_R_REVIEW_POST,
	SRV_R_CATEGORY_TOP,
	SRV_R_CACHED_QUERIES,
	SRV_R_OTHER, /* 404, 405 and anything unrouted */
	SRV_R_COUNT
};

/* What the head checks saw (srv_head_field), then their verdict. */
struct srv_head {
	int content_length;    /* Content-Length fields */
	int transfer_encoding; /* Transfer-Encoding fields */
	int te_other;          /* one that is not exactly "chunked" */
	int host;              /* Host fields */
	int err_status;        /* 0, or the status to answer */
	const char *err_msg;
};
/* Checks one header field (name a token, no control bytes in the value)
   and counts the framing fields. */
void srv_head_field(struct srv_head *h, const char *name, size_t nlen,
		    const char *value, size_t vlen);
/* After every field: sets h->err_status (400, 501, 505) or leaves 0. */
void srv_head_verdict(struct srv_head *h, const char *version);
/*
 * MHD_OPTION_UNESCAPE_CALLBACK: decodes %HH in place, except %00, which
 * stays as it is: a decoded NUL would end the path early
 * (/products/1%00abc served as product 1).  Returns the new length.
 */
size_t srv_unescape(void *cls, struct MHD_Connection *conn, char *s);
/*
 * Resolves method + path to a route.  Fills rq->route and rq->id, or
 * rq->err_status (404 unknown path, 405 + rq->allow, 400 bad id).
 */
void srv_route_resolve(const char *method, const char *url, struct srv_req *rq);
/*
 * The database threads' run (srv_pool_run_fn, arg the server): runs rq's
 * handler into rq->pool_resp and records its database time.
 */
void srv_run_on_pool(void *arg, struct srv_req *rq);
/* The MHD callbacks; cls is the server. */
enum MHD_Result srv_on_access(void *cls, struct MHD_Connection *conn,
			      const char *url, const char *method,
			      const char *version, const char *upload_data,
			      size_t *upload_data_size, void **con_cls);
void srv_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
		      enum MHD_RequestTerminationCode toe);

#endif
