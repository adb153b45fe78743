"""hs-server with its memcached cache, for real: memcached processes on free
loopback ports, hs-server processes over a seeded SQLite file.

Covers hit after miss (and no database work on a hit), invalidation seen at
once through a second server sharing memcached and the database, negative
caching, TTL jitter, ketama spread over three memcached servers,
/cached-queries (one multi-get), the stale-set race (naive serves a stale
body, lease never does), the thundering herd (one database fill for 50
concurrent readers) and memcached faults (no 5xx, BYPASS, recovery without a
server restart).
"""

import json
import os
import re
import socket
import sqlite3
import subprocess
import threading
import time
import unittest
import urllib.parse

import hstest
from hstest import SLOW

SERVER = hstest.binpath("hs-server")


# --- helpers -----------------------------------------------------------------

def mc_command(port, cmd, end=b"END\r\n", timeout=5):
    """One memcached text-protocol command; returns the raw answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout * SLOW)
    try:
        s.sendall(cmd)
        out = b""
        deadline = time.monotonic() + timeout * SLOW
        while not out.endswith(end) and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def mc_stats(port):
    out = {}
    for line in mc_command(port, b"stats\r\n").decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out


def mc_metadump(port):
    """{key: exptime} of every item (lru_crawler metadump, memcached >= 1.4.31)."""
    out = {}
    raw = mc_command(port, b"lru_crawler metadump all\r\n").decode()
    for line in raw.splitlines():
        m = re.search(r"key=(\S+) exp=(-?\d+)", line)
        if m:
            out[urllib.parse.unquote(m.group(1))] = int(m.group(2))
    return out


def get(port, path, **kw):
    return hstest.request(port, "GET", path, **kw)


def put(port, path, body):
    return hstest.request(port, "PUT", path, body=body)


def stats(port):
    r = get(port, "/stats")
    assert r.status == 200, r.body
    return r.json()


def db_queries(port):
    return stats(port)["db"]["queries"]


def start_cached(testcase, db, memcached_ports, *extra):
    mc = ",".join("127.0.0.1:%d" % p for p in memcached_ports)
    p, port = hstest.start_server(db, "--memcached", mc, "--threads", "4",
                                  *getattr(testcase, "IO", ()), *extra)
    testcase.addCleanup(p.cleanup)
    return p, port


class CacheTestBase(unittest.TestCase):
    def setUp(self):
        self.db = hstest.seeded_db(0.01)
        self.mc, self.mc_port = hstest.start_memcached()
        self.addCleanup(self.mc.cleanup)

    def wait_xcache(self, port, path, status, want, timeout, msg):
        """GETs path (always answered with status) until its X-Cache is
        want, for up to timeout seconds; returns that response."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            r = get(port, path)
            self.assertEqual(r.status, status)
            if r.header("x-cache") == want:
                return r
            self.assertLess(time.monotonic(), deadline, msg)
            time.sleep(0.1)

# --- the read batcher ----------------------------------------------------------

