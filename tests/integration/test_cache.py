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
                                  *extra)
    testcase.addCleanup(p.cleanup)
    return p, port


class CacheTestBase(unittest.TestCase):
    # start_cached runs 4 worker threads: the read batcher takes reads once
    # more than 8 connections are open.  Idle ones held open switch it on.
    IDLE = 10

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

    def hold_connections(self, port, n=IDLE):
        """n idle connections, open until the test ends; returns once the
        server counts them."""
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), 5 * SLOW)
            self.addCleanup(s.close)
            socks.append(s)
        deadline = time.monotonic() + 10 * SLOW
        while stats(port)["connections"] < n:
            self.assertLess(time.monotonic(), deadline, "idle conns not seen")
            time.sleep(0.02)
        return socks


# --- basic behaviour ---------------------------------------------------------

class HitMissTest(CacheTestBase):
    def test_hit_after_miss_costs_no_db_work(self):
        _, port = start_cached(self, self.db, [self.mc_port])
        for path in ("/products/7", "/categories/1/top"):
            with self.subTest(path=path):
                r1 = get(port, path)
                self.assertEqual(r1.status, 200, r1.body)
                self.assertEqual(r1.header("x-cache"), "MISS")
                q0 = db_queries(port)
                r2 = get(port, path)
                self.assertEqual(r2.status, 200)
                self.assertEqual(r2.header("x-cache"), "HIT")
                self.assertEqual(r2.body, r1.body)
                self.assertEqual(r2.header("content-type"), "application/json")
                # The database was not touched by the hit.
                self.assertEqual(db_queries(port), q0)
                st = r2.header("server-timing")
                self.assertRegex(st, r"^cache;dur=[0-9.]+, db;dur=0\.000, "
                                     r"total;dur=[0-9.]+$")
        st = stats(port)
        self.assertEqual(st["cache_mode"], "lease")
        c = st["cache"]
        self.assertEqual(c["mode"], "lease")
        self.assertGreaterEqual(c["hits"], 2)
        self.assertGreaterEqual(c["misses"], 2)
        self.assertGreater(c["time_ms"], 0)
        for k in ("lease_wins", "lease_waits", "fills", "fill_conflicts",
                  "invalidations", "invalidation_retries", "errors",
                  "servers", "wait_ms", "batches", "batch_keys",
                  "batch_queue_ms", "resume_wait_ms"):
            self.assertIn(k, c)
        self.assertEqual(c["servers"][0]["breaker"], "closed")
        h = get(port, "/healthz").json()
        self.assertEqual(h["cache"], "ok")
        m = get(port, "/metrics").body.decode()
        self.assertRegex(m, r"(?m)^hs_cache_hits_total [1-9]")
        self.assertRegex(m, r"(?m)^hs_cache_time_seconds_total [0-9.]+$")
        self.assertRegex(m, r"(?m)^hs_cache_batch_queue_seconds_total [0-9.]+$")
        self.assertRegex(m, r"(?m)^hs_cache_resume_wait_seconds_total [0-9.]+$")
        self.assertRegex(m, r"(?m)^hs_cache_batches_total \d+$")
        self.assertRegex(m, r"(?m)^hs_open_connections \d+$")
        self.assertIn('cache="lease"', m)

    def test_default_mode_and_off(self):
        # --memcached alone means lease; --cache off ignores it.
        _, port = start_cached(self, self.db, [self.mc_port], "--cache", "off")
        r = get(port, "/products/3")
        self.assertEqual(r.header("x-cache"), "BYPASS")
        self.assertEqual(get(port, "/products/3").header("x-cache"), "BYPASS")
        self.assertEqual(stats(port)["cache"]["mode"], "off")
        self.assertEqual(get(port, "/healthz").json()["cache"], "off")
        self.assertEqual(mc_stats(self.mc_port)["curr_items"], "0")

    def test_naive_mode_hits_too(self):
        _, port = start_cached(self, self.db, [self.mc_port], "--cache",
                               "naive")
        self.assertEqual(get(port, "/products/9").header("x-cache"), "MISS")
        self.assertEqual(get(port, "/products/9").header("x-cache"), "HIT")
        self.assertEqual(stats(port)["cache"]["mode"], "naive")

    def test_negative_caching(self):
        _, port = start_cached(self, self.db, [self.mc_port],
                               "--cache-neg-ttl", "1")
        for path in ("/products/999999", "/categories/999/top"):
            with self.subTest(path=path):
                r1 = get(port, path)
                self.assertEqual(r1.status, 404)
                self.assertEqual(r1.header("x-cache"), "MISS")
                q0 = db_queries(port)
                r2 = get(port, path)
                self.assertEqual(r2.status, 404)
                self.assertEqual(r2.header("x-cache"), "HIT")
                self.assertEqual(r2.json(), r1.json())
                self.assertEqual(db_queries(port), q0)
        self.assertGreaterEqual(stats(port)["cache"]["negative_hits"], 2)
        # A 1 s negative TTL: the entry is gone within about 2 s.
        self.wait_xcache(port, "/products/999999", 404, "MISS", 5,
                         "negative entry never expired")

    def test_bad_requests_never_cached(self):
        # Bad ids are answered by the router, never stored.
        _, port = start_cached(self, self.db, [self.mc_port])
        r = get(port, "/products/abc")
        self.assertEqual(r.status, 400)
        self.assertIsNone(r.header("x-cache"))
        self.assertEqual(mc_stats(self.mc_port)["curr_items"], "0")

    def test_ttl_jitter_within_bounds(self):
        _, port = start_cached(self, self.db, [self.mc_port],
                               "--cache-ttl", "100")
        t0 = int(time.time())
        for i in range(1, 61):
            self.assertEqual(get(port, "/products/%d" % i).status, 200)
        t1 = int(time.time()) + 1
        exps = [e for k, e in mc_metadump(self.mc_port).items()
                if k.startswith("hs1:p:")]
        self.assertEqual(len(exps), 60)
        for e in exps:
            # ttl drawn from [90, 100] (10% jitter), set between t0 and t1.
            self.assertGreaterEqual(e, t0 + 90 - 1)
            self.assertLessEqual(e, t1 + 100)
        self.assertGreater(len(set(exps)), 3, "no jitter: %s" % exps)


