"""Bad requests sent raw to hs-server: every answer must be one well-formed
HTTP response, with a JSON error body wherever hs-server gets to answer.

libmicrohttpd 0.9.75 answers some shapes itself, before any callback runs,
with a compiled-in HTML page and no Content-Type; those are listed in
MHD_HTML below with the reason, and the README ("Errors") says the same.
The test pins them: if a library upgrade changes one, the test fails and
the list (and the README) must follow."""

import json
import re
import socket
import time
import unittest

import hstest

H = b"Host: x"
JSON_CT = b"Content-Type: application/json"


def req(line, *fields, body=b""):
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + \
        b"\r\n" + body


# name: (request bytes, status). hs-server answers each with a JSON error.
JSON_ERRORS = {
    "version 1.9": (req(b"GET /json HTTP/1.9", H), 505),
    "version 1.2": (req(b"GET /json HTTP/1.2", H), 505),
    "two Content-Lengths": (req(b"POST /products/1/reviews HTTP/1.1", H,
                                b"Content-Length: 2", b"Content-Length: 3",
                                body=b"{}x"), 400),
    "two equal Content-Lengths": (req(b"PUT /products/1 HTTP/1.1", H,
                                      b"Content-Length: 2",
                                      b"Content-Length: 2", body=b"{}"),
                                  400),
    "Content-Length and chunked": (req(b"POST /products/1/reviews HTTP/1.1",
                                       H, b"Content-Length: 5",
                                       b"Transfer-Encoding: chunked",
                                       body=b"0\r\n\r\n"), 400),
    "Transfer-Encoding gzip": (req(b"POST /products/1/reviews HTTP/1.1", H,
                                   b"Transfer-Encoding: gzip"), 501),
    "chunked in HTTP/1.0": (req(b"POST /products/1/reviews HTTP/1.0",
                                b"Transfer-Encoding: chunked",
                                body=b"0\r\n\r\n"), 400),
    "space before colon": (req(b"GET /json HTTP/1.1", H, b"X-A : b"), 400),
    "space before colon in Host": (req(b"GET /json HTTP/1.1",
                                       b"Host : x"), 400),
    "two Hosts": (req(b"GET /json HTTP/1.1", H, b"Host: y"), 400),
    "missing Host": (req(b"GET /json HTTP/1.1"), 400),
    "control byte in value": (req(b"GET /json HTTP/1.1", H,
                                  b"X-A: a\x01b"), 400),
    "NUL in path": (req(b"GET /products/1%00abc HTTP/1.1", H), 400),
    "NUL in category path": (req(b"GET /categories/1%00/top HTTP/1.1", H),
                             400),
    "Content-Length over --max-body": (req(b"PUT /products/1 HTTP/1.1", H,
                                           b"Content-Length: 99999999"),
                                       413),
    "bad JSON": (req(b"PUT /products/1 HTTP/1.1", H, JSON_CT,
                     b"Content-Length: 1", body=b"{"), 400),
    "unknown route": (req(b"GET /nope HTTP/1.1", H), 404),
    "space in path": (req(b"GET /js on HTTP/1.1", H), 404),
    "wrong method": (req(b"PATCH /json HTTP/1.1", H), 405),
}

# Answered by libmicrohttpd itself (HTML page, no Content-Type): the reason
# is that 0.9.75 has no hook between its parser and its error pages.
MHD_HTML = {
    "URL too long": (req(b"GET /" + b"a" * 40000 + b" HTTP/1.1", H), 414),
    "head too large": (req(b"GET /json HTTP/1.1", H,
                           b"X-A: " + b"a" * 40000), 431),
    "header line without colon": (req(b"GET /json HTTP/1.1", H, b"foo"),
                                  400),
    "not HTTP": (b"\x01\x02\x03 \r\n\r\n", 400),
    "HTTP/0.9 request line": (b"GET /json\r\n\r\n", 400),
    "version 2.0": (req(b"GET /json HTTP/2.0", H), 505),
    "bad chunk size": (req(b"POST /products/1/reviews HTTP/1.1", H,
                           JSON_CT, b"Transfer-Encoding: chunked",
                           body=b"zz\r\n"), 400),
    "trailer line without colon": (req(b"POST /products/1/reviews HTTP/1.1",
                                       H, JSON_CT,
                                       b"Transfer-Encoding: chunked",
                                       body=b"2\r\n{}\r\n0\r\nfoo\r\n\r\n"),
                                   400),
}

