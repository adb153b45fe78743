"""hs-load, the open-loop load generator, against a tiny threaded HTTP/1.1
server in this file that records every request and can freeze itself on
every Nth one: the corrected percentiles show the requests scheduled during
a freeze and the uncorrected ones do not; the request mixes match the wrk
scripts' (routes, shares and hot ids, via wrk against the same server);
chunked and closing answers are framed; the sweep writes its CSV; bad
options and a refused connection fail clearly; SIGINT prints the partial
result.  Runs are short; timing is never asserted as performance."""

import collections
import csv
import http.server
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import hstest

HSLOAD = hstest.binpath("hs-load")
WRK = shutil.which("wrk")
WRK_DIR = os.path.join(hstest.SRC, "loadtest", "wrk")


def hsjson(out):
    lines = [l for l in out.splitlines() if l.startswith("HSJSON ")]
    if not lines:
        raise AssertionError("no HSJSON line in:\n" + out)
    # The HSJSON line is the last line of the output.
    assert out.rstrip("\n").splitlines()[-1] == lines[-1], out
    return json.loads(lines[-1][len("HSJSON "):])


def run(args, timeout=60):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=timeout * hstest.SLOW)
    return (r.returncode, r.stdout.decode("utf-8", "replace"),
            r.stderr.decode("utf-8", "replace"))


class TestServer(hstest.FakeHTTP):
    """A threaded keep-alive HTTP/1.1 server that records "METHOD PATH" and
    the body of every request.  With stall_every N, the Nth, 2Nth...
    request holds the server's one lock for stall_s seconds, so the whole
    server freezes (as a stop-the-world pause would).  chunked answers with
    Transfer-Encoding: chunked; close_every N closes after every Nth answer
    (Connection: close)."""

    def __init__(self, stall_every=0, stall_s=0.0, chunked=False,
                 close_every=0):
        self.lock = threading.Lock()
        self.seen = []       # (method, path, body)
        self.peers = collections.Counter()  # requests per client port
        self.count = 0
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                # Headers and body go out in two writes: without this,
                # Nagle and the client's delayed ACK add 40 ms to each.
                self.connection.setsockopt(socket.IPPROTO_TCP,
                                           socket.TCP_NODELAY, 1)

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with srv.lock:
                    srv.count += 1
                    k = srv.count
                    srv.seen.append((self.command, self.path, body))
                    srv.peers[self.client_address[1]] += 1
                    if stall_every and k % stall_every == 0:
                        time.sleep(stall_s)
                data = b'{"ok":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if close_every and k % close_every == 0:
                    self.send_header("Connection", "close")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" %
                                     (len(data), data))
                else:
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = handle_any

        self.serve(Handler)


def share_tolerance(p, n, m):
    """How far two sample shares of a true share p may differ: 4 standard
    deviations of each sample, plus a little for the estimate of p."""
    p = min(max(p, 0.001), 0.999)
    return 4 * math.sqrt(p * (1 - p) / n) + \
        4 * math.sqrt(p * (1 - p) / m) + 0.005