class BatchTest(CacheTestBase):
    PATHS = ["/products/%d" % i for i in range(1, 21)] + \
        ["/categories/1/top"]


    def warm(self, port):
        want = {}
        for path in self.PATHS:
            r = get(port, path)
            self.assertEqual(r.status, 200)
            want[path] = r.body
        return want

    def hammer(self, port, threads=16, each=40, method="GET"):
        """Concurrent reads of PATHS; returns [(path, response)]."""
        out, lock = [], threading.Lock()

        def one(t):
            mine = []
            for i in range(each):
                path = self.PATHS[(t * 7 + i) % len(self.PATHS)]
                mine.append((path, hstest.request(port, method, path)))
            with lock:
                out.extend(mine)

        ts = [threading.Thread(target=one, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120 * SLOW)
        self.assertEqual(len(out), threads * each)
        return out

    def test_concurrent_hits_share_multi_gets(self):
        _, port = start_cached(self, self.db, [self.mc_port])
        want = self.warm(port)
        before = stats(port)
        res = self.hammer(port)
        after = stats(port)
        for path, r in res:
            self.assertEqual(r.status, 200, (path, r.body))
            self.assertEqual(r.header("x-cache"), "HIT", path)
            self.assertEqual(r.body, want[path], path)
            self.assertRegex(r.header("server-timing"), r"^cache;dur=\d")
        c0, c1 = before["cache"], after["cache"]
        keys = c1["batch_keys"] - c0["batch_keys"]
        batches = c1["batches"] - c0["batches"]
        print("\nbatcher: %d reads in %d multi-gets (%.1f keys each)" %
              (keys, batches, keys / max(batches, 1)))
        self.assertEqual(keys, len(res))
        self.assertEqual(c1["hits"] - c0["hits"], len(res))
        # Parked time beyond the multi-gets is counted, never negative.
        self.assertGreaterEqual(c1["batch_queue_ms"], c0["batch_queue_ms"])
        self.assertGreaterEqual(c1["resume_wait_ms"], c0["resume_wait_ms"])
        self.assertGreater(c1["time_ms"], c0["time_ms"])
        self.assertEqual(after["db"]["queries"], before["db"]["queries"])
        # 16 clients at once: some multi-gets carried several reads.
        self.assertLess(batches, keys)
        # HEAD goes the same way, without a body.
        r = hstest.request(port, "HEAD", "/products/3")
        self.assertEqual((r.status, r.body), (200, b""))
        self.assertEqual(r.header("x-cache"), "HIT")

    def test_misses_and_updates_through_the_batcher(self):
        _, port = start_cached(self, self.db, [self.mc_port])
        b0 = stats(port)["cache"]["batch_keys"]
        m0 = mc_stats(self.mc_port)
        r = get(port, "/products/30")
        self.assertEqual(r.header("x-cache"), "MISS")
        # The lease follows the batch's miss without a second get: one
        # miss in memcached, then the winner's gets for its CAS.
        m1 = mc_stats(self.mc_port)
        self.assertEqual(int(m1["get_misses"]) - int(m0["get_misses"]), 1)
        self.assertEqual(int(m1["cmd_get"]) - int(m0["cmd_get"]), 2)
        self.assertEqual(get(port, "/products/30").header("x-cache"), "HIT")
        v = get(port, "/products/30").json()["version"]
        self.assertEqual(put(port, "/products/30", {"stock": 5}).status, 200)
        r = get(port, "/products/30")
        self.assertEqual(r.header("x-cache"), "MISS")
        self.assertEqual(r.json()["version"], v + 1)
        self.assertEqual(get(port, "/products/999999").status, 404)
        r = get(port, "/products/999999")
        self.assertEqual((r.status, r.header("x-cache")), (404, "HIT"))
        self.assertEqual(stats(port)["cache"]["batch_keys"] - b0, 6)

    def test_one_client_one_key_per_multi_get(self):
        _, port = start_cached(self, self.db, [self.mc_port])
        want = self.warm(port)
        before = stats(port)["cache"]
        for path in self.PATHS:
            r = get(port, path)
            self.assertEqual((r.status, r.header("x-cache")), (200, "HIT"))
            self.assertEqual(r.body, want[path])
        after = stats(port)["cache"]
        n = len(self.PATHS)
        self.assertEqual(after["hits"] - before["hits"], n)
        # Nothing else is ready in the loop's pass: no wait for company.
        self.assertEqual(after["batch_keys"] - before["batch_keys"], n)
        self.assertEqual(after["batches"] - before["batches"], n)

    def test_open_connections_counted(self):
        _, port = start_cached(self, self.db, [self.mc_port])
        # Settle first: the start-up probe's connection may still be on
        # its way out, and would leave with one of ours counted.  Each
        # /stats request counts its own connection, so 1 is settled.
        deadline = time.monotonic() + 10 * SLOW
        while (base := stats(port)["connections"]) > 1:
            self.assertLess(time.monotonic(), deadline, "never settled")
            time.sleep(0.02)
        socks = [socket.create_connection(("127.0.0.1", port), 5 * SLOW)
                 for _ in range(10)]
        try:
            deadline = time.monotonic() + 10 * SLOW
            while stats(port)["connections"] < base + 10:
                self.assertLess(time.monotonic(), deadline, "not counted")
                time.sleep(0.02)
            self.assertRegex(get(port, "/metrics").body.decode(),
                             r"(?m)^hs_open_connections (1[0-9]|[2-9][0-9])$")
        finally:
            for s in socks:
                s.close()
        deadline = time.monotonic() + 10 * SLOW
        while stats(port)["connections"] > base:
            self.assertLess(time.monotonic(), deadline, "closes not counted")
            time.sleep(0.02)

    def test_batch_off(self):
        _, port = start_cached(self, self.db, [self.mc_port],
                               "--cache-batch", "0")
        want = self.warm(port)
        res = self.hammer(port, threads=4, each=10)
        for path, r in res:
            self.assertEqual((r.status, r.header("x-cache")), (200, "HIT"))
            self.assertEqual(r.body, want[path])
        c = stats(port)["cache"]
        self.assertEqual((c["batches"], c["batch_keys"]), (0, 0))
        self.assertEqual((c["batch_queue_ms"], c["resume_wait_ms"]), (0, 0))
        self.assertGreaterEqual(c["hits"], len(res))

    def test_sigterm_while_reads_wait_on_the_batcher(self):
        p, port = start_cached(self, self.db, [self.mc_port])
        self.warm(port)
        stop = threading.Event()
        seen, lock = [], threading.Lock()

        def load():
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = get(port, self.PATHS[i % len(self.PATHS)], timeout=10)
                    with lock:
                        seen.append(r.status)
                except OSError:
                    return   # refused or closed once the server stopped

        ts = [threading.Thread(target=load) for _ in range(8)]
        for t in ts:
            t.start()
        time.sleep(0.5 * SLOW)
        rc = p.stop()
        stop.set()
        for t in ts:
            t.join(30 * SLOW)
        self.assertEqual(rc, 0, p.stderr())
        self.assertNotIn("PANIC", p.stderr().upper())
        self.assertTrue(seen)
        self.assertEqual(set(seen), {200})


# --- database threads ----------------------------------------------------------

class DbThreadTest(CacheTestBase):
    def test_hit_served_while_a_fill_sleeps(self):
        """One event loop, two database threads, a 2 s fill delay: a cache
        miss sleeps on a database thread while a hit for another key is
        served by the loop, before the miss is answered."""
        _, port = start_cached(self, self.db, [self.mc_port], "--threads",
                               "1", "--db-threads", "2",
                               "--debug-fill-delay-ms", "2000")
        self.assertEqual(get(port, "/products/1").header("x-cache"), "MISS")
        self.assertEqual(get(port, "/products/1").header("x-cache"), "HIT")
        jobs0 = stats(port)["db"]["jobs"]
        out = {}

        def cold():
            out["r"] = get(port, "/products/2")
            out["t"] = time.monotonic()

        t = threading.Thread(target=cold)
        t.start()
        try:
            # The miss is on a database thread once it counts as a job.
            deadline = time.monotonic() + 10 * SLOW
            while stats(port)["db"]["jobs"] == jobs0:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.01)
            hit = get(port, "/products/1")
            hit_t = time.monotonic()
        finally:
            t.join(30 * SLOW)
        self.assertEqual(hit.status, 200)
        self.assertEqual(hit.header("x-cache"), "HIT")
        self.assertEqual(out["r"].status, 200)
        self.assertEqual(out["r"].header("x-cache"), "MISS")
        self.assertLess(hit_t, out["t"], "the hit waited for the miss")
        st = stats(port)
        self.assertEqual(st["threads"], 1)
        self.assertEqual(st["db"]["threads"], 2)

    def test_every_path_keeps_to_the_phase_table(self):
        """One loop with a read batcher and two database threads: a batched
        miss (loop, batcher, database thread), a batched hit, a write
        straight to a database thread, a multi-get, a loop-only route and
        an error: every one answered, and no phase change refused."""
        p, port = start_cached(self, self.db, [self.mc_port], "--threads",
                               "1", "--db-threads", "2")
        self.assertEqual(get(port, "/products/3").header("x-cache"), "MISS")
        self.assertEqual(get(port, "/products/3").header("x-cache"), "HIT")
        self.assertEqual(get(port, "/categories/1/top").status, 200)
        self.assertEqual(put(port, "/products/3", {"stock": 9}).status, 200)
        self.assertEqual(get(port, "/products/3").header("x-cache"), "MISS")
        self.assertEqual(get(port, "/cached-queries?count=3").status, 200)
        self.assertEqual(get(port, "/plaintext").status, 200)
        self.assertEqual(get(port, "/nowhere").status, 404)
        self.assertEqual(stats(port)["phase_refused"], 0)
        self.assertNotIn("request phase", p.stderr())


