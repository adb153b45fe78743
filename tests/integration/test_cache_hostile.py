"""hs-server against a memcached that answers wrongly: a fake memcached
(fakemc.py) on a free loopback port answers adds with END, DELETED, OK or a
VALUE, gets with garbage, another key's item, a wrong or absurd length, an
over-long key, half a reply and a close, or nothing at all.

Whatever comes back, hs-server must stay up, answer 200 with the body of
the product asked for (never another key's), fall back to the database
(X-Cache BYPASS or MISS), count the fault, and serve HITs again once the
fake behaves.  Both read paths are covered: the read batcher's multi-get and
the single-key get (--cache-batch 0).
"""

import json
import time
import unittest

import fakemc
import hstest
from fakemc import CLOSE, HANG
from hstest import SLOW


def get(port, path):
    return hstest.request(port, "GET", path, timeout=10)


def cache_stats(port):
    r = get(port, "/stats")
    assert r.status == 200, r.body
    return r.json()["cache"]


def other_product(fake, cmd, keys):
    """A VALUE line for product 7 whatever key was asked for: a desynced
    or lying memcached."""
    body = b'{"id":7,"name":"not the product you asked for"}'
    cas = b" 99" if cmd == "gets" else b""
    return (b"VALUE hs1:p:7 200 %d%s\r\n%s\r\nEND\r\n" %
            (len(body), cas, body))


def own_key(fmt):
    """A reply built around the first key asked for."""
    def reply(fake, cmd, keys):
        return fmt.replace(b"KEY", keys[0])
    return reply


BODY = b'{"id":1,"name":"x"}'

# (name, {command: reply}, counts as a protocol error)
SHAPES = [
    ("add answered END", {"add": b"END\r\n"}, True),
    ("add answered DELETED", {"add": b"DELETED\r\n"}, True),
    ("add answered OK", {"add": b"OK\r\n"}, True),
    ("add answered VALUE", {"add": b"VALUE k 0 1\r\nx\r\nEND\r\n"}, True),
    ("add answered garbage", {"add": b"\x00\xff\xfe garbage\r\n"}, True),
    ("cas answered END", {"cas": b"END\r\n"}, True),
    ("cas answered STORED twice", {"cas": b"STORED\r\nSTORED\r\n"}, True),
    ("gets after add answered another key",
     {"gets": other_product}, True),
    ("get answered garbage",
     {"get": b"\x00\x01 garbage \xff\r\n", "gets": b"\x00 garbage\r\n"},
     True),
    ("get answered another key",
     {"get": other_product, "gets": other_product}, True),
    # Waits for bytes that never come: a timeout, not a protocol error.
    ("get answered a length too long",
     {"get": own_key(b"VALUE KEY 200 40\r\n" + BODY + b"\r\nEND\r\n"),
      "gets": own_key(b"VALUE KEY 200 40 5\r\n" + BODY + b"\r\nEND\r\n")},
     False),
    ("get answered a length too short",
     {"get": own_key(b"VALUE KEY 200 5\r\n" + BODY + b"\r\nEND\r\n"),
      "gets": own_key(b"VALUE KEY 200 5 5\r\n" + BODY + b"\r\nEND\r\n")},
     True),
    ("get answered an absurd length",
     {"get": own_key(b"VALUE KEY 200 18446744073709551614\r\nxx\r\nEND\r\n"),
      "gets": own_key(b"VALUE KEY 200 18446744073709551614 5\r\nxx\r\n"
                      b"END\r\n")},
     True),
    ("get answered an over-long key",
     {"get": b"VALUE " + b"k" * 330 + b" 200 2\r\nxx\r\nEND\r\n",
      "gets": b"VALUE " + b"k" * 320 + b" 200 2 5\r\nxx\r\nEND\r\n"},
     True),
    ("get answered a bad data terminator",
     {"get": own_key(b"VALUE KEY 200 2\r\nxxYYEND\r\n"),
      "gets": own_key(b"VALUE KEY 200 2 5\r\nxxYYEND\r\n")}, True),
    ("get answered half a reply, then closed",
     {"get": own_key(b"VALUE KEY 200 50\r\n{\"id\""),
      "gets": own_key(b"VALUE KEY 200 50 5\r\n{\"id\"")}, False),
    ("get answered SERVER_ERROR",
     {"get": b"SERVER_ERROR busy\r\n", "gets": b"SERVER_ERROR busy\r\n"},
     False),
    ("get never answered", {"get": HANG, "gets": HANG}, False),
    # One byte every 30 ms, each in time for the 50 ms I/O timeout: the
    # whole reply has a bound too.
    ("get trickled byte by byte",
     {"gets": lambda fake, cmd, keys: [bytes([b]) for b in (
         b"VALUE %s 200 400 5\r\n" % keys[0] + b"x" * 400 +
         b"\r\nEND\r\n")]}, False),
    ("get closed the connection", {"get": CLOSE, "gets": CLOSE}, False),
    ("delete answered STORED", {"delete": b"STORED\r\n"}, True),
]


