/*
 * Unit tests for the server's pure logic: method + path -> route (with the
 * 400 / 404 / 405 decisions and Allow lists) and the TechEmpower N clamp.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "srv_handlers.h"
#include "srv_req.h"
#include "srv_route.h"

static struct srv_req
resolve(const char *method, const char *url)
{
	struct srv_req rq;

	memset(&rq, 0, sizeof(rq));
	srv_route_resolve(method, url, &rq);
	return rq;
}

static void
expect_route(const char *method, const char *url, enum srv_route route,
	     int64_t id)
{
	struct srv_req rq = resolve(method, url);

	assert_int_equal(rq.err_status, 0);
	assert_int_equal(rq.route, route);
	if (id)
		assert_int_equal(rq.id, id);
}

static void
expect_err(const char *method, const char *url, int status, const char *allow)
{
	struct srv_req rq = resolve(method, url);

	assert_int_equal(rq.err_status, status);
	assert_int_equal(rq.route, SRV_R_OTHER);
	assert_int_equal(rq.wants_body, 0);
	if (allow)
		assert_string_equal(rq.allow, allow);
	else
		assert_null(rq.allow);
}

static void
test_routes(void **state)
{
	expect_route("GET", "/plaintext", SRV_R_PLAINTEXT, 0);
	expect_route("HEAD", "/json", SRV_R_JSON, 0);
	expect_route("GET", "/db", SRV_R_DB, 0);
	expect_route("GET", "/queries", SRV_R_QUERIES, 0);
	expect_route("GET", "/updates", SRV_R_UPDATES, 0);
	expect_route("GET", "/healthz", SRV_R_HEALTHZ, 0);
	expect_route("GET", "/stats", SRV_R_STATS, 0);
	expect_route("GET", "/metrics", SRV_R_METRICS, 0);
	expect_route("GET", "/products/42", SRV_R_PRODUCT_GET, 42);
	expect_route("PUT", "/products/42", SRV_R_PRODUCT_PUT, 42);
	expect_route("DELETE", "/products/7", SRV_R_PRODUCT_DELETE, 7);
	expect_route("POST", "/products/9/reviews", SRV_R_REVIEW_POST, 9);
	expect_route("GET", "/categories/3/top", SRV_R_CATEGORY_TOP, 3);
	expect_route("GET", "/products/9223372036854775807", SRV_R_PRODUCT_GET,
		     INT64_MAX);
	assert_int_equal(resolve("PUT", "/products/1").wants_body, 1);
	assert_int_equal(resolve("POST", "/products/1/reviews").wants_body, 1);
	assert_int_equal(resolve("GET", "/products/1").wants_body, 0);
	assert_int_equal(resolve("DELETE", "/products/1").wants_body, 0);
}

static void
test_errors(void **state)
{
	expect_err("GET", "/", 404, NULL);
	expect_err("GET", "/products", 404, NULL);
	expect_err("GET", "/products/", 404, NULL);
	expect_err("GET", "/products/1/", 404, NULL);
	expect_err("GET", "/categories/1", 404, NULL);
	expect_err("GET", "/categories/1/top/", 404, NULL);
	expect_err("GET", "/plaintext/", 404, NULL);
	expect_err("GET", "/products/abc", 400, NULL);
	expect_err("GET", "/products/-1", 400, NULL);
	expect_err("GET", "/products/+1", 400, NULL);
	expect_err("GET", "/products/1.0", 400, NULL);
	expect_err("GET", "/categories/x/top", 400, NULL);
	expect_err("GET", "/products/0", 404, NULL);
	expect_err("GET", "/products/9223372036854775808", 404, NULL);
	expect_err("GET", "/products/123456789012345678901234567890", 404,
		   NULL);
	expect_err("POST", "/plaintext", 405, "GET, HEAD");
	expect_err("PUT", "/metrics", 405, "GET, HEAD");
	expect_err("POST", "/products/1", 405, "GET, HEAD, PUT, DELETE");
	expect_err("PATCH", "/products/1", 405, "GET, HEAD, PUT, DELETE");
	expect_err("GET", "/products/1/reviews", 405, "POST");
	expect_err("DELETE", "/categories/1/top", 405, "GET, HEAD");
}

static void
test_tfb_count(void **state)
{
	assert_int_equal(srv_tfb_count(NULL), 1);
	assert_int_equal(srv_tfb_count(""), 1);
	assert_int_equal(srv_tfb_count("abc"), 1);
	assert_int_equal(srv_tfb_count("12abc"), 1);
	assert_int_equal(srv_tfb_count("0"), 1);
	assert_int_equal(srv_tfb_count("-7"), 1);
	assert_int_equal(srv_tfb_count("1"), 1);
	assert_int_equal(srv_tfb_count("20"), 20);
	assert_int_equal(srv_tfb_count("500"), 500);
	assert_int_equal(srv_tfb_count("501"), 500);
	assert_int_equal(srv_tfb_count("99999999999999999999999"), 500);
}

static void
test_unescape(void **state)
{
	char a[] = "/products/1%00abc", b[] = "/a%2Fb%41%zz%4", c[] = "%00%41";

	assert_int_equal(srv_unescape(NULL, NULL, a),
			 strlen("/products/1%00abc"));
	assert_string_equal(a, "/products/1%00abc");
	expect_err("GET", a, 400, NULL);
	srv_unescape(NULL, NULL, b);
	assert_string_equal(b, "/a/bA%zz%4");
	assert_int_equal(srv_unescape(NULL, NULL, c), 4);
	assert_string_equal(c, "%00A");
}

/* Feeds "name: value" pairs (NULL-terminated), returns the verdict. */
static int
head_status(const char *version, const char *const *f)
{
	struct srv_head h;

	memset(&h, 0, sizeof(h));
	for (; *f != NULL; f += 2)
		srv_head_field(&h, f[0], strlen(f[0]), f[1], strlen(f[1]));
	srv_head_verdict(&h, version);
	return h.err_status;
}