# --- faults ------------------------------------------------------------------

class FaultTest(CacheTestBase):
    def test_memcached_killed_and_restarted(self):
        self.memcached_killed_and_restarted(batched=False)

    def test_memcached_killed_and_restarted_batched(self):
        self.memcached_killed_and_restarted(batched=True)

    def memcached_killed_and_restarted(self, batched):
        _, port = start_cached(self, self.db, [self.mc_port],
                               *([] if batched else ["--cache-batch", "0"]))
        for i in range(1, 21):
            get(port, "/products/%d" % i)
        self.assertEqual(get(port, "/products/5").header("x-cache"), "HIT")

        stop = threading.Event()
        seen = []   # (time, status, x-cache, seconds)

        def load():
            i = 0
            deadline = time.monotonic() + 60 * SLOW
            while not stop.is_set() and time.monotonic() < deadline:
                i = i % 20 + 1
                t0 = time.monotonic()
                try:
                    r = get(port, "/products/%d" % i, timeout=10)
                    seen.append((t0, r.status, r.header("x-cache"),
                                 time.monotonic() - t0))
                except OSError as e:
                    seen.append((t0, 0, repr(e), time.monotonic() - t0))

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3 * SLOW)
            t_kill = time.monotonic()
            self.mc.kill()       # SIGKILL: no goodbye to open connections
            self.mc.p.wait(5)
            time.sleep(1.0 * SLOW)
            h = get(port, "/healthz")
            self.assertEqual(h.status, 200)       # degraded is not unready
            self.assertEqual(h.json()["cache"], "degraded")
        finally:
            stop.set()
            for t in threads:
                t.join(30 * SLOW)
        self.assertTrue(seen)
        bad = [s for s in seen if s[1] >= 500 or s[1] == 0]
        self.assertEqual(bad, [], "errors while memcached died")
        after = [s for s in seen if s[0] > t_kill + 0.3 * SLOW]
        self.assertTrue(after)
        self.assertTrue(all(s[2] == "BYPASS" for s in after),
                        set(s[2] for s in after))
        slowest = max(s[3] for s in seen)
        self.assertLess(slowest, 2.0 * SLOW, "a request waited on memcached")
        st = stats(port)["cache"]
        self.assertGreater(st["bypasses"], 0)
        self.assertGreater(st["breaker_opens"], 0)

        # Writes still succeed (the delete fails, is retried and counted).
        r = put(port, "/products/5", {"stock": 77})
        self.assertEqual(r.status, 200)

        # Same port, new memcached: hits come back without a server restart.
        mc2, _ = hstest.start_memcached(port=self.mc_port)
        self.addCleanup(mc2.cleanup)
        r = self.wait_xcache(port, "/products/5", 200, "HIT", 15,
                             "no HIT after restart")
        self.assertEqual(r.json()["stock"], 77)
        self.assertEqual(get(port, "/healthz").json()["cache"], "ok")
        c = stats(port)["cache"]
        self.assertEqual(c["batch_keys"] > 0, batched, c["batch_keys"])


