/*
 * Routing and the libmicrohttpd access handler.
 *
 * MHD calls the handler several times per request: first with the headers
 * only, then once per chunk of body, then once more with no data.  The
 * response is queued on that last call, never on the first: queuing on the
 * first call makes MHD close keep-alive connections (measured: 45k vs 208k
 * req/s on /plaintext).  The exception is a Content-Length over the limit,
 * answered 413 at once so the body is never read.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hs_log.h"
#include "hs_util.h"
#include "srv_core.h"
#include "srv_handlers.h"
#include "srv_pool.h"
#include "srv_req.h"
#include "srv_resp.h"
#include "srv_route.h"
#include "srv_stats.h"
#include "srv_worker.h"

/* Bytes past --max-body read and dropped before a 413 (see srv_on_access). */
#define SRV_DRAIN_MAX (1024 * 1024)

#define ALLOW_GET     "GET, HEAD"
#define ALLOW_PRODUCT "GET, HEAD, PUT, DELETE"
#define ALLOW_REVIEWS "POST"

typedef void (*srv_handler)(struct srv_ctx *c, struct srv_resp *r);

static void
h_plaintext(struct srv_ctx *c, struct srv_resp *r)
{
	r->status = 200;
	r->ctype = "text/plain";
	hs_buf_append(&r->body, "Hello, World!", 13);
}

static const srv_handler handlers[SRV_R_COUNT] = {
	[SRV_R_PLAINTEXT] = h_plaintext,
	[SRV_R_JSON] = srv_h_json,
	[SRV_R_DB] = srv_h_db,
	[SRV_R_QUERIES] = srv_h_queries,
	[SRV_R_UPDATES] = srv_h_updates,
	[SRV_R_HEALTHZ] = srv_h_healthz,
	[SRV_R_STATS] = srv_h_stats,
	[SRV_R_CATALOG] = srv_h_catalog,
	[SRV_R_METRICS] = srv_h_metrics,
	[SRV_R_PRODUCT_GET] = srv_h_product_get,
	[SRV_R_PRODUCT_PUT] = srv_h_product_put,
	[SRV_R_PRODUCT_DELETE] = srv_h_product_delete,
	[SRV_R_REVIEW_POST] = srv_h_review_post,
	[SRV_R_CATEGORY_TOP] = srv_h_category_top,
	[SRV_R_CACHED_QUERIES] = srv_h_cached_queries,
};

static const struct {
	const char *path;
	enum srv_route route;
} static_routes[] = {
	{ "/plaintext", SRV_R_PLAINTEXT },
	{ "/json", SRV_R_JSON },
	{ "/db", SRV_R_DB },
	{ "/queries", SRV_R_QUERIES },
	{ "/updates", SRV_R_UPDATES },
	{ "/healthz", SRV_R_HEALTHZ },
	{ "/stats", SRV_R_STATS },
	{ "/metrics", SRV_R_METRICS },
	{ "/cached-queries", SRV_R_CACHED_QUERIES },
	{ "/catalog", SRV_R_CATALOG },
};

/*
 * Parses the {id} segment [s, s+len).  Returns 0, or -1 when it is not a
 * number (400), or -2 when it is a number no row can have (404).
 */
static int
parse_id(const char *s, size_t len, int64_t *id)
{
	char tmp[24];

	if (len == 0 || strspn(s, "0123456789") < len)
		return -1;
	if (len >= sizeof(tmp))
		return -2;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	if (hs_parse_i64(tmp, 1, INT64_MAX, id) < 0)
		return -2;
	return 0;
}

static int
is_get(const char *m)
{
	return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
}

static void
set_err(struct srv_req *rq, int status, const char *msg, const char *allow)
{
	rq->route = SRV_R_OTHER;
	rq->err_status = status;
	rq->err_msg = msg;
	rq->allow = allow;
}

