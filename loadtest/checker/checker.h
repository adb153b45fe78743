/*
 * Internal interface of hs-checker, the consistency checker: a blocking
 * HTTP/1.1 keep-alive client (client.c, one per thread, on libevent's
 * evhttp), response-body helpers and the final comparison of served
 * products with the database rows (verify.c).  main.c runs the readers and
 * writers and reports.
 */
#ifndef HS_CHECKER_H
#define HS_CHECKER_H

#include <stddef.h>
#include <stdint.h>

#include "hs_buf.h"

struct chk_conn;

/*
 * A keep-alive connection to host:port (numeric address or name) with a
 * per-request timeout.  Not thread-safe: one per thread.  Connects lazily
 * and reconnects by itself after an error.  Returns NULL on failure.
 * Free with chk_conn_free() (NULL is a no-op).
 */
struct chk_conn *chk_conn_new(const char *host, int port, int timeout_ms);
void chk_conn_free(struct chk_conn *c);

/*
 * Sends one request and waits for the whole response.  json_body (may be
 * NULL) is sent with Content-Type: application/json.  The response body is
 * copied into *body (reset first).  Returns the HTTP status, or -1 on a
 * connection error or timeout.
 */
int chk_conn_request(struct chk_conn *c, const char *method, const char *path,
		     const char *json_body, struct hs_buf *body);

/* The fields of a product body (or row) that the checker compares. */
struct chk_product {
	int64_t id, version, price_cents, stock;
	char name[256];
};

/*
 * Parses a product JSON body ({"id":..,"version":..,...}).  Returns 0 when
 * it has an integer "version" (the other fields are filled when present),
 * -1 otherwise.
 */
int chk_parse_product(const char *body, size_t len, struct chk_product *out);

/*
 * Reads products (ids[0..n-1]) directly from the database at path (a
 * SQLite file or a postgres:// URL: give the primary's, not a replica's)
 * into rows[].  found[i] is set to 1 when the row exists.
 * Returns 0, or -1 with a message in err.
 */
int chk_db_read(const char *path, const int64_t *ids, int n,
		struct chk_product *rows, int *found, char *err, size_t errlen);

#endif