# libmicrohttpd 0.9.75 writes two status lines (its error path builds the
# reply head twice) for a Content-Length that is not a number it can hold.
# Nothing in hs-server runs first; hs-balancer answers these 400 (JSON).
MHD_TWO_STATUS_LINES = {
    "Content-Length too large": (req(b"GET /json HTTP/1.1", H,
                                     b"Content-Length: 99999999999999999999"),
                                 413),
    "Content-Length negative": (req(b"GET /json HTTP/1.1", H,
                                    b"Content-Length: -5"), 400),
}

# Accepted although RFC 9112 says to reject them: libmicrohttpd normalises
# them before hs-server sees the head (README, "Errors").
ACCEPTED = {
    "bare LF": b"GET /json HTTP/1.1\nHost: x\n\n",
    "obs-fold": req(b"GET /json HTTP/1.1", H, b"X-A: a", b"  b"),
    "NUL in a value": req(b"GET /json HTTP/1.1", H, b"X-A: a\x00b"),
}


def complete(data):
    """Whether data holds at least one whole response."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return len(rest) >= (int(m.group(1)) if m else 0)


def parse_one(data):
    """Splits one response off data: (status, headers dict, body, rest)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, "no complete head in %r" % data[:200]
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        hdrs[k.strip().lower().decode()] = v.strip().decode()
    n = int(hdrs.get("content-length", "0"))
    return status, hdrs, rest[:n], rest[n:]


class ErrorShapesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = hstest.seeded_db()
        cls.proc, cls.port = hstest.start_server(cls.db, "--threads", "1")

    @classmethod
    def tearDownClass(cls):
        rc = cls.proc.stop()
        err = cls.proc.stderr()
        cls.proc.cleanup()
        assert rc == 0, "hs-server exited %s:\n%s" % (rc, err)

    def send(self, data):
        """Sends data; reads until the connection closes, or until one
        whole response is in and nothing more came for 0.3 s."""
        s = socket.create_connection(("127.0.0.1", self.port),
                                     5 * hstest.SLOW)
        out = b""
        try:
            s.sendall(data)
            deadline = time.monotonic() + 5 * hstest.SLOW
            while time.monotonic() < deadline:
                done = complete(out)
                s.settimeout(0.3 * hstest.SLOW if done else
                             max(0.05, deadline - time.monotonic()))
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    if done:
                        break
                    continue
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            s.close()
        self.assertTrue(out.startswith(b"HTTP/1.1 "), out[:200])
        return out

    def test_json_errors(self):
        for name, (data, want) in JSON_ERRORS.items():
            with self.subTest(name):
                out = self.send(data)
                status, hdrs, body, rest = parse_one(out)
                self.assertEqual(status, want, out[:300])
                self.assertEqual(rest, b"", "more than one response")
                self.assertEqual(hdrs.get("content-type"),
                                 "application/json")
                self.assertEqual(json.loads(body)["status"], want)

    def test_library_html_pages(self):
        for name, (data, want) in MHD_HTML.items():
            with self.subTest(name):
                out = self.send(data)
                status, hdrs, body, rest = parse_one(out)
                self.assertEqual(status, want, out[:300])
                self.assertEqual(rest, b"", "more than one response")
                self.assertNotIn("content-type", hdrs)
                self.assertTrue(body.startswith(b"<html>"), body)

    def test_library_two_status_lines(self):
        for name, (data, want) in MHD_TWO_STATUS_LINES.items():
            with self.subTest(name):
                out = self.send(data)
                self.assertEqual(out.count(b"HTTP/1.1 %d " % want), 2,
                                 "libmicrohttpd fixed? update the README "
                                 "and this list: %r" % out[:400])

    def test_accepted_shapes(self):
        for name, data in ACCEPTED.items():
            with self.subTest(name):
                out = self.send(data)
                status, hdrs, body, rest = parse_one(out)
                self.assertEqual(status, 200, out[:300])
                self.assertEqual(json.loads(body),
                                 {"message": "Hello, World!"})


if __name__ == "__main__":
    unittest.main()