/* /products/{id}[/reviews] and /categories/{id}/top. */
static void
resolve_resource(const char *method, const char *url, struct srv_req *rq)
{
	const char *rest, *slash;
	int is_product, rc;
	size_t idlen;

	if (strncmp(url, "/products/", 10) == 0) {
		is_product = 1;
		rest = url + 10;
	} else if (strncmp(url, "/categories/", 12) == 0) {
		is_product = 0;
		rest = url + 12;
	} else {
		set_err(rq, 404, "no such route", NULL);
		return;
	}
	slash = strchr(rest, '/');
	idlen = slash ? (size_t)(slash - rest) : strlen(rest);
	if (idlen == 0) {
		set_err(rq, 404, "no such route", NULL);
		return;
	}
	if (is_product && slash == NULL) {
		if (is_get(method))
			rq->route = SRV_R_PRODUCT_GET;
		else if (strcmp(method, "PUT") == 0)
			rq->route = SRV_R_PRODUCT_PUT;
		else if (strcmp(method, "DELETE") == 0)
			rq->route = SRV_R_PRODUCT_DELETE;
		else {
			set_err(rq, 405, "method not allowed", ALLOW_PRODUCT);
			return;
		}
	} else if (is_product && strcmp(slash, "/reviews") == 0) {
		if (strcmp(method, "POST") != 0) {
			set_err(rq, 405, "method not allowed", ALLOW_REVIEWS);
			return;
		}
		rq->route = SRV_R_REVIEW_POST;
	} else if (!is_product && slash && strcmp(slash, "/top") == 0) {
		if (!is_get(method)) {
			set_err(rq, 405, "method not allowed", ALLOW_GET);
			return;
		}
		rq->route = SRV_R_CATEGORY_TOP;
	} else {
		set_err(rq, 404, "no such route", NULL);
		return;
	}
	rc = parse_id(rest, idlen, &rq->id);
	if (rc == -1)
		set_err(rq, 400,
			is_product ? "product id must be a positive integer"
				   : "category id must be a positive integer",
			NULL);
	else if (rc == -2)
		set_err(rq, 404,
			is_product ? "product not found" : "category not found",
			NULL);
}

void
srv_route_resolve(const char *method, const char *url, struct srv_req *rq)
{
	rq->err_status = 0;
	for (size_t i = 0; i < sizeof(static_routes) / sizeof(static_routes[0]);
	     i++) {
		if (strcmp(url, static_routes[i].path) != 0)
			continue;
		if (!is_get(method)) {
			set_err(rq, 405, "method not allowed", ALLOW_GET);
			return;
		}
		rq->route = static_routes[i].route;
		return;
	}
	resolve_resource(method, url, rq);
	rq->wants_body =
		rq->err_status == 0 && (rq->route == SRV_R_PRODUCT_PUT ||
					rq->route == SRV_R_REVIEW_POST);
}

