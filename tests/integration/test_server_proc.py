"""hs-server as a process: options, start-up (port 0, seeding a missing
database), database failures (503 + Retry-After), graceful SIGTERM with a
request in flight, and two processes writing the same rows of one file
without losing an update."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest

import hstest

SERVER = hstest.binpath("hs-server")


def run(*args, timeout=30):
    return subprocess.run([SERVER] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout * hstest.SLOW,
                          stdin=subprocess.DEVNULL)


class OptionsTest(unittest.TestCase):
    def test_help(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        out = r.stdout.decode()
        for opt in ("--listen", "--db", "--scale", "--threads",
                    "--db-threads", "--id",
                    "--cache", "--log-level", "--max-body"):
            self.assertIn(opt, out)

    def test_bad_options(self):
        for args in (["--bogus"], ["--threads", "0"], ["--threads", "x"],
                     ["--threads"], ["--db-threads", "-1"],
                     ["--db-threads", "1025"], ["--db-threads", "x"],
                     ["--listen", "nope"],
                     ["--listen", "127.0.0.1:70000"], ["--cache", "lease"],
                     ["--log-level", "loud"], ["--max-body", "0"],
                     ["--scale", "-1"], ["--id", ""], ["extra"]):
            with self.subTest(args=args):
                r = run(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                err = r.stderr.decode().strip()
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertTrue(err.startswith("hs-server: "), err)

    def test_cache_off_accepted_and_port_printed(self):
        db = hstest.seeded_db(0.01)
        p = hstest.Proc([SERVER, "--listen", "127.0.0.1:0", "--db", db,
                         "--cache", "off", "--threads", "1"], timeout=60)
        try:
            m = p.wait_line(r"^listening on 127\.0\.0\.1:(\d+)$")
            port = int(m.group(1))
            self.assertGreater(port, 0)
            r = hstest.wait_http(port)
            # The default id names the port.
            self.assertEqual(r.json()["id"], "hs-server-%d" % port)
            self.assertEqual(r.header("x-served-by"), "hs-server-%d" % port)
            self.assertEqual(p.stop(), 0)
        finally:
            p.cleanup()

    def test_port_in_use(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            r = run("--listen", "127.0.0.1:%d" % port, "--db",
                    hstest.seeded_db(0.01))
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(b"cannot listen", r.stderr)


class StartupTest(unittest.TestCase):
    def test_missing_db_is_seeded(self):
        d = tempfile.mkdtemp(prefix="hs-newdb-")
        path = os.path.join(d, "sub", "fresh.db")
        p = hstest.Proc([SERVER, "--listen", "127.0.0.1:0", "--db", path,
                         "--scale", "0.002"], timeout=120)
        try:
            port = p.listen_port()
            self.assertTrue(os.path.exists(path))
            r = hstest.request(port, "GET", "/products/1")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["id"], 1)
            con = sqlite3.connect(path)
            n = con.execute("SELECT count(*) FROM products").fetchone()[0]
            con.close()
            self.assertEqual(n, 200)
            self.assertEqual(hstest.request(port, "GET", "/db").status, 200)
            self.assertIn("seeding", p.stderr())
            self.assertEqual(p.stop(), 0)
        finally:
            p.cleanup()

    def test_default_db_path_relative_to_cwd(self):
        d = tempfile.mkdtemp(prefix="hs-cwd-")
        p = hstest.Proc([SERVER, "--listen", "127.0.0.1:0", "--scale",
                         "0.001"], cwd=d, timeout=120)
        try:
            port = p.listen_port()
            self.assertTrue(os.path.exists(os.path.join(
                d, "data", "hammerstack.db")))
            self.assertEqual(hstest.request(port, "GET", "/healthz").status,
                             200)
            self.assertEqual(p.stop(), 0)
        finally:
            p.cleanup()


class DatabaseFailureTest(unittest.TestCase):
    def test_locked_past_timeout_is_503(self):
        db = hstest.seeded_db(0.01)
        p, port = hstest.start_server(db, "--busy-timeout", "200")
        con = sqlite3.connect(db, timeout=10, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")  # holds the write lock
            r = hstest.request(port, "PUT", "/products/1", {"stock": 1})
            self.assertEqual(r.status, 503, r.body)
            self.assertEqual(r.header("retry-after"), "1")
            self.assertEqual(r.json()["status"], 503)
            # Reads still work in WAL mode while a writer holds the lock.
            self.assertEqual(hstest.request(port, "GET",
                                            "/products/1").status, 200)
            con.execute("ROLLBACK")
            r = hstest.request(port, "PUT", "/products/1", {"stock": 1})
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()["version"], 2)
            s = hstest.request(port, "GET", "/stats").json()
            self.assertGreaterEqual(s["db"]["errors"], 1)
            self.assertIn("busy", p.stderr())
            self.assertEqual(p.stop(), 0)
        finally:
            con.close()
            p.cleanup()

    def test_missing_file_is_503(self):
        db = hstest.seeded_db(0.01)
        # One thread, no request yet: its connection is opened lazily, after
        # the file is gone.
        p = hstest.Proc([SERVER, "--listen", "127.0.0.1:0", "--db", db,
                         "--threads", "1"], timeout=60)
        try:
            port = p.listen_port()
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.unlink(db + suffix)
            for path in ("/products/1", "/categories/1/top", "/db",
                         "/queries?queries=3", "/updates?queries=3",
                         "/healthz"):
                with self.subTest(path=path):
                    r = hstest.request(port, "GET", path)
                    self.assertEqual(r.status, 503, r.body)
                    self.assertEqual(r.header("retry-after"), "1")
                    j = r.json()
                    if path == "/healthz":
                        self.assertEqual(j["db"], "error")
                        self.assertEqual(j["status"], "error")
                    else:
                        self.assertEqual(j["status"], 503)
                    self.assertTrue(j["error"])
            r = hstest.request(port, "PUT", "/products/1", {"stock": 1})
            self.assertEqual(r.status, 503)
            self.assertEqual(hstest.request(port, "GET", "/json").status, 200)
            self.assertIn("cannot open database", p.stderr())
            self.assertEqual(p.stop(), 0)
        finally:
            p.cleanup()


class ShutdownTest(unittest.TestCase):
    def test_sigterm_finishes_inflight_request(self):
        db = hstest.seeded_db(0.01)
        p, port = hstest.start_server(db)
        body = json.dumps({"stock": 42}).encode()
        s = socket.create_connection(("127.0.0.1", port), 10 * hstest.SLOW)
        try:
            # Headers and half the body: the request is in flight.
            s.sendall(b"PUT /products/1 HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
            time.sleep(0.3 * hstest.SLOW)
            p.signal(signal.SIGTERM)
            # New connections are refused once it stops accepting.
            refused = False
            deadline = time.monotonic() + 10 * hstest.SLOW
            while not refused and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    time.sleep(0.05)
                except OSError:
                    refused = True
            self.assertTrue(refused, "still accepting after SIGTERM")
            time.sleep(0.2 * hstest.SLOW)
            self.assertTrue(p.alive(), "exited with a request in flight")
            s.sendall(body[5:])
            s.settimeout(10 * hstest.SLOW)
            data = hstest.recv_until(s, lambda d: b"}" in d)
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
            self.assertIn(b'"stock":42', data)
        finally:
            s.close()
        self.assertEqual(p.p.wait(15 * hstest.SLOW), 0)
        p.cleanup()
        con = sqlite3.connect(db)
        stock, version = con.execute(
            "SELECT stock, version FROM products WHERE id = 1").fetchone()
        con.close()
        self.assertEqual((stock, version), (42, 2))

    def test_sigterm_while_requests_queue_for_the_database(self):
        """One database thread, eight clients on database routes: SIGTERM
        comes while requests wait in the database threads' queue.  Each
        is answered before the server exits, within the drain timeout."""
        db = hstest.seeded_db(0.01)
        p, port = hstest.start_server(db, "--threads", "1", "--db-threads",
                                      "1")
        paths = ["/products/%d" % i for i in range(1, 30)] + \
            ["/categories/1/top"] + \
            ["/queries?queries=5", "/healthz"]
        stop = threading.Event()
        seen, lock = [], threading.Lock()

        def load(t):
            i = t
            while not stop.is_set():
                i += 1
                try:
                    r = hstest.request(port, "GET", paths[i % len(paths)],
                                       timeout=20)
                except OSError:
                    return   # refused or reset once it stopped accepting
                with lock:
                    seen.append(r.status)

        ts = [threading.Thread(target=load, args=(t,)) for t in range(8)]
        try:
            for t in ts:
                t.start()
            time.sleep(0.5 * hstest.SLOW)
            rc = p.stop()
            err = p.stderr()
        finally:
            stop.set()
            for t in ts:
                t.join(30 * hstest.SLOW)
            p.cleanup()
        self.assertEqual(rc, 0, err)
        self.assertNotIn("still in flight", err)
        self.assertGreater(len(seen), 8)
        self.assertEqual(set(seen), {200})

    def test_sigint_exits_0(self):
        p, port = hstest.start_server(hstest.seeded_db(0.01))
        try:
            hstest.request(port, "GET", "/products/1")
            p.signal(signal.SIGINT)
            self.assertEqual(p.p.wait(15 * hstest.SLOW), 0)
        finally:
            p.cleanup()


class TwoProcessesTest(unittest.TestCase):
    """Two hs-server processes over one file, concurrent PUTs on the same
    rows from several threads: no 5xx, and every acknowledged update is
    counted in the final version (no lost update)."""

    PRODUCTS = (1, 2, 3)
    THREADS = 4
    PER_THREAD = 40

    def test_no_lost_update(self):
        db = hstest.seeded_db(0.01)
        a, pa = hstest.start_server(db, server_id="a")
        b, pb = hstest.start_server(db, server_id="b")
        try:
            initial = {pid: hstest.request(pa, "GET", "/products/%d" % pid)
                       .json()["version"] for pid in self.PRODUCTS}
            acks = {pid: 0 for pid in self.PRODUCTS}
            bad = []
            lock = threading.Lock()
            deadline = time.monotonic() + 60 * hstest.SLOW

            def worker(t):
                import http.client
                conns = [http.client.HTTPConnection("127.0.0.1", port,
                                                    timeout=30 * hstest.SLOW)
                         for port in (pa, pb)]
                try:
                    for i in range(self.PER_THREAD):
                        if time.monotonic() > deadline:
                            break
                        pid = self.PRODUCTS[(t + i) % len(self.PRODUCTS)]
                        port = (pa, pb)[i % 2]
                        r = hstest.request(port, "PUT", "/products/%d" % pid,
                                           {"stock": t * 1000 + i},
                                           conn=conns[i % 2])
                        with lock:
                            if r.status == 200:
                                acks[pid] += 1
                            else:
                                bad.append((r.status, r.body))
                finally:
                    for c in conns:
                        c.close()

            threads = [threading.Thread(target=worker, args=(t,))
                       for t in range(self.THREADS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(90 * hstest.SLOW)
            self.assertEqual(bad, [])
            self.assertEqual(sum(acks.values()),
                             self.THREADS * self.PER_THREAD)
            for pid in self.PRODUCTS:
                for port in (pa, pb):
                    v = hstest.request(port, "GET", "/products/%d" % pid) \
                        .json()["version"]
                    self.assertEqual(v, initial[pid] + acks[pid], pid)
            self.assertEqual(a.stop(), 0)
            self.assertEqual(b.stop(), 0)
        finally:
            a.cleanup()
            b.cleanup()


if __name__ == "__main__":
    unittest.main()
