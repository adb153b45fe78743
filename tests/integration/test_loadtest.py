"""The load-test tools against real processes: every wrk script against a
real hs-server (no errors, the HSJSON line parsed, non-2xx really counted),
hs-checker against a real hs-server (0 stale reads) and against a small
HTTP server in this file that deliberately serves old versions (the checker
must catch it), and a quick bench-server run when nginx is installed."""

import csv
import http.server
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest

import hstest

WRK = shutil.which("wrk")
WRK_DIR = os.path.join(hstest.SRC, "loadtest", "wrk")
CHECKER = hstest.binpath("hs-checker")
SCALE = 0.01
PRODUCTS = 1000      # round(100000 * SCALE)
CATEGORIES = 1       # round(100 * SCALE)


def hsjson(out):
    for line in out.splitlines():
        if line.startswith("HSJSON "):
            return json.loads(line[len("HSJSON "):])
    raise AssertionError("no HSJSON line in:\n" + out)


def run(args, timeout=60, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout *
                          hstest.SLOW, stdin=subprocess.DEVNULL, env=e)


class FakeProducts(hstest.FakeHTTP):
    """A tiny threaded HTTP/1.1 server with products 1..n that honours PUT
    (version + 1, acknowledged in the body) but, when stale is set, keeps
    serving each product's previous version to GETs: a cache that missed
    its invalidation.  Used to prove that the checker sees staleness."""

    def __init__(self, n=4, stale=False, fail_puts=False):
        self.stale = stale
        self.fail_puts = fail_puts
        self.lock = threading.Lock()
        self.version = {i: 1 for i in range(1, n + 1)}
        self.prev = dict(self.version)
        self.price = {i: 100 for i in range(1, n + 1)}
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def product_id(self):
                m = re.match(r"^/products/(\d+)$", self.path)
                if m and int(m.group(1)) in fake.version:
                    return int(m.group(1))
                return None

            def do_GET(self):
                pid = self.product_id()
                if pid is None:
                    return self.reply(404, {"error": "product not found",
                                            "status": 404})
                with fake.lock:
                    v = fake.prev[pid] if fake.stale else fake.version[pid]
                    price = fake.price[pid]
                self.reply(200, {"id": pid, "name": "p%d" % pid,
                                 "price_cents": price, "stock": 1,
                                 "version": v})

            def do_PUT(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                pid = self.product_id()
                if pid is None:
                    return self.reply(404, {"error": "product not found",
                                            "status": 404})
                if fake.fail_puts:
                    return self.reply(503, {"error": "busy", "status": 503})
                with fake.lock:
                    fake.prev[pid] = fake.version[pid]
                    fake.version[pid] += 1
                    fake.price[pid] = body.get("price_cents", 0)
                    v = fake.version[pid]
                self.reply(200, {"id": pid, "name": "p%d" % pid,
                                 "price_cents": body.get("price_cents", 0),
                                 "stock": 1, "version": v})

        self.serve(Handler)


class LoadtestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hs-loadtest-")
        cls.db = hstest.seeded_db(SCALE, cls.tmp)
        cls.srv, cls.port = hstest.start_server(cls.db, "--threads", "2",
                                                "--log-level", "warn")
        cls.url = "http://127.0.0.1:%d" % cls.port

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert rc == 0, "hs-server exited with %s" % rc

    # ------------------------------------------------------------ wrk

    def wrk(self, script, *args, duration=1, env=None):
        cmd = [WRK, "-t2", "-c8", "-d%ds" % duration, "--latency",
               "-s", os.path.join(WRK_DIR, script), self.url]
        if args:
            cmd += ["--"] + list(args)
        r = run(cmd, timeout=duration + 30, env=env)
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, "%s failed:\n%s\n%s" %
                         (script, out, r.stderr.decode()))
        return hsjson(out)

    def assertClean(self, j):
        self.assertGreater(j["requests"], 0, j)
        self.assertEqual(j["errors"], 0, j)
        self.assertEqual(j["non2xx"], 0, j)
        self.assertGreater(j["rps"], 0, j)
        # Latency was recorded and is ordered.  wrk 4.1's percentile() now
        # and then answers 0 for the percentiles of a pipelined run (seen
        # in CI: p50 931 us, p90 0, p99 0, max 42661 us; and once p50, p90
        # and p99 all 0 with max 12187 us and mean 445 us), so a pipelined
        # run is checked against max and mean, which it always fills in.
        self.assertGreater(j["max_us"], 0, j)
        self.assertGreater(j["mean_us"], 0, j)
        if j.get("options", {}).get("pipeline", 1) <= 1:
            self.assertGreater(j["p50_us"], 0, j)
        self.assertGreaterEqual(j["max_us"], j["p50_us"], j)
        if j["p99_us"]:
            self.assertGreaterEqual(j["p99_us"], j["p50_us"], j)

    @unittest.skipUnless(WRK, "wrk is not installed (./hammerstack setup)")
    def test_read_mix(self):
        j = self.wrk("read-mix.lua", "products=%d" % PRODUCTS,
                     "categories=%d" % CATEGORIES, "top=0.2")
        self.assertClean(j)
        self.assertEqual(j["script"], "read-mix")
        self.assertGreater(j["kinds"].get("product", 0), 0, j)
        self.assertGreater(j["kinds"].get("top", 0), 0, j)
        self.assertEqual(j["options"]["products"], PRODUCTS)

    @unittest.skipUnless(WRK, "wrk is not installed (./hammerstack setup)")
    def test_options_from_environment(self):
        # HSWRK_KEY sets a default; key=value after "--" overrides it.
        env = {"HSWRK_TOP": "1", "HSWRK_CATEGORIES": str(CATEGORIES),
               "HSWRK_PRODUCTS": "5"}
        j = self.wrk("read-mix.lua", env=env)
        self.assertClean(j)
        self.assertEqual(set(j["kinds"]), {"top"}, j)
        j = self.wrk("read-mix.lua", "top=0", env=env)
        self.assertClean(j)
        self.assertEqual(set(j["kinds"]), {"product"}, j)
        self.assertEqual(j["options"]["products"], 5)

    @unittest.skipUnless(WRK, "wrk is not installed (./hammerstack setup)")
    def test_update_mix(self):
        j = self.wrk("update-mix.lua", "products=%d" % PRODUCTS,
                     "categories=%d" % CATEGORIES, "put=0.2", "review=0.2")
        self.assertClean(j)
        for kind in ("product", "top", "put", "review"):
            self.assertGreater(j["kinds"].get(kind, 0), 0, (kind, j))

    @unittest.skipUnless(WRK, "wrk is not installed (./hammerstack setup)")
    def test_hot_key(self):
        before = hstest.request(self.port, "GET", "/products/7").json()
        j = self.wrk("hot-key.lua", "id=7", "put=0.05")
        self.assertClean(j)
        self.assertGreater(j["kinds"].get("put", 0), 0, j)
        after = hstest.request(self.port, "GET", "/products/7").json()
        self.assertGreater(after["version"], before["version"])

    @unittest.skipUnless(WRK, "wrk is not installed (./hammerstack setup)")
    def test_techempower(self):
        for script, args in (("db.lua", ()), ("queries.lua", ("queries=5",)),
                             ("updates.lua", ("queries=3",)),
                             ("json.lua", ()),
                             ("plaintext.lua", ("pipeline=4",)),
                             ("techempower.lua", ("test=db",))):
            with self.subTest(script=script):
                j = self.wrk(script, *args)
                self.assertClean(j)

    @unittest.skipUnless(WRK, "wrk is not installed (./hammerstack setup)")
    def test_non2xx_are_counted(self):
        # Twice the seeded range: about half the ids are 404s, and the
        # summary must say so rather than report a clean run.
        j = self.wrk("read-mix.lua", "products=%d" % (PRODUCTS * 2),
                     "categories=%d" % CATEGORIES, "top=0", "scatter=1")
        self.assertGreater(j["non2xx"], 0, j)
        self.assertGreater(j["status_4xx"], 0, j)
        self.assertEqual(j["non2xx"], j["status_4xx"], j)
        self.assertTrue(j["status_counted"])
        # Without the response() hook wrk's own count of >= 400 is used.
        j = self.wrk("read-mix.lua", "products=%d" % (PRODUCTS * 2),
                     "categories=%d" % CATEGORIES, "top=0", "count=0")
        self.assertFalse(j["status_counted"])
        self.assertGreater(j["non2xx"], 0, j)
        self.assertLess(j["non2xx"], j["requests"], j)

    @unittest.skipUnless(WRK, "wrk is not installed (./hammerstack setup)")
    def test_unknown_option_fails(self):
        r = run([WRK, "-t1", "-c1", "-d1s", "-s",
                 os.path.join(WRK_DIR, "read-mix.lua"), self.url, "--",
                 "prodcts=10"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"unknown option 'prodcts'", r.stdout + r.stderr)

    # -------------------------------------------------------- checker

    def checker(self, url, *args, duration="1.5"):
        r = run([CHECKER, "--url", url, "--duration", duration,
                 "--settle-ms", "100", "--json"] + list(args), timeout=60)
        out = r.stdout.decode("utf-8", "replace")
        err = r.stderr.decode("utf-8", "replace")
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        self.assertEqual(len(lines), 1, "stdout:\n%s\nstderr:\n%s" %
                         (out, err))
        return r.returncode, json.loads(lines[0]), err

    def test_checker_real_server_consistent(self):
        rc, j, err = self.checker(self.url, "--hot", "4", "--readers", "6",
                                  "--writers", "2", "--db", self.db)
        self.assertEqual(rc, 0, err)
        self.assertEqual(j["result"], "ok")
        self.assertEqual(j["stale_reads"], 0, err)
        self.assertEqual(j["final_mismatches"], 0, err)
        self.assertTrue(j["db_checked"])
        self.assertEqual(j["final_checked"], 4)
        self.assertGreater(j["reads"], 0)
        self.assertGreater(j["writes"], 0)
        self.assertEqual(j["read_errors"] + j["read_bad"], 0, err)
        self.assertEqual(j["write_errors"], 0, err)
        self.assertIn("stale reads 0", err)
        # The writes really landed: the database has moved on.
        with sqlite3.connect(self.db) as c:
            v = c.execute("SELECT version FROM products WHERE id = 1"
                          ).fetchone()[0]
        self.assertGreater(v, 1)

    @unittest.skipUnless(shutil.which("memcached") or
                         os.access("/usr/bin/memcached", os.X_OK),
                         "memcached is not installed (./hammerstack setup)")
    def test_checker_cache_naive_stale_lease_clean(self):
        # The stale-set race widened by the server's fill delay: the naive
        # cache must show stale reads to the checker, the lease cache none.
        # One product written every ~10 ms while each fill sleeps 50 ms:
        # nearly every naive fill overlaps an update and stores a body that
        # is already old, which readers then hit.
        mc, mc_port = hstest.start_memcached()
        try:
            results = {}
            for mode, product in (("naive", "11"), ("lease", "21")):
                db = hstest.seeded_db(SCALE)
                # More database threads than checker connections, so that
                # a fill asleep in its delay never holds up another request.
                # (With fills on the event loops, every connection that
                # lands on a sleeping loop waits: if the writer shares a
                # loop with readers, its writes queue behind their fills
                # and never land inside a fill's window.)
                # --durability normal: the race needs writes every ~10 ms,
                # and an fsync per commit on a busy disk can take 300 ms.
                srv, port = hstest.start_server(
                    db, "--threads", "2", "--db-threads", "16",
                    "--log-level", "warn",
                    "--memcached", "127.0.0.1:%d" % mc_port,
                    "--cache", mode, "--debug-fill-delay-ms", "50",
                    "--durability", "normal")
                try:
                    # Another product per mode: memcached is shared.
                    results[mode] = self.checker(
                        "http://127.0.0.1:%d" % port, "--products", product,
                        "--readers", "8", "--writers", "1",
                        "--write-interval-ms", "10", "--db", db,
                        duration="2")
                finally:
                    self.assertEqual(srv.stop(), 0)
                    srv.cleanup()
        finally:
            mc.cleanup()
        rc, j, err = results["naive"]
        self.assertEqual(rc, 1, err)
        self.assertGreater(j["stale_reads"], 0, err)
        self.assertGreater(j["writes"], 0, err)
        rc, j, err = results["lease"]
        self.assertEqual(rc, 0, err)
        self.assertEqual(j["stale_reads"], 0, err)
        self.assertEqual(j["final_mismatches"], 0, err)
        self.assertGreater(j["reads"], 0, err)
        self.assertGreater(j["writes"], 0, err)
        print("\nchecker: naive %d stale reads of %d, lease 0 of %d" %
              (results["naive"][1]["stale_reads"],
               results["naive"][1]["reads"], j["reads"]))

    def test_checker_catches_stale_reads(self):
        with FakeProducts(n=3, stale=True) as fake:
            rc, j, err = self.checker("http://127.0.0.1:%d" % fake.port,
                                      "--hot", "3", "--readers", "4",
                                      "--writers", "2", duration="1")
        self.assertEqual(rc, 1, err)
        self.assertEqual(j["result"], "stale")
        self.assertGreater(j["stale_reads"], 0, err)
        self.assertGreaterEqual(j["max_staleness"], 1)
        # The last state is one version behind for every product written.
        self.assertGreater(j["final_behind"], 0, err)
        self.assertIn("e.g. product", err)

    def test_checker_progress_lines(self):
        # --progress-ms: one well-formed JSON line per interval during the
        # load (the dashboard's live stale-read tile), then the summary.
        # Against the stale fake, so stale_reads must show up in them.
        self.assertIn("--progress-ms N",
                      run([CHECKER, "--help"]).stdout.decode())
        self.assertEqual(run([CHECKER, "--progress-ms", "5"]).returncode, 2)
        with FakeProducts(n=3, stale=True) as fake:
            t0 = time.time()
            r = run([CHECKER, "--url", "http://127.0.0.1:%d" % fake.port,
                     "--hot", "3", "--readers", "3", "--writers", "1",
                     "--duration", "1.6", "--settle-ms", "0", "--json",
                     "--progress-ms", "200"], timeout=60)
            t1 = time.time()
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 1, r.stderr)
        lines = [json.loads(ln) for ln in out.splitlines()]
        prog = [j for j in lines if j.get("progress") is True]
        final = [j for j in lines if "progress" not in j]
        self.assertEqual(len(final), 1, out)
        self.assertEqual(lines[-1], final[0], "the summary comes last")
        # ~8 intervals in 1.6 s; at least a few even on a loaded machine.
        self.assertGreaterEqual(len(prog), 3, out)
        self.assertLessEqual(len(prog), 9, out)
        keys = {"t", "elapsed_s", "reads", "writes", "stale_reads", "errors",
                "interval_reads", "interval_writes", "interval_read_p50_us",
                "interval_read_p99_us", "interval_write_p50_us",
                "interval_write_p99_us"}
        prev = None
        for j in prog:
            self.assertEqual(set(j) - {"progress"}, keys, j)
            self.assertTrue(all(isinstance(j[k], (int, float)) for k in keys))
            self.assertTrue(t0 - 1 <= j["t"] <= t1 + 1, j)
            self.assertLessEqual(j["interval_read_p50_us"],
                                 j["interval_read_p99_us"])
            if prev:
                # Running totals never go back; the interval counts are
                # the differences.
                for k in ("t", "elapsed_s", "reads", "writes",
                          "stale_reads"):
                    self.assertGreaterEqual(j[k], prev[k], (prev, j))
                self.assertEqual(j["interval_reads"],
                                 j["reads"] - prev["reads"])
            prev = j
        self.assertEqual(sum(j["interval_reads"] for j in prog),
                         prog[-1]["reads"])
        # The last line covers the whole load: it agrees with the summary.
        self.assertEqual(prog[-1]["reads"], final[0]["reads"], out)
        self.assertEqual(prog[-1]["stale_reads"], final[0]["stale_reads"])
        self.assertGreater(prog[-1]["stale_reads"], 0, out)
        self.assertGreater(prog[-1]["interval_read_p99_us"], 0, out)
        # Without the option: no progress line at all (checker() asserts
        # a single JSON line).
        with FakeProducts(n=2) as fake:
            self.checker("http://127.0.0.1:%d" % fake.port, "--hot", "2",
                         duration="0.3")

    def test_checker_honest_fake_passes(self):
        # The same server without the bug: proves the previous test fails
        # because of the staleness, not because of the fake.
        with FakeProducts(n=3, stale=False) as fake:
            rc, j, err = self.checker("http://127.0.0.1:%d" % fake.port,
                                      "--hot", "3", "--readers", "4",
                                      "--writers", "2", duration="1")
        self.assertEqual(rc, 0, err)
        self.assertEqual(j["stale_reads"], 0, err)
        self.assertGreater(j["writes"], 0)

    def test_checker_nothing_written_is_not_a_pass(self):
        # Every PUT fails: no acknowledged update, so no read could be
        # stale; the checker must say it proved nothing, not "ok".
        with FakeProducts(n=2, fail_puts=True) as fake:
            rc, j, err = self.checker("http://127.0.0.1:%d" % fake.port,
                                      "--hot", "2", "--readers", "2",
                                      "--writers", "1", duration="0.5")
        self.assertEqual(rc, 1, err)
        self.assertEqual(j["result"], "inconclusive")
        self.assertEqual(j["writes"], 0)
        self.assertGreater(j["write_errors"], 0)
        self.assertGreater(j["reads"], 0)

    def test_checker_database_mismatch(self):
        # The URL serves version 1 of products 1..2; the database says 5
        # for product 2: the final check must flag exactly that product.
        path = os.path.join(self.tmp, "mismatch.db")
        with sqlite3.connect(path) as c:
            c.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, "
                      "name TEXT, price_cents INTEGER, stock INTEGER, "
                      "version INTEGER)")
            c.execute("INSERT INTO products VALUES (1, 'p1', 100, 1, 1)")
            c.execute("INSERT INTO products VALUES (2, 'p2', 100, 1, 5)")
        with FakeProducts(n=2) as fake:
            rc, j, err = self.checker("http://127.0.0.1:%d" % fake.port,
                                      "--products", "1,2", "--readers", "2",
                                      "--writers", "0", "--db", path,
                                      duration="0.5")
        self.assertEqual(rc, 1, err)
        self.assertEqual(j["stale_reads"], 0)
        self.assertEqual(j["final_db_differs"], 1, err)
        self.assertEqual(j["final_mismatches"], 1, err)
        self.assertIn("product 2", err)

    def test_checker_usage(self):
        self.assertEqual(run([CHECKER, "--help"]).returncode, 0)
        for args in (["--bogus"], ["--hot", "0"], ["--readers", "x"],
                     ["--url", "ftp://x:1"], ["--url", "http://127.0.0.1"],
                     ["--products", "1,,a"], ["--duration", "-1"],
                     ["--readers", "0", "--writers", "0"], ["extra"]):
            with self.subTest(args=args):
                r = run([CHECKER] + args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertTrue(r.stderr.startswith(b"hs-checker: "),
                                r.stderr)
        # A product that does not exist, and a port nobody listens on.
        r = run([CHECKER, "--url", self.url, "--products", "1,99999999",
                 "--duration", "0.2"])
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"99999999", r.stderr)
        r = run([CHECKER, "--url", "http://127.0.0.1:%d" % hstest.free_port(),
                 "--duration", "0.2", "--timeout-ms", "1000"])
        self.assertEqual(r.returncode, 2)

    # ---------------------------------------------------- bench-server

    @unittest.skipUnless(WRK, "wrk is not installed (./hammerstack setup)")
    @unittest.skipUnless(shutil.which("nginx") or
                         os.access("/usr/sbin/nginx", os.X_OK),
                         "nginx is not installed (./hammerstack setup "
                         "--bench installs nginx-light): bench-server "
                         "not run")
    def test_bench_server_quick(self):
        db = hstest.seeded_db(SCALE)
        out_csv = os.path.join(self.tmp, "bench.csv")
        r = run([os.path.join(hstest.SRC, "loadtest", "bench-server"),
                 "--quick", "--no-install", "--bin", hstest.BIN,
                 "--db", db, "--scale", str(SCALE), "--connections", "16",
                 "--csv", out_csv], timeout=120)
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out + r.stderr.decode())
        m = re.search(r"^ratio hs-server/nginx \(median req/s\): ([\d.]+)",
                      out, re.M)
        self.assertTrue(m, out)
        self.assertGreater(float(m.group(1)), 0)
        self.assertIn("GET /products/{id}", out)
        self.assertIn("GET /categories/{id}/top", out)
        with open(out_csv) as f:
            rows = list(csv.DictReader(f))
        sections = {(x["section"], x["target"], x["round"]) for x in rows}
        for key in (("plaintext", "nginx", "1"), ("plaintext", "hs-server",
                                                   "1"),
                    ("plaintext", "ratio", "median"),
                    ("db", "GET /products/{id}", "median"),
                    ("db", "GET /categories/{id}/top", "median")):
            self.assertIn(key, sections)
        for x in rows:
            if x["target"] != "ratio":
                self.assertGreater(float(x["rps"]), 0, x)
                self.assertEqual(x["errors"], "0", x)
                self.assertEqual(x["non2xx"], "0", x)
        # bench-server left nothing listening on the ports it used.
        ports = [int(p) for p in re.findall(r"\) on :(\d+)", out)]
        self.assertEqual(len(ports), 3, out)
        for port in ports:
            with self.assertRaises(OSError, msg="port %d still open" % port):
                socket.create_connection(("127.0.0.1", port), 1).close()


if __name__ == "__main__":
    unittest.main()