class BlockingFaultTest(FaultTest):
    """The same fault through blocking workers (--io blocking)."""
    IO = ("--io", "blocking")
    # No read batcher with blocking workers (test_server_io.py checks it).
    test_memcached_killed_and_restarted_batched = None


class OptionsTest(unittest.TestCase):
    def run_server(self, *args):
        return subprocess.run([SERVER] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=30 * SLOW,
                              stdin=subprocess.DEVNULL)

    def test_help_mentions_cache_options(self):
        r = self.run_server("--help")
        self.assertEqual(r.returncode, 0)
        out = r.stdout.decode()
        for opt in ("--memcached", "--cache", "lease", "naive",
                    "--cache-ttl", "--cache-batch", "--debug-fill-delay-ms",
                    "TESTS AND TALKS"):
            self.assertIn(opt, out)

    def test_bad_cache_options(self):
        for args in (["--cache", "lease"], ["--cache", "naive"],
                     ["--cache", "sometimes"], ["--memcached", ""],
                     ["--memcached", "nohostport"],
                     ["--memcached", "127.0.0.1:70000"],
                     ["--memcached", "127.0.0.1:1,,"],
                     ["--memcached", "127.0.0.1:1", "--cache", "on"],
                     ["--debug-fill-delay-ms", "-1"],
                     ["--debug-fill-delay-ms", "x"],
                     ["--cache-ttl", "0"], ["--cache-neg-ttl", "abc"],
                     ["--cache-batch", "1001"], ["--cache-batch", "-1"],
                     ["--cache-batch", "x"]):
            with self.subTest(args=args):
                r = self.run_server("--db", "/nonexistent/never-created.db",
                                    *args)
                self.assertEqual(r.returncode, 2, r.stderr)
                err = r.stderr.decode().strip()
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertTrue(err.startswith("hs-server: "), err)


if __name__ == "__main__":
    unittest.main()