class HsLoadTest(unittest.TestCase):

    def hsload(self, *args, timeout=60, expect=0):
        rc, out, err = run([HSLOAD] + [str(a) for a in args], timeout)
        self.assertEqual(rc, expect, "hs-load %s exited %d:\n%s\n%s" %
                         (" ".join(map(str, args)), rc, out, err))
        return out, err

    # ------------------------------------------------ coordinated omission

    def test_stall_shows_in_corrected_not_uncorrected(self):
        # 200 req/s for 3 s; every 80th request freezes the server for
        # 300 ms, so 300 ms of every 400 ms cycle are frozen and ~60 requests
        # a cycle are scheduled during a freeze.  With two connections they
        # wait in hs-load and go out late: timed from their planned send
        # (corrected) they carry the freeze, from their actual send they
        # look fast.  The expected corrected p50 is ~100 ms, p90 ~260 ms.
        with TestServer(stall_every=80, stall_s=0.3) as s:
            out, _ = self.hsload(s.url + "/plaintext", "--rate", 200,
                                 "--duration", 3, "--warmup", 0,
                                 "--connections", 2)
        j = hsjson(out)
        self.assertEqual(j["errors"], 0, j)
        self.assertEqual(j["non2xx"], 0, j)
        self.assertEqual(j["offered_rps"], 200, j)
        # The offered rate holds (loosely: only the end may be cut off).
        self.assertGreaterEqual(j["achieved_rps"], 200 * 0.7, j)
        self.assertGreaterEqual(j["requests"], 600 * 0.7, j)
        self.assertGreaterEqual(j["p50_us"], 30000, j)
        self.assertGreaterEqual(j["p90_us"], 100000, j)
        self.assertGreaterEqual(j["max_us"], 250000, j)
        # Only the few requests in flight when a freeze starts see it
        # from their actual send.
        self.assertLess(j["uncorrected_p50_us"] * 3, j["p50_us"], j)
        self.assertLess(j["uncorrected_p90_us"] * 2, j["p90_us"], j)
        self.assertGreater(j["late"], 100, j)
        for k in ("p50_us", "p90_us", "p99_us", "p999_us"):
            self.assertLessEqual(j[k], j["max_us"], (k, j))
        self.assertLessEqual(j["p50_us"], j["p90_us"])
        self.assertLessEqual(j["p90_us"], j["p99_us"])

    def test_progress_lines_per_interval(self):
        # --progress-ms: one JSON line per interval of what was answered
        # in it alone.  One freeze of 0.6 s at the 200th of 380 requests
        # (~2 s): the intervals around it carry it, a later one is fast
        # again (a cumulative percentile never comes back down); the
        # HSJSON line stays last.
        self.assertIn("--progress-ms N", self.hsload("--help")[0])
        with TestServer(stall_every=200, stall_s=0.6) as s:
            out, _ = self.hsload(s.url + "/plaintext", "--rate", 100,
                                 "--duration", 3.8, "--warmup", 0,
                                 "--connections", 2, "--progress-ms", 500,
                                 "--quiet")
        j = hsjson(out)
        prog = [json.loads(x) for x in out.splitlines()
                if x.startswith('{"progress":true,')]
        self.assertGreaterEqual(len(prog), 5, out)
        keys = {"progress", "t", "elapsed_s", "phase", "measuring",
                "offered_rps", "answers", "lost", "interval_answers",
                "interval_lost", "interval_p50_us", "interval_p99_us",
                "interval_max_us"}
        for a, b in zip(prog, prog[1:]):
            self.assertEqual(set(b), keys, b)
            self.assertGreater(b["t"], a["t"])
            self.assertEqual(b["answers"] - a["answers"],
                             b["interval_answers"], (a, b))
        self.assertEqual(sum(p["interval_answers"] for p in prog),
                         prog[-1]["answers"])
        self.assertGreaterEqual(prog[-1]["answers"], j["requests"])
        self.assertEqual(prog[-1]["lost"], 0)
        p99 = [p["interval_p99_us"] for p in prog if p["interval_answers"]]
        peak = max(p99)
        self.assertGreaterEqual(peak, 300000, p99)
        after = p99[p99.index(peak) + 1:]
        self.assertTrue(after and min(after) < peak / 4, p99)
        self.assertGreaterEqual(j["max_us"], 300000, j)
        # Bad values are refused.
        rc, _, err = run([HSLOAD, s.url, "--rate", "1", "--progress-ms",
                          "5"])
        self.assertEqual(rc, 2, err)
        self.assertIn("--progress-ms", err)

    def test_no_stall_corrected_close_to_uncorrected(self):
        # The same server without freezes: both views agree that it is
        # fast (the control for the test above).
        with TestServer() as s:
            out, _ = self.hsload(s.url + "/plaintext", "--rate", 200,
                                 "--duration", 1.5, "--warmup", 0,
                                 "--connections", 2)
        j = hsjson(out)
        self.assertEqual(j["errors"], 0, j)
        self.assertGreaterEqual(j["requests"], 300 * 0.7, j)
        self.assertLess(j["p50_us"], 30000 * hstest.SLOW, j)

    # ------------------------------------------------ per-connection clients

    def test_per_connection_each_client_its_own_schedule(self):
        # 8 clients at 80 req/s in all: each connection carries its own
        # 10 req/s (about 20 requests in 2 s), where the shared pool would
        # send most requests on the one or two connections that are idle.
        with TestServer() as s:
            out, _ = self.hsload(s.url + "/plaintext", "--rate", 80,
                                 "--duration", 2, "--warmup", 0,
                                 "--connections", 8, "--per-connection")
            peers = dict(s.peers)
        j = hsjson(out)
        self.assertEqual(j["schedule"], "per-connection", j)
        self.assertEqual(j["errors"], 0, j)
        self.assertEqual(j["connections"], 8, j)
        self.assertEqual((j["clients_answered"], j["clients_starved"]),
                         (8, 0), j)
        self.assertEqual(len(peers), 8, peers)
        for port, n in peers.items():
            self.assertTrue(15 <= n <= 25, (port, n, peers))
        self.assertIn("clients answered at least once 8, never answered 0",
                      out)

    def per_connection_against(self, io):
        # /plaintext from 6 keep-alive clients at 20 req/s each to a server
        # with 2 workers or 2 event loops.
        p, port = hstest.start_server(hstest.seeded_db(0.01), "--io", io,
                                      "--threads", "2")
        self.addCleanup(p.cleanup)
        out, _ = self.hsload("http://127.0.0.1:%d/plaintext" % port,
                             "--rate", 120, "--duration", 3, "--warmup", 0,
                             "--connections", 6, "--per-connection",
                             "--timeout", 2 * hstest.SLOW, timeout=120)
        return hsjson(out)

    def test_per_connection_counts_clients_a_blocking_pool_never_serves(self):
        # Two blocking workers, each held by the first client it accepted
        # (they never close): the other four wait in the listen backlog
        # for the whole run and every request they plan times out.
        j = self.per_connection_against("blocking")
        self.assertEqual((j["clients_answered"], j["clients_starved"]),
                         (2, 4), j)
        self.assertGreater(j["err_timeout"], 0, j)
        self.assertEqual(j["non2xx"], 0, j)
        # The control: event loops answer every client.
        j = self.per_connection_against("event")
        self.assertEqual((j["clients_answered"], j["clients_starved"]),
                         (6, 0), j)
        self.assertEqual(j["errors"], 0, j)

    # ------------------------------------------------ framing, pool

    def test_chunked_and_closing_answers(self):
        with TestServer(chunked=True, close_every=3) as s:
            out, _ = self.hsload(s.url + "/x?y=1", "--rate", 100,
                                 "--duration", 1, "--warmup", 0,
                                 "--arrival", "poisson")
            paths = {p for _, p, _ in s.seen}
        j = hsjson(out)
        self.assertEqual(j["errors"], 0, j)
        self.assertEqual(j["s2xx"], j["requests"], j)
        self.assertGreater(j["requests"], 30, j)
        # Every third answer closed its connection: new ones were opened.
        self.assertGreater(j["connections"], j["requests"] // 3 - 2, j)
        self.assertEqual(paths, {"/x?y=1"})
        self.assertEqual(j["arrival"], "poisson")

    def test_update_mix_sends_json_bodies(self):
        with TestServer() as s:
            out, _ = self.hsload(s.url, "--mix", "update", "--rate", 300,
                                 "--duration", 1, "--warmup", 0,
                                 "--products", 50, "--categories", 5,
                                 "--put", 0.3, "--review", 0.3)
            seen = list(s.seen)
        j = hsjson(out)
        self.assertEqual(j["errors"], 0, j)
        self.assertEqual(sum(j["kinds"].values()), j["requests"], j)
        writes = [(m, p, b) for m, p, b in seen if m != "GET"]
        self.assertGreater(len(writes), 20)
        for m, p, b in writes:
            obj = json.loads(b)
            if m == "PUT":
                self.assertRegex(p, r"^/products/\d+$")
                self.assertIn("price_cents", obj)
            else:
                self.assertRegex(p, r"^/products/\d+/reviews$")
                self.assertIn(obj["rating"], range(1, 6))

    def test_sweep_writes_csv(self):
        tmp = tempfile.mkdtemp(prefix="hs-load-test-")
        path = os.path.join(tmp, "sweep.csv")
        try:
            with TestServer() as s:
                out, _ = self.hsload(s.url + "/", "--sweep", "50,100",
                                     "--duration", 0.5, "--warmup", 0.2,
                                     "--out", path)
            progress = [l for l in out.splitlines()
                        if l.startswith("point ")]
            self.assertEqual(len(progress), 2, out)
            self.assertIn("point 2/2: offered 100 req/s", progress[1])
            j = hsjson(out)
            self.assertEqual([p["offered_rps"] for p in j["points"]],
                             [50, 100])
            with open(path) as f:
                rows = list(csv.DictReader(f))
            self.assertEqual(len(rows), 2)
            self.assertEqual(float(rows[1]["offered_rps"]), 100)
            for r in rows:
                self.assertGreater(float(r["achieved_rps"]), 0)
                self.assertGreater(int(r["p99_us"]), 0)
                self.assertEqual(int(r["errors"]), 0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------ the wrk mixes

    def dump(self, *args, n=20000):
        out, _ = self.hsload("http://127.0.0.1:9/", "--dump-requests", n,
                             *args)
        lines = out.splitlines()
        self.assertEqual(len(lines), n)
        return [tuple(l.split(" ", 1)) for l in lines]

    def wrk_requests(self, script, *args):
        """(method, path) of every request a wrk script sent for ~2 s."""
        with TestServer() as s:
            cmd = [WRK, "-t1", "-c2", "-d2s", "-s",
                   os.path.join(WRK_DIR, script), s.url, "--"] + list(args)
            r = subprocess.run(cmd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE,
                               timeout=60 * hstest.SLOW)
            self.assertEqual(r.returncode, 0, r.stderr)
            seen = [(m, p) for m, p, _ in s.seen]
        self.assertGreater(len(seen), 200, "wrk sent too little to compare")
        return seen

    def assertSameDistribution(self, a, b, key, top=3, what=""):
        """Compares the shares of the most frequent keys of a and b."""
        ca = collections.Counter(key(r) for r in a)
        cb = collections.Counter(key(r) for r in b)
        ca.pop(None, None)
        cb.pop(None, None)
        na, nb = sum(ca.values()), sum(cb.values())
        self.assertGreater(na, 0, what)
        self.assertGreater(nb, 0, what)
        # hs-load's sample is large, so its hottest keys are known; the
        # hottest is also wrk's, and each is as hot in both samples.
        keys = [k for k, _ in ca.most_common(top)]
        self.assertEqual(keys[0], cb.most_common(1)[0][0],
                         "%s: hs-load %s vs wrk %s" %
                         (what, ca.most_common(top), cb.most_common(top)))
        for k in keys:
            pa, pb = ca[k] / na, cb[k] / nb
            self.assertLess(abs(pa - pb), share_tolerance(pa, na, nb),
                            "%s %s: hs-load %.4f vs wrk %.4f" %
                            (what, k, pa, pb))

    def compare_routes(self, mine, theirs, routes):
        for name, pred in routes.items():
            pa = sum(1 for r in mine if pred(r)) / len(mine)
            pb = sum(1 for r in theirs if pred(r)) / len(theirs)
            self.assertLess(abs(pa - pb),
                            share_tolerance(pa, len(mine), len(theirs)),
                            "share of %s: hs-load %.4f vs wrk %.4f" %
                            (name, pa, pb))

    @staticmethod
    def product_id(r):
        p = r[1].split("/")
        return p[2] if len(p) >= 3 and p[1] == "products" else None

    @staticmethod
    def category_id(r):
        p = r[1].split("/")
        return p[2] if len(p) == 4 and p[1] == "categories" else None

    ROUTES = {
        "product": lambda r: r[0] == "GET" and r[1].startswith("/products/"),
        "top": lambda r: r[0] == "GET" and r[1].endswith("/top"),
        "put": lambda r: r[0] == "PUT",
        "review": lambda r: r[0] == "POST" and r[1].endswith("/reviews"),
    }

    @unittest.skipUnless(WRK, "wrk is not installed (./hammerstack setup)")
    def test_read_mix_matches_wrk(self):
        # A top share raised to 0.3 so that the category ids get samples.
        mine = self.dump("--mix", "read", "--products", 1000,
                         "--categories", 20, "--top", 0.3)
        theirs = self.wrk_requests("read-mix.lua", "products=1000",
                                   "categories=20", "top=0.3")
        self.compare_routes(mine, theirs, self.ROUTES)
        self.assertSameDistribution(mine, theirs, self.product_id,
                                    what="product ids")
        self.assertSameDistribution(mine, theirs, self.category_id,
                                    what="category ids")
        # The scatter: rank 2 of 1000 ids is id 920 (step 7919 % 1000).
        self.assertEqual(collections.Counter(
            filter(None, map(self.product_id, mine))).most_common(2)[1][0],
            "920")

    @unittest.skipUnless(WRK, "wrk is not installed (./hammerstack setup)")
    def test_update_mix_matches_wrk(self):
        # top is a share of the reads (0.7 * 0.3 = 0.21 of all requests),
        # far enough from 0.3 for the comparison to tell.
        mine = self.dump("--mix", "update", "--products", 500,
                         "--categories", 10, "--put", 0.15,
                         "--review", 0.15, "--top", 0.3)
        theirs = self.wrk_requests("update-mix.lua", "products=500",
                                   "categories=10", "put=0.15",
                                   "review=0.15", "top=0.3")
        self.compare_routes(mine, theirs, self.ROUTES)
        self.assertSameDistribution(mine, theirs, self.product_id,
                                    what="product ids")
        self.assertSameDistribution(
            [r for r in mine if r[0] != "GET"],
            [r for r in theirs if r[0] != "GET"], self.product_id,
            top=1, what="written product ids")

    @unittest.skipUnless(WRK, "wrk is not installed (./hammerstack setup)")
    def test_hot_mix_matches_wrk(self):
        mine = self.dump("--mix", "hot", "--id", 7, "--put", 0.2)
        theirs = self.wrk_requests("hot-key.lua", "id=7", "put=0.2")
        self.compare_routes(mine, theirs, self.ROUTES)
        self.assertEqual({p for _, p in mine}, {"/products/7"})
        self.assertEqual({p for _, p in theirs}, {"/products/7"})
        # hot-key.lua's put defaults to 0, and so does the hot mix.
        self.assertEqual({m for m, _ in self.dump("--mix", "hot", n=2000)},
                         {"GET"})

    def test_dump_is_reproducible(self):
        a = self.dump("--mix", "read", "--seed", 5, n=200)
        self.assertEqual(a, self.dump("--mix", "read", "--seed", 5, n=200))
        self.assertNotEqual(a, self.dump("--mix", "read", "--seed", 6,
                                         n=200))

    # ------------------------------------------------ bad input, signals

    def test_bad_options(self):
        url = "http://127.0.0.1:9/"
        cases = [
            ([], "URL is required"),
            ([url], "either --rate or --sweep"),
            ([url, "--rate", "0"], "--rate must be"),
            ([url, "--rate", "-5"], "--rate must be"),
            ([url, "--rate", "fast"], "--rate must be"),
            ([url, "--rate", "10", "--sweep", "1,2"], "either --rate or"),
            ([url, "--sweep", "100,,x"], "--sweep must be"),
            ([url, "--rate", "10", "--bogus"], "unknown or incomplete"),
            ([url, "--rate"], "unknown or incomplete"),
            ([url, "--rate", "10", "--connections", "0"], "--connections"),
            ([url, "--rate", "10", "--duration", "0"], "--duration"),
            ([url, "--rate", "10", "--mix", "write"], "--mix must be"),
            ([url, "--rate", "10", "--arrival", "burst"], "--arrival"),
            ([url, "--rate", "10", "--top", "1.5"], "--top must be"),
            ([url, "--rate", "10", "--mix", "update", "--put", "0.7",
              "--review", "0.7"], "put + review"),
            ([url, url, "--rate", "10"], "unexpected argument"),
            (["ftp://127.0.0.1/", "--rate", "10"], "bad URL"),
            (["127.0.0.1:80", "--rate", "10"], "bad URL"),
            (["http://127.0.0.1:99999/", "--rate", "10"], "bad URL"),
            (["http://:80/", "--rate", "10"], "bad URL"),
            (["http://[::1/", "--rate", "10"], "bad URL"),
        ]
        for args, msg in cases:
            with self.subTest(args=args):
                rc, out, err = run([HSLOAD] + args, 30)
                self.assertEqual(rc, 2, (args, out, err))
                self.assertIn(msg, err, args)
                self.assertNotIn("HSJSON", out)
        rc, out, _ = run([HSLOAD, "--help"], 30)
        self.assertEqual(rc, 0)
        self.assertIn("usage: hs-load URL", out)

    def test_refused_connection(self):
        port = hstest.free_port()
        rc, out, err = run([HSLOAD, "http://127.0.0.1:%d/" % port,
                            "--rate", "10", "--duration", "1"], 30)
        self.assertEqual(rc, 1, (out, err))
        self.assertIn("cannot connect to 127.0.0.1:%d" % port, err)
        self.assertIn("refused", err)
        self.assertNotIn("HSJSON", out)

    def test_sigint_prints_partial_result(self):
        with TestServer() as s:
            p = subprocess.Popen([HSLOAD, s.url + "/", "--rate", "100",
                                  "--duration", "60", "--warmup", "0"],
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 20 * hstest.SLOW
                while s.count < 30 and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertGreaterEqual(s.count, 30, "hs-load sent nothing")
                p.send_signal(signal.SIGINT)
                out, err = p.communicate(timeout=20 * hstest.SLOW)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        out = out.decode()
        self.assertEqual(p.returncode, 130, (out, err))
        self.assertIn("interrupted", out)
        j = hsjson(out)
        self.assertTrue(j["interrupted"], j)
        self.assertGreater(j["requests"], 10, j)
        self.assertLess(j["duration_s"], 60, j)
        self.assertGreater(j["achieved_rps"], 0, j)


if __name__ == "__main__":
    unittest.main()
