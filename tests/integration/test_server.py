"""hs-server over a real seeded SQLite file (or a PostgreSQL database with
HS_TEST_DB=postgres), on a free loopback port: every
route with its JSON shape and headers, every bad input, writes visible at
once, the TechEmpower test types, keep-alive."""

import http.client
import json
import re
import socket
import unittest

import hstest

GET_ROUTES = ["/plaintext", "/json", "/db", "/queries?queries=2",
              "/updates?queries=2", "/healthz", "/stats", "/metrics",
              "/products/1", "/categories/1/top"]
CACHEABLE = ("/products/", "/categories/")
SERVER_ID = "test-srv-1"


def world_row(db, wid):
    return hstest.db_scalar(db, "SELECT randomNumber FROM world WHERE id = ?",
                            wid)


class ServerTest(unittest.TestCase):
    # How the server serves connections (BlockingServerTest overrides it).
    IO = ("--threads", "2")

    @classmethod
    def setUpClass(cls):
        cls.db = hstest.seeded_db(0.01)
        cls.proc, cls.port = hstest.start_server(
            cls.db, *cls.IO, server_id=SERVER_ID)

    @classmethod
    def tearDownClass(cls):
        rc = cls.proc.stop()
        with open(cls.proc.errpath, "rb") as f:
            err = f.read().decode("utf-8", "replace")[-4000:]
        cls.proc.cleanup()
        assert rc == 0, "hs-server exit %s\n%s" % (rc, err)

    def req(self, method, path, body=None, headers=None, conn=None):
        return hstest.request(self.port, method, path, body=body,
                              headers=headers, conn=conn)

    def get(self, path):
        return self.req("GET", path)

    def assertError(self, r, status):
        self.assertEqual(r.status, status, r.body)
        self.assertEqual(r.header("content-type"), "application/json")
        j = r.json()
        self.assertEqual(j["status"], status)
        self.assertIsInstance(j["error"], str)
        self.assertTrue(j["error"])

    def put(self, pid, body, ctype="application/json"):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        return self.req("PUT", "/products/%s" % pid, body,
                        {"Content-Type": ctype} if ctype else {})

    # --- headers and shapes ---

    def test_headers_on_every_route(self):
        for path in GET_ROUTES:
            with self.subTest(path=path):
                r = self.get(path)
                self.assertEqual(r.status, 200, r.body)
                self.assertTrue(r.header("date").endswith(" GMT"))
                self.assertEqual(r.header("server"), "hammerstack")
                self.assertTrue(r.header("content-type"))
                self.assertEqual(int(r.header("content-length")),
                                 len(r.body))
                self.assertEqual(r.header("x-served-by"), SERVER_ID)
                st = r.header("server-timing")
                self.assertRegex(st, r"db;dur=[0-9.]+")
                self.assertRegex(st, r"total;dur=[0-9.]+")
                if path.startswith(CACHEABLE):
                    self.assertEqual(r.header("x-cache"), "BYPASS")
                else:
                    self.assertIsNone(r.header("x-cache"))

    def test_error_headers(self):
        r = self.get("/no/such/route")
        self.assertError(r, 404)
        self.assertEqual(r.header("server"), "hammerstack")
        self.assertEqual(r.header("x-served-by"), SERVER_ID)
        self.assertTrue(r.header("date"))

    def test_product_detail_shape(self):
        r = self.get("/products/3")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-type"), "application/json")
        p = r.json()
        for k, t in (("id", int), ("category_id", int), ("name", str),
                     ("description", str), ("price_cents", int),
                     ("stock", int), ("version", int), ("updated_at", int)):
            self.assertIsInstance(p[k], t, k)
        self.assertEqual(p["id"], 3)
        self.assertGreater(p["updated_at"], 10**12)  # Unix ms
        s = p["review_summary"]
        self.assertEqual(len(s["histogram"]), 5)
        self.assertEqual(sum(s["histogram"]), s["count"])
        if s["count"]:
            avg = sum((i + 1) * n for i, n in enumerate(s["histogram"])) \
                / s["count"]
            self.assertAlmostEqual(s["average"], round(avg, 2), places=2)
        rr = p["recent_reviews"]
        self.assertLessEqual(len(rr), 5)
        self.assertEqual(len(rr), min(5, s["count"]))
        for rv in rr:
            self.assertEqual(set(rv), {"id", "rating", "body", "created_at"})
            self.assertIn(rv["rating"], range(1, 6))
        times = [rv["created_at"] for rv in rr]
        self.assertEqual(times, sorted(times, reverse=True))

    def test_category_top_shape(self):
        r = self.get("/categories/1/top")
        self.assertEqual(r.status, 200)
        t = r.json()
        self.assertEqual(t["category_id"], 1)
        self.assertIsInstance(t["name"], str)
        self.assertGreater(len(t["top"]), 0)
        self.assertLessEqual(len(t["top"]), 10)
        for e in t["top"]:
            self.assertEqual(set(e), {"id", "name", "price_cents",
                                      "review_count", "average"})
        avgs = [e["average"] for e in t["top"]]
        self.assertEqual(avgs, sorted(avgs, reverse=True))
        self.assertError(self.get("/categories/999999/top"), 404)

    def test_healthz(self):
        j = self.get("/healthz").json()
        self.assertEqual(j, {"status": "ok", "db": "ok", "cache": "off",
                             "id": SERVER_ID})

    def test_stats_and_metrics(self):
        self.get("/json")
        self.get("/products/1")
        self.get("/products/abc")
        s = self.get("/stats").json()
        self.assertEqual(s["id"], SERVER_ID)
        self.assertGreater(s["uptime_s"], 0)
        self.assertGreater(s["db"]["queries"], 0)
        self.assertGreater(s["db"]["time_ms"], 0)
        self.assertGreaterEqual(s["routes"]["GET /json"]["requests"], 1)
        pr = s["routes"]["GET /products/{id}"]
        self.assertGreaterEqual(pr["status"]["2xx"], 1)
        self.assertGreaterEqual(pr["status"]["4xx"], 1)
        self.assertGreaterEqual(pr["latency"]["count"], 2)
        self.assertGreaterEqual(s["status"]["400"], 1)
        self.assertEqual(s["io"]["model"],
                         "blocking" if "blocking" in self.IO else "event")
        before = s["routes"]["GET /json"]["requests"]
        self.get("/json")
        s2 = self.get("/stats").json()
        self.assertEqual(s2["routes"]["GET /json"]["requests"], before + 1)

        m = self.get("/metrics")
        self.assertEqual(m.status, 200)
        self.assertTrue(m.header("content-type").startswith("text/plain"))
        text = m.body.decode()
        self.assertRegex(text, r'hs_requests_total\{route="GET /json",'
                               r'code="2xx"\} [1-9]')
        self.assertIn('hs_request_duration_seconds_bucket{route="GET /json"',
                      text)
        self.assertRegex(text, r"hs_db_queries_total [1-9]")
        self.assertIn("hs_db_time_seconds_total", text)
        self.assertIn('hs_info{id="%s"' % SERVER_ID, text)
        for line in text.splitlines():
            if line and not line.startswith("#"):
                self.assertRegex(line, r"^[a-z_]+(\{.*\})? [0-9.e+-]+$")

    # --- writes ---

    def test_put_visible_at_once(self):
        before = self.get("/products/5").json()
        r = self.put(5, {"price_cents": 4242, "stock": 7, "name": "Renamed"})
        self.assertEqual(r.status, 200, r.body)
        after = r.json()
        self.assertNotIn("review_summary", after)
        self.assertEqual(after["version"], before["version"] + 1)
        self.assertEqual(after["price_cents"], 4242)
        self.assertEqual(after["stock"], 7)
        self.assertEqual(after["name"], "Renamed")
        self.assertEqual(after["description"], before["description"])
        got = self.get("/products/5").json()
        self.assertEqual(got["version"], before["version"] + 1)
        self.assertEqual(got["price_cents"], 4242)
        self.assertEqual(got["name"], "Renamed")
        # A subset changes only that field.
        r = self.put(5, {"stock": 0})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["price_cents"], 4242)
        self.assertEqual(r.json()["version"], before["version"] + 2)
        # charset parameter is fine
        r = self.put(5, {"stock": 1}, "application/json; charset=utf-8")
        self.assertEqual(r.status, 200)

    def test_review_bumps_version_and_summary(self):
        before = self.get("/products/6").json()
        r = self.req("POST", "/products/6/reviews",
                     {"rating": 1, "body": "broke on day one \u2603"})
        self.assertEqual(r.status, 201, r.body)
        rv = r.json()
        self.assertEqual(set(rv), {"id", "product_id", "rating", "body",
                                   "created_at"})
        self.assertEqual(rv["product_id"], 6)
        self.assertEqual(rv["rating"], 1)
        self.assertEqual(rv["body"], "broke on day one \u2603")
        after = self.get("/products/6").json()
        self.assertEqual(after["version"], before["version"] + 1)
        s0, s1 = before["review_summary"], after["review_summary"]
        self.assertEqual(s1["count"], s0["count"] + 1)
        self.assertEqual(s1["histogram"][0], s0["histogram"][0] + 1)
        self.assertEqual(after["recent_reviews"][0]["id"], rv["id"])
        # body is optional
        r = self.req("POST", "/products/6/reviews", {"rating": 5})
        self.assertEqual(r.status, 201)
        self.assertEqual(r.json()["body"], "")

    def test_delete(self):
        self.assertEqual(self.get("/products/7").status, 200)
        r = self.req("DELETE", "/products/7")
        self.assertEqual(r.status, 204)
        self.assertEqual(r.body, b"")
        self.assertError(self.get("/products/7"), 404)
        self.assertError(self.req("DELETE", "/products/7"), 404)
        self.assertError(self.put(7, {"stock": 1}), 404)
        self.assertError(self.req("POST", "/products/7/reviews",
                                  {"rating": 3}), 404)

    # --- bad input ---

    def test_bad_json(self):
        cases = [
            (b'{"price_cents":', 400),
            (b'{"stock": 1, "stock": 2}', 400),    # duplicate keys
            (b"", 400),
            (b"\xff\xfe", 400),
            (b"[1, 2]", 422),                      # not an object
            (b'"x"', 422),
            (b"{}", 422),                          # nothing to change
            (b'{"colour": "red"}', 422),           # unknown fields only
            (b'{"price_cents": -1}', 422),
            (b'{"price_cents": "100"}', 422),
            (b'{"price_cents": 1.5}', 422),
            (b'{"price_cents": null}', 422),
            (b'{"stock": -3}', 422),
            (b'{"stock": true}', 422),
            (b'{"name": ""}', 422),
            (b'{"name": 12}', 422),
            (('{"name": "%s"}' % ("n" * 201)).encode(), 422),
        ]
        for body, status in cases:
            with self.subTest(body=body):
                self.assertError(self.put(8, body), status)
        # nothing above changed the product
        self.assertEqual(self.get("/products/8").json()["version"], 1)

    def test_bad_reviews(self):
        for body in ({}, {"rating": 0}, {"rating": 6}, {"rating": -1},
                     {"rating": "5"}, {"rating": 4.5}, {"rating": None},
                     {"rating": 3, "body": 7},
                     {"rating": 3, "body": "x" * 2001}):
            with self.subTest(body=body):
                self.assertError(self.req("POST", "/products/9/reviews",
                                          body), 422)
        self.assertEqual(self.get("/products/9").json()["version"], 1)

    def test_content_type(self):
        self.assertError(self.put(8, {"stock": 1}, "text/plain"), 415)
        self.assertError(self.put(8, {"stock": 1}, None), 415)
        self.assertError(self.put(8, {"stock": 1}, "application/jsonx"), 415)
        self.assertError(self.req("POST", "/products/8/reviews", b'{"rating":1}',
                                  {"Content-Type": "text/json"}), 415)

    def test_body_too_large(self):
        big = b'{"name": "' + b"a" * 70000 + b'"}'
        self.assertError(self.put(8, big), 413)
        # The same body, chunked: caught while streaming.
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 8192]),
                                              big[i:i + 8192])
                          for i in range(0, len(big), 8192))
        data, _ = hstest.raw(self.port,
                             b"PUT /products/8 HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n" +
                             chunks + b"0\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data[:200])
        self.assertIn(b'"status":413', data)
        # Under the limit is fine.
        ok = self.put(11, {"name": "b" * 200})
        self.assertEqual(ok.status, 200, ok.body)

    def test_body_too_large_from_content_length(self):
        # Answered from the headers alone: the body is never sent.
        s = socket.create_connection(("127.0.0.1", self.port),
                                            10 * hstest.SLOW)
        try:
            s.sendall(b"PUT /products/8 HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\n"
                      b"Expect: 100-continue\r\n"
                      b"Content-Length: 10000000\r\n\r\n")
            s.settimeout(10 * hstest.SLOW)
            data = b""
            while b"}" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data)
            self.assertIn(b'"status":413', data)
        finally:
            s.close()

    def test_expect_continue(self):
        body = json.dumps({"stock": 5}).encode()
        s = socket.create_connection(("127.0.0.1", self.port),
                                            10 * hstest.SLOW)
        try:
            s.sendall(b"PUT /products/12 HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\n"
                      b"Expect: 100-continue\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body))
            s.settimeout(10 * hstest.SLOW)
            data = s.recv(4096)
            self.assertTrue(data.startswith(b"HTTP/1.1 100 "), data)
            s.sendall(body)
            while b"}" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.assertIn(b"HTTP/1.1 200 ", data)
            self.assertIn(b'"stock":5', data)
        finally:
            s.close()

    def test_unknown_routes(self):
        for path in ("/", "/nope", "/products", "/products/", "/products/1/",
                     "/products/1/reviews/2", "/categories/1",
                     "/categories/1/top/x", "/plaintext/x", "/json/"):
            with self.subTest(path=path):
                self.assertError(self.get(path), 404)

    def test_wrong_method(self):
        cases = [("POST", "/plaintext", "GET, HEAD"),
                 ("DELETE", "/json", "GET, HEAD"),
                 ("PUT", "/stats", "GET, HEAD"),
                 ("POST", "/products/1", "GET, HEAD, PUT, DELETE"),
                 ("PATCH", "/products/1", "GET, HEAD, PUT, DELETE"),
                 ("GET", "/products/1/reviews", "POST"),
                 ("PUT", "/products/1/reviews", "POST"),
                 ("POST", "/categories/1/top", "GET, HEAD")]
        for method, path, allow in cases:
            with self.subTest(method=method, path=path):
                r = self.req(method, path)
                self.assertError(r, 405)
                self.assertEqual(r.header("allow"), allow)

    def test_bad_ids(self):
        for path, status in (("/products/abc", 400), ("/products/1x", 400),
                             ("/products/-1", 400), ("/products/%201", 400),
                             ("/products/0", 404),
                             ("/products/99999999999999999999999", 404),
                             ("/products/9223372036854775808", 404),
                             ("/products/9223372036854775807", 404),
                             ("/products/123456789", 404),
                             ("/categories/x/top", 400),
                             ("/categories/99999999999999999999/top", 404)):
            with self.subTest(path=path):
                self.assertError(self.get(path), status)
        self.assertError(self.put("abc", {"stock": 1}), 400)
        self.assertError(self.req("DELETE", "/products/abc"), 400)

    def test_head(self):
        r = self.req("HEAD", "/products/1")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"")

    # --- connection handling ---

    def test_keep_alive(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            local = None
            for i, (m, path, body, status) in enumerate([
                    ("GET", "/plaintext", None, 200),
                    ("GET", "/products/1", None, 200),
                    ("GET", "/nope", None, 404),
                    ("PUT", "/products/10", {"stock": 3}, 200),
                    ("PUT", "/products/10", {"stock": -3}, 422),
                    ("PUT", "/products/10", b"{", 400),
                    ("POST", "/json", None, 405),
                    ("GET", "/db", None, 200)] * 3):
                h = {"Content-Type": "application/json"} if body else None
                r = hstest.request(self.port, m, path, body, h, conn=conn)
                self.assertEqual(r.status, status, (m, path, r.body))
                self.assertNotEqual(r.header("connection"), "close")
                name = conn.sock.getsockname()
                if local is None:
                    local = name
                self.assertEqual(name, local, "connection reopened at %d" % i)
        finally:
            conn.close()

    def test_pipelined(self):
        data, _ = hstest.raw(self.port,
                             b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"GET /plaintext HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: close\r\n\r\n", timeout=5)
        self.assertEqual(data.count(b"HTTP/1.1 200 OK"), 3, data)
        self.assertEqual(data.count(b"Hello, World!"), 3)

    def test_missing_host(self):
        # HTTP/1.1 requires Host (RFC 9112, section 3.2); HTTP/1.0 does not.
        data, _ = hstest.raw(self.port,
                             b"GET /plaintext HTTP/1.1\r\n"
                             b"Connection: close\r\n\r\n", timeout=5)
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 400 "), data)
        self.assertIn(b"application/json", head)
        self.assertEqual(json.loads(body),
                         {"error": "missing Host header", "status": 400})
        data, _ = hstest.raw(self.port, b"GET /plaintext HTTP/1.0\r\n\r\n",
                             timeout=5)
        self.assertTrue(data.startswith(b"HTTP/1.0 200 ") or
                        data.startswith(b"HTTP/1.1 200 "), data)
        self.assertTrue(data.endswith(b"Hello, World!"), data)

    # --- TechEmpower ---

    def test_tfb_json_plaintext(self):
        r = self.get("/json")
        self.assertEqual(r.json(), {"message": "Hello, World!"})
        self.assertEqual(r.header("content-type"), "application/json")
        r = self.get("/plaintext")
        self.assertEqual(r.body, b"Hello, World!")
        self.assertEqual(r.header("content-type"), "text/plain")

    def check_world(self, obj):
        self.assertEqual(set(obj), {"id", "randomNumber"})
        self.assertIn(obj["id"], range(1, 10001))
        self.assertIsInstance(obj["randomNumber"], int)

    def test_tfb_db(self):
        ids = set()
        for _ in range(10):
            r = self.get("/db")
            o = r.json()
            self.assertIsInstance(o, dict)
            self.check_world(o)
            self.assertEqual(o["randomNumber"], world_row(self.db, o["id"]))
            ids.add(o["id"])
        self.assertGreater(len(ids), 1, "ids are not random")

    def test_tfb_queries_clamping(self):
        for route in ("/queries", "/updates"):
            for q, n in (("", 1), ("?queries=", 1), ("?queries=abc", 1),
                         ("?queries=0", 1), ("?queries=-5", 1),
                         ("?queries=1", 1), ("?queries=7", 7),
                         ("?queries=500", 500), ("?queries=501", 500),
                         ("?queries=99999999999999999999", 500),
                         ("?other=3", 1)):
                with self.subTest(route=route, q=q):
                    r = self.get(route + q)
                    self.assertEqual(r.status, 200, r.body)
                    arr = r.json()
                    self.assertIsInstance(arr, list)
                    self.assertEqual(len(arr), n)
                    for o in arr[:5]:
                        self.check_world(o)

    def test_tfb_updates_persisted(self):
        r = self.get("/updates?queries=20")
        self.assertEqual(r.status, 200)
        arr = r.json()
        self.assertEqual(len(arr), 20)
        # Read back from the file itself, not through the server.
        for o in arr:
            self.assertEqual(world_row(self.db, o["id"]), o["randomNumber"])


if __name__ == "__main__":
    unittest.main()


class BlockingServerTest(ServerTest):
    """The same API served by a pool of blocking workers, each holding one
    connection at a time (test_server_io.py covers what differs)."""
    IO = ("--io", "blocking", "--threads", "4")

    def test_stats_says_blocking(self):
        io = self.get("/stats").json()["io"]
        self.assertEqual(io["model"], "blocking")
        self.assertEqual(io["workers"], 4)
        # The /stats request's own connection holds a worker.
        self.assertGreaterEqual(io["busy"], 1)
        self.assertLessEqual(io["busy"], 4)