# --- invalidation across servers ---------------------------------------------

class InvalidationTest(CacheTestBase):
    def setUp(self):
        super().setUp()
        _, self.a = start_cached(self, self.db, [self.mc_port])
        _, self.b = start_cached(self, self.db, [self.mc_port])

    def warm(self, path):
        get(self.b, path)
        r = get(self.b, path)
        self.assertEqual(r.header("x-cache"), "HIT")
        return r.json()

    def test_put_via_a_visible_via_b(self):
        before = self.warm("/products/11")
        for price in (101, 202, 303):
            r = put(self.a, "/products/11", {"price_cents": price})
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()["version"], before["version"] + 1)
            after = get(self.b, "/products/11")
            self.assertEqual(after.status, 200)
            self.assertEqual(after.header("x-cache"), "MISS")
            self.assertEqual(after.json()["version"], before["version"] + 1)
            self.assertEqual(after.json()["price_cents"], price)
            before = get(self.b, "/products/11").json()  # HIT again
        self.assertGreaterEqual(stats(self.a)["cache"]["invalidations"], 3)

    def test_review_via_a_updates_detail_and_top_via_b(self):
        top = self.warm("/categories/1/top")["top"]
        pid = top[0]["id"]
        detail = self.warm("/products/%d" % pid)
        r = hstest.request(self.a, "POST", "/products/%d/reviews" % pid,
                           body={"rating": 5, "body": "great"})
        self.assertEqual(r.status, 201, r.body)
        d2 = get(self.b, "/products/%d" % pid)
        self.assertEqual(d2.header("x-cache"), "MISS")
        s2 = d2.json()["review_summary"]
        self.assertEqual(s2["count"], detail["review_summary"]["count"] + 1)
        self.assertEqual(d2.json()["recent_reviews"][0]["body"], "great")
        t2 = get(self.b, "/categories/1/top")
        self.assertEqual(t2.header("x-cache"), "MISS")
        counts = {e["id"]: e["review_count"] for e in t2.json()["top"]}
        # A 5 on the best product keeps it in the top list.
        self.assertEqual(counts[pid], top[0]["review_count"] + 1)

    def test_delete_via_a_is_404_via_b(self):
        self.warm("/products/12")
        self.warm("/categories/1/top")
        r = hstest.request(self.a, "DELETE", "/products/12")
        self.assertEqual(r.status, 204)
        r = get(self.b, "/products/12")
        self.assertEqual(r.status, 404)
        self.assertEqual(get(self.b, "/categories/1/top").header("x-cache"),
                         "MISS")


