"""hs-server --io blocking: a pool of blocking workers, each serving one
connection until it closes, while the other clients wait in the listen
backlog (the model of pre-fork sync workers), against --io event.  The API
itself is tested against both in test_server.py (BlockingServerTest)."""

import json
import signal
import socket
import subprocess
import threading
import time
import unittest

import hstest
from hstest import SLOW

SERVER = hstest.binpath("hs-server")
GET = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"


def read_response(s):
    """Reads one response to GET /plaintext (its body is 13 bytes)."""
    return hstest.recv_until(s, lambda d: d.endswith(b"Hello, World!"))


def served_keep_alive(port):
    """A connection that has been answered once and stays open, idle."""
    s = socket.create_connection(("127.0.0.1", port), 10 * SLOW)
    s.sendall(GET)
    data = read_response(s)
    assert data.startswith(b"HTTP/1.1 200 "), data
    return s


def stats(port):
    return hstest.request(port, "GET", "/stats").json()


class BlockingWorkersTest(unittest.TestCase):
    def start(self, *extra):
        p, port = hstest.start_server(hstest.seeded_db(0.01), *extra)
        self.addCleanup(p.cleanup)
        return p, port

    def test_idle_keep_alive_holds_a_worker(self):
        """Two workers, two idle keep-alive clients: a third client is
        accepted by the kernel but not served until one of them leaves."""
        _, port = self.start("--io", "blocking", "--threads", "2")
        # wait_http's probe may still hold a worker on its way out.
        deadline = time.monotonic() + 10 * SLOW
        while stats(port)["io"]["busy"] > 1:
            self.assertLess(time.monotonic(), deadline, "never settled")
            time.sleep(0.02)
        idle = [served_keep_alive(port) for _ in range(2)]
        third = socket.create_connection(("127.0.0.1", port), 10 * SLOW)
        try:
            third.sendall(GET)
            third.settimeout(1.0)
            with self.assertRaises(socket.timeout,
                                   msg="served while both workers were "
                                       "held by idle clients"):
                third.recv(65536)
            t0 = time.monotonic()
            idle.pop().close()
            third.settimeout(10 * SLOW)
            data = read_response(third)
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
            print("\nthird client served %.3f s after an idle one left" %
                  (time.monotonic() - t0))
        finally:
            third.close()
            for s in idle:
                s.close()

    def test_event_loop_serves_past_idle_clients(self):
        """The same scene on one event loop: nobody waits."""
        _, port = self.start("--io", "event", "--threads", "1")
        idle = [served_keep_alive(port) for _ in range(2)]
        try:
            third = served_keep_alive(port)
            third.close()
            self.assertEqual(stats(port)["io"], {"model": "event"})
        finally:
            for s in idle:
                s.close()

    def test_clients_queue_and_all_are_served(self):
        """Eight clients on two workers, a new connection per request:
        every request is answered, the workers taking them in turn."""
        _, port = self.start("--io", "blocking", "--threads", "2")
        seen, lock = [], threading.Lock()

        def load(t):
            for i in range(10):
                r = hstest.request(port, "GET",
                                   "/products/%d" % (t * 10 + i + 1))
                with lock:
                    seen.append(r.status)

        ts = [threading.Thread(target=load, args=(t,)) for t in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60 * SLOW)
        self.assertEqual(len(seen), 80)
        self.assertEqual(set(seen), {200})
        st = stats(port)
        self.assertEqual(st["io"]["model"], "blocking")
        self.assertEqual(st["io"]["workers"], 2)
        # One database connection per worker, not per client.
        self.assertLessEqual(st["db"]["workers"], 2)

    def test_sigterm_drains_and_exits_0(self):
        """SIGTERM with one worker idle on a keep-alive client and one in
        the middle of a PUT: it stops accepting, answers the PUT and
        exits 0."""
        p, port = self.start("--io", "blocking", "--threads", "2")
        idle = served_keep_alive(port)
        body = json.dumps({"stock": 42}).encode()
        s = socket.create_connection(("127.0.0.1", port), 10 * SLOW)
        try:
            s.sendall(b"PUT /products/1 HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
            time.sleep(0.3 * SLOW)
            p.signal(signal.SIGTERM)
            refused = False
            deadline = time.monotonic() + 10 * SLOW
            while not refused and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    time.sleep(0.05)
                except OSError:
                    refused = True
            self.assertTrue(refused, "still accepting after SIGTERM")
            self.assertTrue(p.alive(), "exited with a request in flight")
            s.sendall(body[5:])
            s.settimeout(10 * SLOW)
            data = hstest.recv_until(s, lambda d: b"}" in d)
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
            self.assertIn(b'"stock":42', data)
        finally:
            s.close()
            idle.close()
        self.assertEqual(p.p.wait(15 * SLOW), 0, p.stderr())
        self.assertNotIn("still in flight", p.stderr())

    def test_cache_without_batching(self):
        """The cache works through blocking workers, one get per read:
        the event loops' read batcher does not apply."""
        mc, mc_port = hstest.start_memcached()
        self.addCleanup(mc.cleanup)
        _, port = self.start("--io", "blocking", "--threads", "2",
                             "--memcached", "127.0.0.1:%d" % mc_port)
        get = lambda path: hstest.request(port, "GET", path)  # noqa: E731
        self.assertEqual(get("/products/7").header("x-cache"), "MISS")
        r = get("/products/7")
        self.assertEqual((r.status, r.header("x-cache")), (200, "HIT"))
        v = r.json()["version"]
        r = hstest.request(port, "PUT", "/products/7", body={"stock": 9})
        self.assertEqual(r.status, 200)
        r = get("/products/7")
        self.assertEqual(r.header("x-cache"), "MISS")
        self.assertEqual(r.json()["version"], v + 1)
        c = stats(port)["cache"]
        self.assertGreaterEqual(c["hits"], 1)
        self.assertEqual((c["batches"], c["batch_keys"]), (0, 0))


class IoOptionsTest(unittest.TestCase):
    def run_server(self, *args):
        return subprocess.run([SERVER, *args], capture_output=True,
                              text=True, timeout=30 * SLOW)

    def test_bad_io(self):
        r = self.run_server("--io", "foo")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--io", r.stderr)
        self.assertIn("event|blocking", r.stderr)

    def test_blocking_refuses_db_threads(self):
        for args in (("--io", "blocking", "--db-threads", "2"),
                     ("--db-threads", "2", "--io", "blocking")):
            with self.subTest(args=args):
                r = self.run_server(*args)
                self.assertEqual(r.returncode, 2)
                self.assertIn("--db-threads", r.stderr)
                self.assertIn("--io event", r.stderr)

    def test_help_mentions_io(self):
        r = self.run_server("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--io MODE", r.stdout)
        self.assertIn("blocking", r.stdout)


if __name__ == "__main__":
    unittest.main()