static void
test_head_checks(void **state)
{
	static const char *const ok[] = { "Host", "x", "Content-Length", "2",
					  NULL };
	static const char *const two_cl[] = {
		"Host", "x", "Content-Length", "2", "content-length", "2", NULL
	};
	static const char *const cl_te[] = {
		"Host",    "x", "Content-Length", "2", "Transfer-Encoding",
		"chunked", NULL
	};
	static const char *const te_gzip[] = { "Host", "x", "Transfer-Encoding",
					       "gzip", NULL };
	static const char *const sp_name[] = { "Host", "x", "X-A ", "b", NULL };
	static const char *const ctl[] = { "Host", "x", "X-A", "a\x01b", NULL };
	static const char *const tab[] = { "Host", "x", "X-A", "a\tb", NULL };
	static const char *const two_host[] = { "Host", "x", "host", "y",
						NULL };
	static const char *const none[] = { NULL };

	assert_int_equal(head_status("HTTP/1.1", ok), 0);
	assert_int_equal(head_status("HTTP/1.0", none), 0);
	assert_int_equal(head_status("HTTP/1.1", none), 400);
	assert_int_equal(head_status("HTTP/1.9", ok), 505);
	assert_int_equal(head_status("HTTP/1.1", two_cl), 400);
	assert_int_equal(head_status("HTTP/1.1", cl_te), 400);
	assert_int_equal(head_status("HTTP/1.1", te_gzip), 501);
	assert_int_equal(head_status("HTTP/1.1", sp_name), 400);
	assert_int_equal(head_status("HTTP/1.1", ctl), 400);
	assert_int_equal(head_status("HTTP/1.1", tab), 0);
	assert_int_equal(head_status("HTTP/1.1", two_host), 400);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_tfb_count),
		cmocka_unit_test(test_unescape),
		cmocka_unit_test(test_head_checks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