size_t
srv_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	char *w = s;

	(void)cls;
	(void)conn;
	for (const char *r = s; *r != '\0'; r++) {
		int hi, lo;

		if (*r == '%' && (hi = hs_hexval(r[1])) >= 0 &&
		    (lo = hs_hexval(r[2])) >= 0 && (hi | lo) != 0) {
			*w++ = (char)(hi << 4 | lo);
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	return (size_t)(w - s);
}

/* RFC 9110 tchar. */
static int
is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

void
srv_head_field(struct srv_head *h, const char *name, size_t nlen,
	       const char *value, size_t vlen)
{
	if (h->err_status != 0)
		return;
	if (nlen == 0) {
		h->err_status = 400;
		h->err_msg = "empty header name";
		return;
	}
	for (size_t i = 0; i < nlen; i++)
		if (!is_tchar((unsigned char)name[i])) {
			h->err_status = 400;
			h->err_msg = "invalid header name";
			return;
		}
	for (size_t i = 0; i < vlen; i++) {
		unsigned char c = (unsigned char)value[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			h->err_status = 400;
			h->err_msg = "control character in a header value";
			return;
		}
	}
	if (nlen == 14 && strncasecmp(name, "Content-Length", 14) == 0)
		h->content_length++;
	else if (nlen == 17 &&
		 strncasecmp(name, "Transfer-Encoding", 17) == 0) {
		h->transfer_encoding++;
		if (vlen != 7 || strncasecmp(value, "chunked", 7) != 0)
			h->te_other = 1;
	} else if (nlen == 4 && strncasecmp(name, "Host", 4) == 0)
		h->host++;
}

void
srv_head_verdict(struct srv_head *h, const char *version)
{
	int v11 = strcmp(version, MHD_HTTP_VERSION_1_1) == 0;

	if (h->err_status != 0)
		return;
	if (!v11 && strcmp(version, MHD_HTTP_VERSION_1_0) != 0) {
		h->err_status = 505;
		h->err_msg = "HTTP version not supported";
	} else if (h->content_length > 1) {
		h->err_status = 400;
		h->err_msg = "more than one Content-Length";
	} else if (h->transfer_encoding > 0 && h->content_length > 0) {
		h->err_status = 400;
		h->err_msg = "both Transfer-Encoding and Content-Length";
	} else if (h->transfer_encoding > 0 && !v11) {
		h->err_status = 400;
		h->err_msg = "Transfer-Encoding in an HTTP/1.0 request";
	} else if (h->transfer_encoding > 1 || h->te_other) {
		h->err_status = 501;
		h->err_msg = "only Transfer-Encoding: chunked is supported";
	} else if (h->host > 1) {
		h->err_status = 400;
		h->err_msg = "more than one Host header";
	} else if (v11 && h->host == 0) {
		/* RFC 9112, section 3.2; libmicrohttpd lets it through. */
		h->err_status = 400;
		h->err_msg = "missing Host header";
	}
}

static enum MHD_Result
head_field_cb(void *cls, enum MHD_ValueKind kind, const char *key,
	      size_t key_size, const char *value, size_t value_size)
{
	(void)kind;
	srv_head_field(cls, key, key_size, value != NULL ? value : "",
		       value != NULL ? value_size : 0);
	return MHD_YES;
}

static void
add_header(struct MHD_Response *resp, const char *name, const char *value)
{
	if (MHD_add_response_header(resp, name, value) != MHD_YES)
		log_warnx("cannot add header %s", name);
}

/* Turns r into an MHD response, queues it, and records the request. */
static enum MHD_Result
send_resp(struct srv_ctx *c, struct srv_resp *r, uint64_t db_ns)
{
	struct srv *s = c->srv;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char timing[128], num[16];
	uint64_t now = hs_now_ns(), total = now - c->rq->t0_ns;
	size_t len = 0;
	char *body;

	/* JSON ends with a newline, so that curl's output ends its line. */
	if (r->body.len > 0 && r->body.data[r->body.len - 1] != '\n' &&
	    (r->ctype == NULL ||
	     strncmp(r->ctype, "application/json", 16) == 0))
		hs_buf_append(&r->body, "\n", 1);
	body = hs_buf_steal(&r->body, &len);

	if (r->status == 204 || r->status == 304) {
		free(body);
		body = NULL;
		len = 0;
	}
	resp = body ? MHD_create_response_from_buffer(len, body,
						      MHD_RESPMEM_MUST_FREE)
		    : MHD_create_response_from_buffer(0, (void *)"",
						      MHD_RESPMEM_PERSISTENT);
	if (resp == NULL) {
		free(body);
		log_error("cannot create a response");
		return MHD_NO;
	}
	add_header(resp, MHD_HTTP_HEADER_SERVER, "hammerstack");
	if (len > 0 || r->status != 204)
		add_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
			   r->ctype ? r->ctype : "application/json");
	add_header(resp, "X-Served-By", s->cfg.id);
	if (r->xcache)
		add_header(resp, "X-Cache", r->xcache);
	if (r->allow)
		add_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
	if (r->retry_after > 0) {
		snprintf(num, sizeof(num), "%d", r->retry_after);
		add_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, num);
	}
	/* Integer formatting: printf's %f shows up in /plaintext profiles. */
	snprintf(timing, sizeof(timing),
		 "cache;dur=%" PRIu64 ".%03" PRIu64 ", db;dur=%" PRIu64
		 ".%03" PRIu64 ", total;dur=%" PRIu64 ".%03" PRIu64,
		 r->cache_ns / 1000000, r->cache_ns / 1000 % 1000,
		 db_ns / 1000000, db_ns / 1000 % 1000, total / 1000000,
		 total / 1000 % 1000);
	add_header(resp, "Server-Timing", timing);
	ret = MHD_queue_response(c->conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	srv_phase_set(c->rq, SRV_PH_ANSWERED);
	srv_stats_record(s, c->rq->route, r->status, total / 1000);
	log_debug("%s %d %.3fms", srv_route_name(c->rq->route), r->status,
		  (double)total / 1e6);
	return ret;
}

static enum MHD_Result
answer_error(struct srv_ctx *c, int status, const char *msg, const char *allow)
{
	struct srv_resp r = { 0 };
	enum MHD_Result ret;

	srv_error(&r, status, msg);
	r.allow = allow;
	ret = send_resp(c, &r, 0);
	hs_buf_free(&r.body);
	return ret;
}

/*
 * With database threads: whether a route's handler starts on the loop
 * thread.  Database routes go straight to a database thread; the cacheable
 * reads start on the loop when it batches (a hit is served there, anything
 * else asks for a database thread: SRV_PH_OFFLOAD).
 */
