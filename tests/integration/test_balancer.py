"""hs-balancer end to end against self-naming test backends (real processes
on free loopback ports): rotation, weights, least connections, keep-alive
pools, header rewriting, pipelining, chunked bodies both ways, streamed
large bodies, 502 / 503 / 504, --max-conns, SIGHUP, SIGTERM drain and
10,000 idle keep-alive clients."""

import hashlib
import http.client
import os
import resource
import signal
import socket
import tempfile
import threading
import time
import unittest

import hstest
from test_balancer_backend import Backend, Balancer, wait_until


def served_by(r):
    return r.header("x-served-by")


def rss_kb(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def read_response(f):
    """Reads one response with Content-Length from a socket file."""
    status = f.readline()
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    return status, headers, f.read(n)


class ThreeBackends(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bs = [Backend("s%d" % i) for i in (1, 2, 3)]
        cls.bal = Balancer(cls.bs, ["--health-interval-ms", "60000"])

    @classmethod
    def tearDownClass(cls):
        rc = cls.bal.proc.stop()
        for b in cls.bs:
            b.cleanup()
        assert rc == 0, "balancer exit status %s" % rc

    def test_rotation(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.bal.port,
                                          timeout=10)
        names = [served_by(hstest.request(self.bal.port, "GET", "/",
                                          conn=conn)) for _ in range(9)]
        conn.close()
        first = names.index("s1")
        seq = names[first:first + 4]
        self.assertEqual(seq, ["s1", "s2", "s3", "s1"], names)
        # Per request, also across fresh connections.
        names = [served_by(self.bal.get("/")) for _ in range(6)]
        self.assertEqual(sorted(names), ["s1", "s1", "s2", "s2", "s3", "s3"])

    def test_keepalive_pool(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.bal.port,
                                          timeout=10)
        for _ in range(30):
            r = hstest.request(self.bal.port, "GET", "/", conn=conn)
            self.assertEqual(r.status, 200)
        conn.close()
        for b in self.bs:
            st = self.bal.backend_stats(b.addr)
            self.assertLessEqual(st["connections"], 2, st)
            self.assertGreaterEqual(st["requests"], 10, st)

    def test_forwarded_headers(self):
        self.bs[0].clear()
        self.bs[1].clear()
        self.bs[2].clear()
        r = self.bal.get("/hdr?x=1", headers={
            "Connection": "X-Drop, keep-alive", "X-Drop": "1",
            "Keep-Alive": "timeout=5", "TE": "trailers", "Upgrade": "h2c",
            "Proxy-Connection": "keep-alive", "X-Keep": "yes",
            "X-Forwarded-For": "10.1.2.3"})
        self.assertEqual(r.status, 200)
        recs = sum((b.requests() for b in self.bs), [])
        self.assertEqual(len(recs), 1)
        h = {k.lower(): v for k, v in recs[0]["headers"]}
        for gone in ("connection", "x-drop", "keep-alive", "te", "upgrade",
                     "proxy-connection"):
            self.assertNotIn(gone, h)
        self.assertEqual(h["x-keep"], "yes")
        self.assertEqual(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1")
        self.assertEqual(h["x-forwarded-proto"], "http")
        self.assertEqual(h["via"], "1.1 hs-balancer")
        self.assertEqual(recs[0]["path"], "/hdr?x=1")

    def test_forwarded_proto_replaced_via_appended(self):
        for b in self.bs:
            b.clear()
        r = self.bal.get("/hdr", headers={"X-Forwarded-Proto": "https",
                                          "Via": "1.0 fred, 1.1 p.example"})
        self.assertEqual(r.status, 200)
        recs = sum((b.requests() for b in self.bs), [])
        self.assertEqual(len(recs), 1)
        hs = [(k.lower(), v) for k, v in recs[0]["headers"]]
        self.assertEqual([v for k, v in hs if k == "x-forwarded-proto"],
                         ["http"])
        self.assertEqual([v for k, v in hs if k == "via"],
                         ["1.0 fred, 1.1 p.example, 1.1 hs-balancer"])

    def test_server_counters_denied_to_clients(self):
        for b in self.bs:
            b.clear()
        conn = http.client.HTTPConnection("127.0.0.1", self.bal.port,
                                          timeout=10)
        self.addCleanup(conn.close)
        for path in ("/stats", "/metrics", "/stats?x=1", "/stats/x",
                     "//stats", "/%73tats", "/./metrics", "/a/../stats",
                     "/%2e%2e/metrics/"):
            r = hstest.request(self.bal.port, "GET", path, conn=conn)
            self.assertEqual(r.status, 404, path)
            self.assertEqual(r.json(), {"error": "not found",
                                        "status": 404}, path)
            self.assertEqual(r.header("content-type"), "application/json")
        # The same keep-alive connection goes on; near misses pass.
        for path in ("/statsx", "/products/stats", "/metrics2"):
            r = hstest.request(self.bal.port, "GET", path, conn=conn)
            self.assertEqual(r.status, 200, path)
        paths = [r["path"] for b in self.bs for r in b.requests()]
        self.assertEqual(sorted(paths),
                         ["/metrics2", "/products/stats", "/statsx"])
        self.assertGreaterEqual(self.bal.stats()["errors"]["404"], 9)
        # A denied request with a body is answered and the connection
        # closed (its body is not read).
        out, closed = hstest.raw(
            self.bal.port, b"POST /stats HTTP/1.1\r\nHost: a\r\n"
            b"Content-Length: 5\r\n\r\nhello")
        self.assertTrue(out.startswith(b"HTTP/1.1 404 "), out)
        self.assertTrue(closed)

    def test_absolute_form_forwarded_as_origin_form(self):
        for b in self.bs:
            b.clear()
        out, closed = hstest.raw(
            self.bal.port, b"GET http://Example.com:80/p?q=1 HTTP/1.1\r\n"
            b"Host: example.com:80\r\nConnection: close\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out)
        recs = sum((b.requests() for b in self.bs), [])
        self.assertEqual([r["path"] for r in recs], ["/p?q=1"])
        out, closed = hstest.raw(
            self.bal.port, b"GET http://evil.example/ HTTP/1.1\r\n"
            b"Host: example.com\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400 "), out)
        self.assertEqual(len(sum((b.requests() for b in self.bs), [])), 1)

    def test_pipelining_in_order(self):
        reqs = [b"GET /slow?ms=300 HTTP/1.1\r\nHost: a\r\n\r\n"]
        reqs += [b"GET /big?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % n
                 for n in (1, 2, 3, 4, 5)]
        s = socket.create_connection(("127.0.0.1", self.bal.port), 10)
        try:
            s.sendall(b"".join(reqs))
            f = s.makefile("rb")
            st, h, body = read_response(f)
            self.assertIn(b" 200 ", st)
            self.assertEqual(len(body), 2)  # a backend's name
            for n in (1, 2, 3, 4, 5):
                st, h, body = read_response(f)
                self.assertIn(b" 200 ", st)
                self.assertEqual(body, b"x" * n)
        finally:
            s.close()

    def test_chunked_request(self):
        body = b"hello, chunked world" * 100
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 333]),
                                             body[i:i + 333])
                          for i in range(0, len(body), 333))
        data = (b"POST /echo HTTP/1.1\r\nHost: a\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + chunks +
                b"0\r\nX-Trailer: 1\r\n\r\n"
                b"GET /big?n=7 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                b"\r\n")
        s = socket.create_connection(("127.0.0.1", self.bal.port), 10)
        try:
            s.sendall(data)
            f = s.makefile("rb")
            st, h, got = read_response(f)
            self.assertEqual(got, body)
            st, h, got = read_response(f)
            self.assertEqual(got, b"x" * 7)
        finally:
            s.close()

    def test_chunked_response(self):
        s = socket.create_connection(("127.0.0.1", self.bal.port), 10)
        try:
            s.sendall(b"GET /chunked?n=5 HTTP/1.1\r\nHost: a\r\n\r\n"
                      b"GET /big?n=3 HTTP/1.1\r\nHost: a\r\n\r\n")
            f = s.makefile("rb")
            st = f.readline()
            head = b""
            while True:
                line = f.readline()
                if line == b"\r\n":
                    break
                head += line
            self.assertIn(b"transfer-encoding: chunked", head.lower())
            parts = []
            while True:
                size = int(f.readline().strip(), 16)
                if size == 0:
                    self.assertEqual(f.readline(), b"\r\n")
                    break
                parts.append(f.read(size))
                self.assertEqual(f.readline(), b"\r\n")
            self.assertEqual(len(parts), 5)
            st, h, got = read_response(f)  # framing kept: next one intact
            self.assertEqual(got, b"xxx")
        finally:
            s.close()

    def test_no_body_statuses_and_head(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.bal.port,
                                          timeout=10)
        for path, method in (("/status?code=204", "GET"),
                             ("/status?code=304", "GET"),
                             ("/big?n=100", "HEAD")):
            r = hstest.request(self.bal.port, method, path, conn=conn)
            self.assertEqual(r.body, b"")
        r = hstest.request(self.bal.port, "GET", "/big?n=10", conn=conn)
        self.assertEqual(r.body, b"x" * 10)
        conn.close()

    def test_read_until_close_response(self):
        r = self.bal.get("/close")
        self.assertTrue(r.body.endswith(b"until close"))
        self.assertEqual(r.header("connection"), "close")

    def test_large_streamed_bodies(self):
        n = 48 * 1024 * 1024
        body = os.urandom(1024 * 1024) * 48
        digest = hashlib.sha256(body).hexdigest()
        for b in self.bs:
            b.clear()
        r = hstest.request(self.bal.port, "POST", "/upload", body=body,
                           timeout=60)
        self.assertEqual(r.status, 200)
        recs = sum((b.requests() for b in self.bs), [])
        self.assertEqual(len(recs), 1)
        self.assertEqual(recs[0]["body_len"], n)
        self.assertEqual(recs[0]["body_sha"], digest)
        r = hstest.request(self.bal.port, "GET", "/big?n=%d" % n, timeout=60)
        self.assertEqual(len(r.body), n)
        # Streamed, not buffered whole: the peak RSS stays far below 48 MB.
        # (ASan's quarantine and shadow memory make RSS meaningless there.)
        hwm = rss_kb(self.bal.proc.p.pid, "VmHWM")
        if not hstest.SANITIZE:
            self.assertLess(hwm, 32 * 1024, "peak RSS %d kB" % hwm)

    def test_http10_client(self):
        out, closed = hstest.raw(self.bal.port,
                                 b"GET /big?n=5 HTTP/1.0\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out)
        self.assertTrue(out.endswith(b"xxxxx"), out)
        self.assertTrue(closed)
        # 1.0 with keep-alive: two answers on one connection.
        out, closed = hstest.raw(
            self.bal.port,
            b"GET /big?n=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            b"GET /big?n=2 HTTP/1.0\r\n\r\n")
        self.assertEqual(out.count(b"HTTP/1.1 200 "), 2, out)
        self.assertIn(b"Connection: keep-alive", out)
        self.assertTrue(out.endswith(b"xx"), out)

    def test_expect_continue(self):
        s = socket.create_connection(("127.0.0.1", self.bal.port), 10)
        try:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\n"
                      b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            f = s.makefile("rb")
            self.assertIn(b" 100 ", f.readline())
            while f.readline() != b"\r\n":
                pass
            s.sendall(b"hello")
            st, h, body = read_response(f)
            self.assertIn(b" 200 ", st)
            self.assertEqual(body, b"hello")
        finally:
            s.close()

    def test_large_chunked_both_ways(self):
        part = os.urandom(65536)
        n = 128
        for b in self.bs:
            b.clear()
        s = socket.create_connection(("127.0.0.1", self.bal.port), 30)
        try:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n" +
                      (b"10000\r\n" + part + b"\r\n") * n + b"0\r\n\r\n")
            f = s.makefile("rb")
            st, h, body = read_response(f)
            self.assertIn(b" 200 ", st)
        finally:
            s.close()
        recs = sum((b.requests() for b in self.bs), [])
        self.assertEqual(recs[0]["body_len"], n * 65536)
        self.assertEqual(recs[0]["body_sha"],
                         hashlib.sha256(part * n).hexdigest())
        r = hstest.request(self.bal.port, "GET",
                           "/chunked?n=200&size=65536", timeout=60)
        self.assertEqual(len(r.body), 200 * 65536)

    def test_stats_and_metrics(self):
        self.bal.get("/")
        st = self.bal.stats()
        self.assertEqual(len(st["backends"]), 3)
        self.assertGreater(st["accepted"], 0)
        self.assertIn("2xx", st["backends"][0]["responses"])
        m = hstest.request(self.bal.admin, "GET", "/metrics").body.decode()
        self.assertIn("hs_balancer_backend_up{backend=", m)
        self.assertIn("hs_balancer_accepted_total", m)
        self.assertIn("hs_balancer_backend_latency_seconds_bucket", m)
        # Every family is introduced by # HELP then # TYPE, once.
        helps = [l.split()[2] for l in m.splitlines()
                 if l.startswith("# HELP ")]
        types = [l.split()[2] for l in m.splitlines()
                 if l.startswith("# TYPE ")]
        self.assertEqual(helps, types)
        self.assertEqual(len(set(types)), len(types))
        for line in m.splitlines():
            if not line.startswith("#"):
                name = line.split("{")[0].split()[0]
                self.assertTrue(any(name == t or name.startswith(t + "_")
                                    for t in types), line)


class Cli(unittest.TestCase):
    def run_bal(self, *args):
        return hstest.subprocess.run([hstest.binpath("hs-balancer")] +
                                     list(args), capture_output=True,
                                     text=True, timeout=30 * hstest.SLOW)

    def test_help(self):
        r = self.run_bal("--help")
        self.assertEqual(r.returncode, 0)
        for opt in ("--listen", "--backend", "--backends-file", "--admin",
                    "--algorithm", "--health-path", "--rise", "--fall",
                    "--max-conns", "--workers", "--backend-timeout-ms",
                    "--deny-path", "--no-deny-path"):
            self.assertIn(opt, r.stdout)
        h = self.run_bal("-h")
        self.assertEqual(h.returncode, 0, h.stderr)
        self.assertEqual(h.stdout, r.stdout)

    def test_port_in_use_is_an_error(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            for opt in ("--listen", "--admin"):
                r = self.run_bal("--backend", "127.0.0.1:1", opt,
                                 "127.0.0.1:%d" % port)
                self.assertNotEqual(r.returncode, 0, r.stderr)
                self.assertRegex(r.stderr, r" error: cannot listen on "
                                 r"127\.0\.0\.1:%d.*Address already in use"
                                 % port)
                self.assertNotRegex(r.stderr, r" warn: .*listen")

    def test_bad_options(self):
        for args in (["--bogus"], ["--backend", "nohost"],
                     ["--backend", "127.0.0.1:1,weight=x"],
                     ["--backend", "127.0.0.1:1", "--workers", "0"],
                     ["--backend", "127.0.0.1:1", "--algorithm", "random"],
                     ["--backend", "127.0.0.1:1", "--listen", "nope"],
                     ["--backends-file", "/nonexistent/list"],
                     ["--backend", "127.0.0.1:1", "--deny-path", "stats"],
                     []):
            r = self.run_bal(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertEqual(len(r.stderr.strip().splitlines()), 1,
                             r.stderr)


class Weighted(unittest.TestCase):
    def test_weights(self):
        a, b = Backend("a"), Backend("b")
        bal = Balancer([a.addr + ",weight=3", b.addr + ",weight=1"])
        try:
            names = [served_by(bal.get("/")) for _ in range(16)]
            self.assertEqual(names.count("a"), 12, names)
            self.assertEqual(names.count("b"), 4, names)
            self.assertNotIn("a,a,a,a", ",".join(names))
        finally:
            self.assertEqual(bal.proc.stop(), 0)
            a.cleanup()
            b.cleanup()

    def test_leastconn(self):
        a, b = Backend("a"), Backend("b")
        bal = Balancer([a, b], ["--algorithm", "leastconn"])
        try:
            slow = []
            t = threading.Thread(target=lambda: slow.append(
                bal.get("/slow?ms=%d" % (1500 * hstest.SLOW))))
            t.start()
            self.assertTrue(wait_until(lambda: any(
                x["active"] == 1 for x in bal.stats()["backends"])))
            busy = [x["name"] for x in bal.stats()["backends"]
                    if x["active"] == 1][0]
            other = "b" if busy == a.addr else "a"
            names = [served_by(bal.get("/")) for _ in range(6)]
            self.assertEqual(names, [other] * 6)
            t.join(30)
            self.assertEqual(slow[0].status, 200)
        finally:
            self.assertEqual(bal.proc.stop(), 0)
            a.cleanup()
            b.cleanup()


class Workers(unittest.TestCase):
    def test_two_workers(self):
        bs = [Backend("s1"), Backend("s2")]
        bal = Balancer(bs, ["--workers", "2"])
        try:
            names = []
            for _ in range(40):
                r = bal.get("/")
                self.assertEqual(r.status, 200)
                names.append(served_by(r))
            self.assertEqual(set(names), {"s1", "s2"})
            self.assertEqual(bal.stats()["workers"], 2)
            self.assertEqual(sum(b["requests"] for b in
                                 bal.stats()["backends"]), 40)
            # Drain on SIGTERM with a request in flight on some worker.
            results = []
            t = threading.Thread(target=lambda: results.append(
                bal.get("/slow?ms=500")))
            t.start()
            self.assertTrue(wait_until(lambda: sum(
                b["active"] for b in bal.stats()["backends"]) == 1))
            bal.proc.signal(signal.SIGTERM)
            t.join(20 * hstest.SLOW)
            self.assertEqual(results[0].status, 200)
            self.assertEqual(bal.proc.p.wait(10 * hstest.SLOW), 0)
        finally:
            bal.proc.cleanup()
            for b in bs:
                b.cleanup()


class Failures(unittest.TestCase):
    def setUp(self):
        self.cleanups = []

    def tearDown(self):
        for c in reversed(self.cleanups):
            c()

    def backend(self, name):
        b = Backend(name)
        self.cleanups.append(b.cleanup)
        return b

    def balancer(self, backends, extra=()):
        bal = Balancer(backends, extra)
        self.cleanups.append(bal.proc.cleanup)
        return bal

    def raw_backend(self, handle, rcvbuf=None):
        """A one-connection backend on a raw socket: handle(conn) answers
        as the test needs (garbage, oversized heads, slow reads).
        Returns its HOST:PORT."""
        srv = socket.socket()
        if rcvbuf:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        self.cleanups.append(srv.close)

        def serve():
            c, _ = srv.accept()
            try:
                handle(c)
            except OSError:
                pass
            time.sleep(0.5)
            c.close()
        threading.Thread(target=serve, daemon=True).start()
        return "127.0.0.1:%d" % srv.getsockname()[1]

    def test_slow_backend_504(self):
        s1 = self.backend("s1")
        bal = self.balancer([s1], ["--backend-timeout-ms", "500"])
        t0 = time.monotonic()
        r = bal.get("/slow?ms=3000")
        self.assertEqual(r.status, 504)
        self.assertEqual(r.json()["status"], 504)
        self.assertLess(time.monotonic() - t0, 2.5 * hstest.SLOW)
        self.assertEqual(bal.get("/").status, 200)  # still serving

    def test_slow_reader_not_cut_by_backend_timeout(self):
        # Back-pressure pauses the backend timeout: a client that stops
        # reading for longer than it still gets the whole body.
        s1 = self.backend("s1")
        bal = self.balancer([s1], ["--backend-timeout-ms", "500"])
        n = 8 * 1024 * 1024
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(20 * hstest.SLOW)
        s.connect(("127.0.0.1", bal.port))
        self.cleanups.append(s.close)
        s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
        got = s.recv(65536)
        time.sleep(1.5)
        f = s.makefile("rb")
        head, _, body = got.partition(b"\r\n\r\n")
        self.assertIn(b" 200 ", head)
        rest = f.read(n - len(body))
        self.assertEqual(len(body) + len(rest), n)

    def test_slow_consuming_backend_upload(self):
        # A backend taking an upload in bursts with pauses longer than the
        # client body timeout: that timeout must pause while we wait on the
        # backend (the client is not the slow one).
        n = 32 * 1024 * 1024
        got = []

        def serve(c):
            c.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                data += c.recv(65536)
            body = len(data.partition(b"\r\n\r\n")[2])
            mark = body
            while body < n:
                body += len(c.recv(65536))
                if body - mark > 4 * 1024 * 1024:
                    mark = body
                    time.sleep(0.5)
            got.append(body)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        bal = self.balancer([self.raw_backend(serve, rcvbuf=65536)],
                            ["--health-interval-ms", "60000",
                             "--backend-timeout-ms", "10000",
                             "--header-timeout-ms", "200"])
        r = hstest.request(bal.port, "POST", "/up", body=b"u" * n,
                           timeout=60)
        self.assertEqual(r.status, 200)
        self.assertEqual(got, [n])

    def test_backend_reset_502(self):
        s1 = self.backend("s1")
        bal = self.balancer([s1])
        r = bal.get("/reset")
        self.assertEqual(r.status, 502)
        self.assertEqual(r.json()["status"], 502)
        # GET is idempotent: retried once (on the only backend left: none).
        s1.clear()
        r = hstest.request(bal.port, "POST", "/reset", body=b"x")
        self.assertEqual(r.status, 502)
        self.assertEqual(len(s1.requests()), 1)  # a POST is never retried

    def test_idempotent_retry_elsewhere(self):
        s1, s2 = self.backend("s1"), self.backend("s2")
        bal = self.balancer([s1, s2])
        r = bal.get("/reset")
        self.assertEqual(r.status, 502)
        # Both saw it: the first failed before answering, the retry too.
        self.assertEqual(len(s1.requests()) + len(s2.requests()), 2)
        st = bal.stats()
        self.assertEqual(sum(b["retries"] for b in st["backends"]), 1)

    def test_bad_backend_answer_502(self):
        # A "backend" that answers garbage.
        def serve(c):
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                      b"Content-Length: 3\r\n\r\nabc")
        bal = self.balancer([self.raw_backend(serve)],
                            ["--health-interval-ms", "60000"])
        r = hstest.request(bal.port, "POST", "/", body=b"x")
        self.assertEqual(r.status, 502)

    def test_unreached_request_goes_to_next(self):
        # One backend refuses connections: requests (POST too, since it
        # never reached a backend) go to the other; none fails.
        s1 = self.backend("s1")
        dead = "127.0.0.1:%d" % hstest.free_port()
        bal = self.balancer([dead, s1], ["--health-interval-ms", "60000"])
        for i in range(6):
            method = "POST" if i % 2 else "GET"
            r = hstest.request(bal.port, method, "/", body=b"p" if i % 2
                               else None)
            self.assertEqual(r.status, 200)
            self.assertEqual(served_by(r), "s1")
        self.assertFalse(bal.backend_stats(dead)["up"])
        self.assertEqual(len([x for x in s1.requests()
                              if x["method"] == "POST"]), 3)

    def test_slow_request_body_408(self):
        s1 = self.backend("s1")
        bal = self.balancer([s1], ["--header-timeout-ms", "700"])
        t0 = time.monotonic()
        out, closed = hstest.raw(
            bal.port, b"POST /echo HTTP/1.1\r\nHost: a\r\n"
            b"Content-Length: 10\r\n\r\nabc", timeout=10)
        self.assertTrue(out.startswith(b"HTTP/1.1 408 "), out)
        self.assertTrue(closed)
        self.assertLess(time.monotonic() - t0, 5 * hstest.SLOW)
        # The backend may have seen the start, never a complete request.
        self.assertTrue(wait_until(lambda: all(
            x["body_len"] < 10 for x in s1.requests())))
        self.assertTrue(all(x["body_len"] < 10 for x in s1.requests()))

    def test_oversized_response_head_502(self):
        def serve(c):
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 +
                      b"\r\n\r\n")
        bal = self.balancer([self.raw_backend(serve)],
                            ["--health-interval-ms", "60000"])
        r = hstest.request(bal.port, "POST", "/", body=b"x")
        self.assertEqual(r.status, 502)

    def test_admin_unknown_path(self):
        s1 = self.backend("s1")
        bal = self.balancer([s1])
        r = hstest.request(bal.admin, "GET", "/nope")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["status"], 404)

    def test_clients_vanishing_mid_exchange(self):
        s1 = self.backend("s1")
        bal = self.balancer([s1])
        # Mid-download, while waiting on a slow backend, mid-upload.
        s = socket.create_connection(("127.0.0.1", bal.port), 10)
        s.sendall(b"GET /big?n=30000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        s.recv(100000)
        s.close()
        s = socket.create_connection(("127.0.0.1", bal.port), 10)
        s.sendall(b"GET /slow?ms=300 HTTP/1.1\r\nHost: a\r\n\r\n")
        s.close()
        s = socket.create_connection(("127.0.0.1", bal.port), 10)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\n"
                  b"Content-Length: 1000000\r\n\r\n" + b"x" * 1000)
        s.close()
        self.assertTrue(wait_until(lambda: bal.stats()["connections"] == 0
                                   and bal.backend_stats(s1.addr)["active"]
                                   == 0, 15))
        self.assertEqual(bal.get("/").status, 200)
        self.assertEqual(bal.proc.stop(), 0)

    def test_all_down_503(self):
        bal = self.balancer(["127.0.0.1:%d" % hstest.free_port(),
                             "127.0.0.1:%d" % hstest.free_port()])
        r = bal.get("/")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.header("retry-after"), "1")
        self.assertEqual(r.json(), {"error": "no backend available",
                                    "status": 503})
        st = bal.stats()
        self.assertTrue(all(not b["up"] for b in st["backends"]))
        self.assertEqual(st["errors"]["503"], 1)
        m = hstest.request(bal.admin, "GET", "/metrics").body.decode()
        self.assertIn('hs_balancer_errors_total{status="503"} 1', m)

    def test_deny_path_options(self):
        s1 = self.backend("s1")
        bal = self.balancer([s1], ["--deny-path", "/private",
                                   "--deny-path", "/admin/"])
        self.assertEqual(bal.get("/private").status, 404)
        self.assertEqual(bal.get("/private/x").status, 404)
        self.assertEqual(bal.get("/admin/x").status, 404)
        self.assertEqual(bal.get("/admin").status, 200)
        self.assertEqual(bal.get("/stats").status, 200)
        bal = self.balancer([s1], ["--no-deny-path"])
        self.assertEqual(bal.get("/stats").status, 200)
        self.assertEqual(bal.get("/metrics").status, 200)
        bal = self.balancer([s1], ["--deny-path", ""])
        self.assertEqual(bal.get("/stats").status, 200)
        self.assertEqual([r["path"] for r in s1.requests()],
                         ["/admin", "/stats", "/stats", "/metrics",
                          "/stats"])

    def test_max_conns_503(self):
        s1 = self.backend("s1")
        bal = self.balancer([s1], ["--max-conns", "2"])
        c1 = socket.create_connection(("127.0.0.1", bal.port))
        c2 = socket.create_connection(("127.0.0.1", bal.port))
        self.cleanups += [c1.close, c2.close]
        self.assertTrue(wait_until(lambda: bal.stats()["connections"] >= 2))
        out, closed = hstest.raw(bal.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 503 "), out)
        self.assertIn(b"Retry-After: 1", out)
        self.assertTrue(closed)
        self.assertGreaterEqual(bal.stats()["rejected"], 1)

    def test_sighup_reload(self):
        s1, s2, s3 = (self.backend(n) for n in ("s1", "s2", "s3"))
        d = tempfile.mkdtemp(prefix="hs-bal-")
        path = os.path.join(d, "backends")
        with open(path, "w") as f:
            f.write("# test\n%s\n" % s1.addr)
        bal = Balancer([], ["--backends-file", path])
        self.cleanups.append(bal.proc.cleanup)
        conn = http.client.HTTPConnection("127.0.0.1", bal.port, timeout=10)
        self.cleanups.append(conn.close)
        r = hstest.request(bal.port, "GET", "/", conn=conn)
        self.assertEqual(served_by(r), "s1")
        with open(path, "w") as f:
            f.write("%s,weight=1\n\n%s\n" % (s2.addr, s3.addr))
        bal.proc.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: any(
            b["removed"] for b in bal.stats()["backends"])))
        # The connection opened before the reload keeps working.
        names = {served_by(hstest.request(bal.port, "GET", "/", conn=conn))
                 for _ in range(6)}
        self.assertEqual(names, {"s2", "s3"})
        # A bad file keeps the current list.
        with open(path, "w") as f:
            f.write("not a backend\n")
        bal.proc.signal(signal.SIGHUP)
        time.sleep(0.3 * hstest.SLOW)
        names = {served_by(bal.get("/")) for _ in range(4)}
        self.assertEqual(names, {"s2", "s3"})
        self.assertTrue(bal.proc.alive())

    def test_sigterm_drain(self):
        s1 = self.backend("s1")
        bal = self.balancer([s1])
        results = []
        t = threading.Thread(target=lambda: results.append(
            bal.get("/slow?ms=1000")))
        t.start()
        self.assertTrue(wait_until(
            lambda: bal.backend_stats(s1.addr)["active"] == 1))
        idle = socket.create_connection(("127.0.0.1", bal.port))
        self.cleanups.append(idle.close)
        bal.proc.signal(signal.SIGTERM)
        t.join(20 * hstest.SLOW)
        self.assertEqual(results[0].status, 200)
        self.assertEqual(results[0].body, b"s1")
        self.assertEqual(bal.proc.p.wait(10 * hstest.SLOW), 0)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", bal.port), 1).close()

    def test_many_idle_clients(self):
        n = 10000
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, n + 2000)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        if want < n + 500:
            self.skipTest("RLIMIT_NOFILE hard limit %d too low" % hard)
        s1 = self.backend("s1")
        # Connections that have sent nothing get the head deadline.
        bal = self.balancer([s1], ["--header-timeout-ms", "300000"])
        rss0 = rss_kb(bal.proc.p.pid)
        socks = []
        self.cleanups.append(lambda: [s.close() for s in socks])
        t0 = time.monotonic()
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", bal.port),
                                                  10))
            self.assertLess(time.monotonic() - t0, 60 * hstest.SLOW)
        self.assertTrue(wait_until(
            lambda: bal.stats()["connections"] >= n, 30))
        # Every 50th one makes a keep-alive request; all of them stay open.
        for s in socks[::50]:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        for s in socks[::50]:
            st, h, body = read_response(s.makefile("rb"))
            self.assertIn(b" 200 ", st)
        rss = rss_kb(bal.proc.p.pid)
        print("\n10000 idle keep-alive clients: balancer RSS %d kB "
              "(%d kB at start), %.1f s" % (rss, rss0,
                                             time.monotonic() - t0))
        self.assertEqual(bal.stats()["connections"], n)
        self.assertEqual(bal.get("/").status, 200)
        self.assertLess(rss, 200 * 1024)


if __name__ == "__main__":
    unittest.main()
