"""hs-balancer's strict request parsing, one case per bad input: each sends
raw bytes and checks the status, the JSON error body, that the connection
is closed when it must be, and that the backend saw nothing at all."""

import json
import socket
import time
import unittest

import hstest
from test_balancer_backend import Backend, Balancer

H = b"Host: a\r\n"

# (name, request bytes, status, must close)
CASES = [
    ("cl and te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, True),
    ("duplicate cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\n"
     b"Content-Length: 1\r\n\r\nx", 400, True),
    ("conflicting cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\n"
     b"Content-Length: 2\r\n\r\nxy", 400, True),
    ("malformed cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1x\r\n"
     b"\r\nx", 400, True),
    ("negative cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n"
     b"\r\n", 400, True),
    ("te gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n"
     b"\r\n", 400, True),
    ("te chunked not final", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400, True),
    ("te with space trick", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400, True),
    ("te identity", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: identity\r\n\r\n", 400, True),
    ("bad chunk size", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, True),
    ("chunk size overflow", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 400, True),
    ("chunk data too long", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n", 400, True),
    ("trailer without colon", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nnocolon\r\n\r\n",
     400, True),
    ("bare lf request line", b"GET / HTTP/1.1\n" + H + b"\r\n", 400, True),
    ("bare lf headers", b"GET / HTTP/1.1\r\nHost: a\nX: y\n\n", 400, True),
    ("bare cr", b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400, True),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n  b\r\n\r\n", 400,
     True),
    ("space before colon", b"GET / HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n",
     400, True),
    ("nul in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400,
     True),
    ("cr in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\rb\r\n\r\n", 400,
     True),
    ("missing host", b"GET / HTTP/1.1\r\n\r\n", 400, True),
    ("duplicate host", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400, True),
    ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H +
     b"\r\n", 414, True),
    ("headers too large", b"GET / HTTP/1.1\r\n" + H + b"X: " + b"a" * 17000 +
     b"\r\n\r\n", 431, True),
    ("too many headers", b"GET / HTTP/1.1\r\n" + H +
     b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431, True),
    ("body over limit", b"POST / HTTP/1.1\r\n" + H +
     b"Content-Length: 2000000\r\n\r\n", 413, True),
    ("chunked body over limit", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n200000\r\n", 413, True),
    ("unknown method", b"BREW / HTTP/1.1\r\n" + H + b"\r\n", 501, True),
    ("http/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, True),
    ("bad version", b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505, True),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, True),
]


class StrictParsing(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.be = Backend("s1")
        cls.bal = Balancer([cls.be], ["--max-body", "1000000",
                                      "--header-timeout-ms", "3000"])

    @classmethod
    def tearDownClass(cls):
        cls.bal.proc.stop()
        cls.be.cleanup()

    def setUp(self):
        self.be.clear()

    def check(self, name, data, status, must_close):
        out, closed = hstest.raw(self.bal.port, data, timeout=5)
        head, _, body = out.partition(b"\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 %d " % status),
                        "%s: got %r" % (name, out[:200]))
        js = json.loads(body)
        self.assertEqual(js["status"], status, name)
        self.assertTrue(js["error"], name)
        if must_close:
            self.assertTrue(closed, "%s: connection left open" % name)
            self.assertIn(b"connection: close", head.lower(), name)
        self.assertEqual(self.be.requests(), [],
                         "%s: the backend saw bytes" % name)

    def test_cases(self):
        for name, data, status, must_close in CASES:
            with self.subTest(name=name):
                self.check(name, data, status, must_close)
        # The cases above include 400 and 431 answers, counted in stats.
        errs = self.bal.stats()["errors"]
        self.assertGreater(errs["400"], 0)
        self.assertGreater(errs["431"], 0)

    def test_mutated_requests_consistent(self):
        """Seeded random mutations of valid requests: whatever the balancer
        makes of each, it answers with a known status (its own errors as
        JSON) or closes, never hangs, and the backend receives exactly as
        many complete requests as the client got 200 answers."""
        import random
        rnd = random.Random(5)
        bases = [
            b"GET /a?b=c HTTP/1.1\r\nHost: a\r\nX-Y: z\r\n\r\n",
            b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
            b"hello",
            b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ]
        specials = b"\r\n\x00 \t:;,0123456789abcdefHTTP/1."
        ok = 0
        self.be.clear()
        for i in range(300):
            data = bytearray(rnd.choice(bases))
            for _ in range(rnd.randint(1, 3)):
                pos = rnd.randrange(len(data))
                op = rnd.randrange(3)
                ch = specials[rnd.randrange(len(specials))]
                if op == 0:
                    data[pos] = ch
                elif op == 1:
                    data.insert(pos, ch)
                else:
                    del data[pos]
            if i % 3 == 0:  # behind a valid request on the same connection
                data[0:0] = bases[0]
            out, closed = hstest.raw(self.bal.port, bytes(data), timeout=5,
                                     shutdown_write=True)
            self.assertTrue(closed, "case %d hung: %r" % (i, bytes(data)))
            for part in out.split(b"HTTP/1.1 ")[1:]:
                status = int(part[:3])
                self.assertIn(status, (200, 400, 413, 414, 431, 501, 505),
                              (i, bytes(data), out))
                if status == 200:
                    ok += 1
                else:
                    body = part.partition(b"\r\n\r\n")[2]
                    self.assertEqual(json.loads(body)["status"], status)
        # Requests cut off when the client went away mid-body do not count.
        complete = [r for r in self.be.requests() if r["complete"]]
        self.assertEqual(len(complete), ok)
        self.assertGreater(ok, 10)

    def test_good_request_after_bad_on_new_connection(self):
        # The balancer still works, and the good request reaches the backend.
        r = self.bal.get("/")
        self.assertEqual(r.status, 200)
        self.assertEqual(len(self.be.requests()), 1)

    def test_pipelined_smuggling_attempt(self):
        # A valid request followed by a bad one on the same connection: the
        # first is answered, the second rejected, nothing of it forwarded.
        data = (b"GET /one HTTP/1.1\r\n" + H + b"\r\n" +
                b"POST /two HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        out, closed = hstest.raw(self.bal.port, data)
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out[:100])
        self.assertIn(b"HTTP/1.1 400 ", out)
        self.assertTrue(closed)
        paths = [r["path"] for r in self.be.requests()]
        self.assertEqual(paths, ["/one"])

    def test_slow_header_408(self):
        s = socket.create_connection(("127.0.0.1", self.bal.port))
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHo")
            t0 = time.monotonic()
            s.settimeout(15 * hstest.SLOW)
            out = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                out += chunk
            self.assertTrue(out.startswith(b"HTTP/1.1 408 "), out)
            self.assertLess(time.monotonic() - t0, 10 * hstest.SLOW)
        finally:
            s.close()
        self.assertEqual(self.be.requests(), [])

    def test_silent_connection_closed_at_head_deadline(self):
        # A connection that sends nothing has --header-timeout-ms (3 s
        # here), not the keep-alive idle timeout (60 s).
        s = socket.create_connection(("127.0.0.1", self.bal.port))
        t0 = time.monotonic()
        try:
            s.settimeout(20 * hstest.SLOW)
            try:
                out = s.recv(4096)
            except ConnectionResetError:
                out = b""
        finally:
            s.close()
        self.assertEqual(out, b"")
        self.assertLess(time.monotonic() - t0, 10 * hstest.SLOW)

    def test_slowloris_trickle_408(self):
        # Bytes trickling in do not reset the header deadline.
        s = socket.create_connection(("127.0.0.1", self.bal.port))
        t0 = time.monotonic()
        closed = False
        try:
            s.sendall(b"GET / HTTP/1.1\r\n")
            s.settimeout(0.3)
            for i in range(60):
                try:
                    s.sendall(b"X-%d: y\r\n" % i)
                except OSError:
                    closed = True
                    break
                try:
                    if s.recv(4096).startswith(b"HTTP/1.1 408"):
                        closed = True
                        break
                except socket.timeout:
                    pass
        finally:
            s.close()
        self.assertTrue(closed)
        self.assertLess(time.monotonic() - t0, 10 * hstest.SLOW)


if __name__ == "__main__":
    unittest.main()