static int
starts_on_loop(const struct srv_ctx *c)
{
	switch (c->rq->route) {
	case SRV_R_PLAINTEXT:
	case SRV_R_JSON:
	case SRV_R_STATS:
	case SRV_R_CATALOG:
	case SRV_R_METRICS:
	case SRV_R_OTHER:
		return 1;
	case SRV_R_PRODUCT_GET:
	case SRV_R_CATEGORY_TOP:
		return c->srv->cfg.cache != NULL && c->loop != NULL &&
		       c->loop->batcher != NULL;
	default:
		return 0;
	}
}

/*
 * Hands the request to a database thread.  The connection is suspended
 * first, so the database thread's resume always comes after it.
 */
static enum MHD_Result
offload(struct srv_ctx *c)
{
	struct srv_req *rq = c->rq;

	if (srv_phase_set(rq, SRV_PH_QUEUED) < 0)
		return MHD_NO;
	rq->conn = c->conn;
	rq->pool_resp = hs_xcalloc(1, sizeof(*rq->pool_resp));
	MHD_suspend_connection(c->conn);
	srv_pool_submit(c->srv->pool, rq);
	return MHD_YES;
}

void
srv_run_on_pool(void *arg, struct srv_req *rq)
{
	struct srv *s = arg;
	struct srv_ctx c = { s, srv_worker_get(s), rq, rq->conn, NULL };
	struct srv_resp *r = rq->pool_resp;
	uint64_t db0 = srv_worker_db_ns(c.w);

	srv_phase_set(rq, SRV_PH_POOL);
	r->status = 500;
	handlers[rq->route](&c, r);
	if (r->status == 503)
		r->retry_after = 1;
	rq->pool_db_ns = srv_worker_db_ns(c.w) - db0;
	srv_worker_publish(c.w);
	srv_phase_set(rq, SRV_PH_BUILT);
}

/* Frees a response a database thread built (sent or not). */
static void
pool_resp_free(struct srv_req *rq)
{
	if (rq->pool_resp != NULL) {
		hs_buf_free(&rq->pool_resp->body);
		free(rq->pool_resp);
		rq->pool_resp = NULL;
	}
}

/*
 * Runs the route's handler on the loop (every route without database
 * threads).  It answers, or leaves the request SRV_PH_PARKED on the
 * loop's batcher, or SRV_PH_OFFLOAD for a database thread.
 */
static enum MHD_Result
run_on_loop(struct srv_ctx *c)
{
	struct srv_req *rq = c->rq;
	struct srv_resp r = { 0 };
	enum MHD_Result ret;
	uint64_t db0;

	if (srv_phase_set(rq, SRV_PH_LOOP) < 0)
		return MHD_NO;
	c->w = srv_worker_get(c->srv);
	db0 = srv_worker_db_ns(c->w);
	r.status = 500;
	handlers[rq->route](c, &r);
	if (rq->phase == SRV_PH_PARKED) {
		hs_buf_free(&r.body);
		return MHD_YES; /* MHD calls again after the multi-get */
	}
	if (rq->phase == SRV_PH_OFFLOAD) {
		hs_buf_free(&r.body);
		return offload(c);
	}
	if (r.status == 503)
		r.retry_after = 1;
	ret = send_resp(c, &r, srv_worker_db_ns(c->w) - db0);
	srv_worker_publish(c->w);
	hs_buf_free(&r.body);
	return ret;
}

/* MHD's last call for a request (and its calls after a pause). */
static enum MHD_Result
dispatch(struct srv_ctx *c)
{
	struct srv_req *rq = c->rq;
	enum MHD_Result ret;

	switch (rq->phase) {
	case SRV_PH_HEAD:
		if (rq->err_status)
			return answer_error(c, rq->err_status, rq->err_msg,
					    rq->allow);
		if (c->srv->pool != NULL && !starts_on_loop(c))
			return offload(c);
		return run_on_loop(c);
	case SRV_PH_PARKED:
		return MHD_YES; /* called again before the multi-get */
	case SRV_PH_BATCHED:
		return run_on_loop(c);
	case SRV_PH_BUILT:
		/*
		 * Resumed: a database thread has built the response.  A
		 * suspended connection is not served, and its resume (under
		 * MHD's mutex) orders the thread's writes before this read.
		 */
		ret = send_resp(c, rq->pool_resp, rq->pool_db_ns);
		pool_resp_free(rq);
		return ret;
	default:
		/* Suspended (QUEUED, POOL) or within one call (LOOP,
		   OFFLOAD): MHD has no business calling now. */
		log_warnx_rl("%s: access handler called in phase %s",
			     srv_route_name(rq->route),
			     srv_phase_name(rq->phase));
		return MHD_NO;
	}
}