# --- ketama ------------------------------------------------------------------

class KetamaTest(unittest.TestCase):
    def test_spread_over_three_servers(self):
        db = hstest.seeded_db(0.01)
        ports = []
        for _ in range(3):
            p, port = hstest.start_memcached()
            self.addCleanup(p.cleanup)
            ports.append(port)
        _, port = start_cached(self, db, ports)
        n = 300
        for i in range(1, n + 1):
            r = get(port, "/products/%d" % i)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("x-cache"), "MISS")
        items = [int(mc_stats(p)["curr_items"]) for p in ports]
        self.assertEqual(sum(items), n, items)
        for k in items:
            # An even share is 100; ketama (160 points a server) stays close.
            self.assertGreater(k, n * 0.15, items)
        # And every key is found again where it was put.
        for i in range(1, n + 1, 7):
            self.assertEqual(get(port, "/products/%d" % i).header("x-cache"),
                             "HIT")


# --- /cached-queries ---------------------------------------------------------

class CachedQueriesTest(CacheTestBase):
    def rows(self, port, arg, want_n):
        r = get(port, "/cached-queries" + arg)
        self.assertEqual(r.status, 200, r.body)
        j = r.json()
        self.assertIsInstance(j, list)
        self.assertEqual(len(j), want_n, arg)
        for o in j:
            self.assertEqual(sorted(o), ["id", "randomNumber"])
            self.assertTrue(1 <= o["id"] <= 10000)
            self.assertIsInstance(o["randomNumber"], int)
        return r, j

    def check_against_db(self, rows):
        con = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True,
                              timeout=10)
        try:
            for o in rows:
                (n,) = con.execute("SELECT randomNumber FROM world WHERE id=?",
                                   (o["id"],)).fetchone()
                self.assertEqual(o["randomNumber"], n, o)
        finally:
            con.close()

    def test_shape_clamping_hits_and_updates(self):
        _, port = start_cached(self, self.db, [self.mc_port])
        for arg, n in (("", 1), ("?count=", 1), ("?count=abc", 1),
                       ("?count=0", 1), ("?count=-5", 1), ("?count=7", 7),
                       ("?count=500", 500), ("?count=501", 500),
                       ("?count=99999999999999999999", 500)):
            with self.subTest(arg=arg):
                self.rows(port, arg, n)
        # Warm every world row: fills counts distinct keys stored.
        for _ in range(400):
            if stats(port)["cache"]["fills"] >= 10000:
                break
            self.rows(port, "?count=500", 500)
        self.assertGreaterEqual(stats(port)["cache"]["fills"], 10000)
        q0 = db_queries(port)
        r, rows = self.rows(port, "?count=500", 500)
        self.assertEqual(r.header("x-cache"), "HIT")
        self.assertEqual(db_queries(port), q0)
        self.check_against_db(rows)
        # /updates deletes the rows it changed: no stale number afterwards.
        u = get(port, "/updates?queries=500")
        self.assertEqual(u.status, 200)
        new = {o["id"]: o["randomNumber"] for o in u.json()}
        overlap = 0
        for _ in range(6):
            r, rows = self.rows(port, "?count=500", 500)
            for o in rows:
                if o["id"] in new:
                    overlap += 1
                    self.assertEqual(o["randomNumber"], new[o["id"]], o)
        self.assertGreater(overlap, 20)
        self.check_against_db(rows)

    def test_without_cache(self):
        _, port = hstest.start_server(self.db, "--cache", "off")
        r, rows = self.rows(port, "?count=20", 20)
        self.assertEqual(r.header("x-cache"), "BYPASS")
        self.check_against_db(rows)