class HostileMemcachedTest(unittest.TestCase):
    def setUp(self):
        self.db = hstest.seeded_db(0.01)
        self.fake = fakemc.FakeMemcached()
        self.addCleanup(self.fake.close)

    def start(self, *extra):
        p, port = hstest.start_server(self.db, "--memcached",
                                      "127.0.0.1:%d" % self.fake.port,
                                      "--threads", "2", *extra)
        self.addCleanup(p.cleanup)
        return p, port

    def get(self, p, port, path, what, method="GET", body=None):
        """One request; a dead server is reported with its exit status."""
        try:
            return hstest.request(port, method, path, body=body, timeout=10)
        except OSError:
            time.sleep(0.2)
            self.check_alive(p, what)
            raise

    def check_alive(self, p, what):
        self.assertTrue(p.alive(), "hs-server died (exit %s) on %s\n%s" %
                        (p.p.poll(), what, p.stderr()))

    def wait_hit(self, p, port, path, what):
        deadline = time.monotonic() + 10 * SLOW
        while True:
            r = self.get(p, port, path, what)
            self.check_alive(p, what)
            self.assertEqual(r.status, 200, (what, r.body))
            self.assertEqual(r.json()["id"], int(path.rsplit("/", 1)[1]))
            if r.header("x-cache") == "HIT":
                return
            self.assertLess(time.monotonic(), deadline,
                            "no HIT after the fake memcached recovered "
                            "(%s)" % what)
            time.sleep(0.05)

    def hostile(self, *extra):
        p, port = self.start(*extra)
        # A healthy start: a miss, then a hit.
        self.wait_hit(p, port, "/products/1", "start")
        for i, (what, script, protocol) in enumerate(SHAPES):
            pid = 100 + i
            path = "/products/%d" % pid
            before = cache_stats(port)
            for cmd, reply in script.items():
                self.fake.script(cmd, reply)
            try:
                if "delete" in script:
                    r = self.get(p, port, path, what, "PUT", {"stock": 9})
                    self.check_alive(p, what)
                    self.assertEqual(r.status, 200, (what, r.body))
                for _ in range(3):
                    r = self.get(p, port, path, what)
                    self.check_alive(p, what)
                    self.assertEqual(r.status, 200, (what, r.body))
                    body = r.json()
                    self.assertEqual(body["id"], pid,
                                     "%s: served another key's body: %r" %
                                     (what, r.body[:200]))
                    self.assertIn(r.header("x-cache"), ("BYPASS", "MISS"),
                                  what)
            finally:
                self.fake.good()
            after = cache_stats(port)
            self.assertGreater(after["errors"], before["errors"], what)
            if protocol:
                self.assertGreater(after["protocol_errors"],
                                   before["protocol_errors"], what)
            # The fake behaves again: back to hits, without a restart.
            self.wait_hit(p, port, path, what)
            if "delete" in script:
                self.assertEqual(get(port, path).json()["stock"], 9)
        m = get(port, "/metrics")
        self.assertRegex(m.body.decode(),
                         r"(?m)^hs_cache_protocol_errors_total [1-9]")
        self.assertEqual(get(port, "/healthz").json()["cache"], "ok")
        self.check_alive(p, "the end")

    def test_single_key_get(self):
        self.hostile("--cache-batch", "0")

    def test_batched_get(self):
        self.hostile()

    def test_naive_mode(self):
        """naive stores with set: a set answered wrongly."""
        p, port = self.start("--cache", "naive", "--cache-batch", "0")
        self.wait_hit(p, port, "/products/1", "start")
        for i, reply in enumerate((b"END\r\n", b"DELETED\r\n", b"OK\r\n",
                                   b"NOT_FOUND\r\n")):
            path = "/products/%d" % (200 + i)
            self.fake.script("set", reply)
            try:
                r = self.get(p, port, path, "set answered %r" % reply)
                self.check_alive(p, "set answered %r" % reply)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.json()["id"], 200 + i)
            finally:
                self.fake.good()
            self.wait_hit(p, port, path, "set answered %r" % reply)


if __name__ == "__main__":
    unittest.main()