/*
 * On the first call: route, check the head where libmicrohttpd is lenient
 * (srv_head_verdict: the version, duplicate or conflicting framing
 * fields, Host, bytes a field may not hold), and check the declared body
 * size.  A bad head is answered at once: its body, if any, is never read
 * and the connection closes.
 */
static struct srv_req *
req_begin(struct srv *s, struct MHD_Connection *conn, const char *url,
	  const char *method, const char *version, int *too_large,
	  int *bad_head)
{
	struct srv_req *rq = hs_xcalloc(1, sizeof(*rq));
	struct srv_head head = { 0 };
	const char *cl;
	int64_t n;

	rq->srv = s;
	rq->phase = SRV_PH_HEAD;
	rq->t0_ns = hs_now_ns();
	rq->sconn = srv_conn_of(conn);
	rq->loop = rq->sconn != NULL ? rq->sconn->loop : NULL;
	srv_conn_head_done(rq->sconn);
	__atomic_fetch_add(&s->stats.inflight, 1, __ATOMIC_RELAXED);
	srv_route_resolve(method, url, rq);
	MHD_get_connection_values_n(conn, MHD_HEADER_KIND, head_field_cb,
				    &head);
	srv_head_verdict(&head, version);
	*too_large = 0;
	if (head.err_status != 0) {
		set_err(rq, head.err_status, head.err_msg, NULL);
		*bad_head = 1;
		return rq;
	}
	cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
					 MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl != NULL && hs_parse_i64(cl, 0, INT64_MAX, &n) == 0 &&
	    (uint64_t)n > s->cfg.max_body)
		*too_large = 1;
	return rq;
}

enum MHD_Result
srv_on_access(void *cls, struct MHD_Connection *conn, const char *url,
	      const char *method, const char *version, const char *upload_data,
	      size_t *upload_data_size, void **con_cls)
{
	struct srv *s = cls;
	struct srv_ctx c = { s, NULL, *con_cls, conn, NULL };
	int too_large, bad_head = 0;

	if (c.rq == NULL) {
		c.rq = req_begin(s, conn, url, method, version, &too_large,
				 &bad_head);
		c.loop = c.rq->loop;
		*con_cls = c.rq;
		if (!too_large && !bad_head)
			return MHD_YES;
		srv_conn_answering(c.rq->sconn);
		if (bad_head)
			return answer_error(&c, c.rq->err_status, c.rq->err_msg,
					    NULL);
		return answer_error(&c, 413, "request body too large", NULL);
	}
	c.loop = c.rq->loop;
	if (c.rq->phase == SRV_PH_ANSWERED) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		c.rq->seen += n;
		if (c.rq->seen > s->cfg.max_body) {
			/*
			 * A chunked upload went past the limit.  MHD cannot
			 * queue a response in the middle of a body, so the rest
			 * is read and dropped and 413 is answered at the end;
			 * a client that keeps sending far beyond the limit is
			 * disconnected.
			 */
			if (c.rq->seen > s->cfg.max_body + SRV_DRAIN_MAX) {
				log_info_rl("upload over %zu bytes: closing "
					    "the connection",
					    s->cfg.max_body);
				return MHD_NO;
			}
			c.rq->err_status = 413;
			c.rq->err_msg = "request body too large";
			c.rq->allow = NULL;
			hs_buf_free(&c.rq->body);
			return MHD_YES;
		}
		/* Bodies of routes that take none are read and dropped. */
		if (c.rq->wants_body)
			hs_buf_append(&c.rq->body, upload_data, n);
		return MHD_YES;
	}
	srv_conn_answering(c.rq->sconn);
	return dispatch(&c);
}

void
srv_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
		 enum MHD_RequestTerminationCode toe)
{
	struct srv *s = cls;
	struct srv_req *rq = *con_cls;

	if (rq == NULL)
		return;
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
		log_debug("%s: request ended early (%d)",
			  srv_route_name(rq->route), (int)toe);
	srv_conn_request_done(rq->sconn);
	hs_buf_free(&rq->body);
	/* A database thread's response that was never sent. */
	pool_resp_free(rq);
	/* A parked read whose connection ended before its multi-get. */
	if (rq->phase == SRV_PH_PARKED)
		cache_batch_cancel(rq->batcher, &rq->batch);
	/* A batched hit whose client left before it was served. */
	cache_value_release(&rq->batch.value);
	free(rq);
	*con_cls = NULL;
	__atomic_fetch_sub(&s->stats.inflight, 1, __ATOMIC_RELAXED);
}