# --- the stale-set race ------------------------------------------------------

class RaceTest(CacheTestBase):
    """A reader misses and reads version v; an update commits v+1 and deletes
    the key while the reader sleeps (--debug-fill-delay-ms) before storing.
    naive stores v over the delete: the next reads see a stale body.  lease:
    the update deleted the lease, the reader's cas fails, nothing stale."""

    DELAY_MS = int(600 * SLOW)

    def race(self, port, pid):
        first = {}

        def reader():
            first["r"] = get(port, "/products/%d" % pid)

        v0 = hstest.request(port, "PUT", "/products/%d" % pid,
                            body={"stock": 1}).json()["version"]
        # The PUT deleted nothing yet cached; the key is cold.
        t = threading.Thread(target=reader)
        t.start()
        time.sleep(self.DELAY_MS / 3000.0)   # the reader is in its fill delay
        r = put(port, "/products/%d" % pid, {"stock": 2})
        self.assertEqual(r.status, 200)
        acked = r.json()["version"]
        self.assertEqual(acked, v0 + 1)
        t.join(30 * SLOW)
        self.assertFalse(t.is_alive())
        self.assertEqual(first["r"].status, 200)
        self.assertEqual(first["r"].header("x-cache"), "MISS")
        after = get(port, "/products/%d" % pid)
        return acked, after

    def test_naive_serves_stale_lease_never(self):
        _, naive = start_cached(self, self.db, [self.mc_port], "--cache",
                                "naive", "--debug-fill-delay-ms",
                                str(self.DELAY_MS))
        _, lease = start_cached(self, self.db, [self.mc_port], "--cache",
                                "lease", "--debug-fill-delay-ms",
                                str(self.DELAY_MS))
        stale = 0
        for pid in (21, 22, 23):
            acked, after = self.race(naive, pid)
            if after.json()["version"] < acked:
                self.assertEqual(after.header("x-cache"), "HIT")
                stale += 1
        self.assertGreater(stale, 0, "naive never served a stale body")
        conflicts0 = stats(lease)["cache"]["fill_conflicts"]
        for pid in (31, 32, 33):
            acked, after = self.race(lease, pid)
            self.assertEqual(after.json()["version"], acked)
            self.assertEqual(after.json()["stock"], 2)
        self.assertGreaterEqual(stats(lease)["cache"]["fill_conflicts"] -
                                conflicts0, 1)
        print("\nrace: naive stale reads %d of 3, lease 0 of 3" % stale)


    def test_checker_finds_no_stale_read_with_leases(self):
        checker = hstest.binpath("hs-checker")
        if not os.access(checker, os.X_OK):
            self.skipTest("hs-checker is not built")
        _, port = start_cached(self, self.db, [self.mc_port], "--cache",
                               "lease", "--debug-fill-delay-ms", "20")
        r = subprocess.run([checker, "--url", "http://127.0.0.1:%d" % port,
                            "--hot", "2", "--readers", "4", "--writers", "1",
                            "--duration", "2", "--db", self.db, "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120 * SLOW)
        self.assertEqual(r.returncode, 0, r.stderr.decode()[-2000:])
        j = json.loads(r.stdout.decode().strip().splitlines()[-1])
        self.assertEqual(j["stale_reads"], 0)
        self.assertEqual(j["final_mismatches"], 0)
        self.assertGreater(j["reads"], 0)
        self.assertGreater(j["writes"], 0)


# --- herd --------------------------------------------------------------------

class HerdTest(CacheTestBase):
    N = 50

    def herd(self, port, pid):
        barrier = threading.Barrier(self.N)
        results = [None] * self.N

        def one(i):
            try:
                barrier.wait(10 * SLOW)
            except threading.BrokenBarrierError:
                pass
            results[i] = get(port, "/products/%d" % pid)

        q0 = db_queries(port)
        f0 = stats(port)["cache"]["fills"]
        threads = [threading.Thread(target=one, args=(i,))
                   for i in range(self.N)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60 * SLOW)
        bodies = set()
        for r in results:
            self.assertIsNotNone(r)
            self.assertEqual(r.status, 200)
            bodies.add(r.body)
        self.assertEqual(len(bodies), 1)
        st = stats(port)
        return st["db"]["queries"] - q0, st["cache"]["fills"] - f0, st

    def test_one_fill_for_fifty_readers(self):
        # A fixed window: lease losers wait at most 300 ms for the winner.
        args = ("--threads", "8", "--debug-fill-delay-ms", "100")
        _, port = start_cached(self, self.db, [self.mc_port], *args)
        # The DB cost of one product detail, from a lone cold read.
        q0 = db_queries(port)
        self.assertEqual(get(port, "/products/40").header("x-cache"), "MISS")
        one = db_queries(port) - q0
        self.assertGreater(one, 0)
        dq, fills, st = self.herd(port, 41)
        print("\nherd (lease): %d readers, %d DB queries (one detail = %d), "
              "%d fill(s), lease waits %d" % (self.N, dq, one, fills,
                                              st["cache"]["lease_waits"]))
        self.assertEqual(fills, 1)
        self.assertEqual(dq, one)

        _, nport = start_cached(self, self.db, [self.mc_port], "--cache",
                                "naive", *args)
        ndq, nfills, _ = self.herd(nport, 42)
        print("herd (naive): %d readers, %d DB queries, %d fills" %
              (self.N, ndq, nfills))
        self.assertGreater(nfills, 1)


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
        self.hold_connections(port)
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
        self.hold_connections(port)
        b0 = stats(port)["cache"]["batch_keys"]
        r = get(port, "/products/30")
        self.assertEqual(r.header("x-cache"), "MISS")
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

    def test_few_connections_read_on_their_own(self):
        _, port = start_cached(self, self.db, [self.mc_port])
        want = self.warm(port)
        before = stats(port)["cache"]
        for path in self.PATHS:
            r = get(port, path)
            self.assertEqual((r.status, r.header("x-cache")), (200, "HIT"))
            self.assertEqual(r.body, want[path])
        after = stats(port)["cache"]
        self.assertEqual(after["hits"] - before["hits"], len(self.PATHS))
        self.assertEqual(after["batch_keys"], before["batch_keys"])
        # Once enough connections are open, the same reads are batched.
        self.hold_connections(port)
        for path in self.PATHS:
            self.assertEqual(get(port, path).header("x-cache"), "HIT")
        self.assertEqual(stats(port)["cache"]["batch_keys"] -
                         after["batch_keys"], len(self.PATHS))

    def test_batch_off(self):
        _, port = start_cached(self, self.db, [self.mc_port],
                               "--cache-batch", "0")
        want = self.warm(port)
        self.hold_connections(port)
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
        self.hold_connections(port)
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


# --- faults ------------------------------------------------------------------

class FaultTest(CacheTestBase):
    def test_memcached_killed_and_restarted(self):
        self.memcached_killed_and_restarted(batched=False)

    def test_memcached_killed_and_restarted_batched(self):
        self.memcached_killed_and_restarted(batched=True)

    def memcached_killed_and_restarted(self, batched):
        _, port = start_cached(self, self.db, [self.mc_port],
                               *([] if batched else ["--cache-batch", "0"]))
        if batched:
            self.hold_connections(port)
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
