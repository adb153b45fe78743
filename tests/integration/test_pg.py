"""hs-server over PostgreSQL, where a database server differs from a file:
writers in several hs-server processes lose no version bump, and kill -9
of postgres under load gives 503s with Retry-After (no crash), then the
server recovers by itself once postgres is back, with every acknowledged
write still there.  Each test class starts its own cluster (hslab.pg) on
a free loopback port."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import hstest
import hslab
import hslab.pg

SCALE = 0.01


def put_stock(port, pid, stock, conn=None):
    return hstest.request(port, "PUT", "/products/%d" % pid,
                          body='{"stock": %d}' % stock,
                          headers={"Content-Type": "application/json"},
                          conn=conn)


def add_review(port, pid, body, conn=None):
    return hstest.request(port, "POST", "/products/%d/reviews" % pid,
                          body='{"rating": 4, "body": "%s"}' % body,
                          headers={"Content-Type": "application/json"},
                          conn=conn)


class ClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = hslab.pg.start_postgres(timeout=600 * hstest.SLOW,
                                         db="hs")
        subprocess.run(
            [hstest.binpath("hs-seed"), "--db", cls.pg.url("hs"), "--quiet",
             "--scale", str(SCALE)], check=True,
            stdout=subprocess.DEVNULL, timeout=300 * hstest.SLOW)
        cls.url = cls.pg.url("hs")
        cls.servers = []

    @classmethod
    def tearDownClass(cls):
        for p in cls.servers:
            p.stop()
            p.cleanup()
        cls.pg.stop()

    def server(self, *extra):
        p, port = hstest.start_server(self.url, "--threads", "2", *extra)
        self.servers.append(p)
        return p, port

    def scalar(self, sql):
        return int(self.pg.psql(sql, db="hs"))


class ConcurrentWritersTest(ClusterTest):
    """Three hs-server processes, six clients writing the same product."""

    def test_no_lost_update(self):
        ports = [self.server()[1] for _ in range(3)]
        before = self.scalar("SELECT version FROM products WHERE id = 1")
        per_client, nclients = 40, 6
        results = [[] for _ in range(nclients)]

        def client(k):
            for i in range(per_client):
                port = ports[(k + i) % len(ports)]
                r = put_stock(port, 1, k * 1000 + i)
                results[k].append((r.status, r.json()))

        threads = [threading.Thread(target=client, args=(k,))
                   for k in range(nclients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120 * hstest.SLOW)
        versions = []
        for k, res in enumerate(results):
            self.assertEqual(len(res), per_client)
            mine = []
            for status, j in res:
                # 503 (busy past the timeout) is allowed, not a lost write.
                self.assertIn(status, (200, 503), j)
                if status == 200:
                    mine.append(j["version"])
            # Each client sees its own writes in order.
            self.assertEqual(mine, sorted(mine))
            versions += mine
        self.assertGreater(len(versions), 0)
        # Every acknowledged write got a version of its own ...
        self.assertEqual(len(versions), len(set(versions)))
        # ... and each bumped the row once: none lost, none doubled.
        final = self.scalar("SELECT version FROM products WHERE id = 1")
        self.assertEqual(final, before + len(versions))
        self.assertEqual(max(versions), final)
        r = hstest.request(ports[0], "GET", "/products/1")
        self.assertEqual(r.json()["version"], final)


class CheckerTest(ClusterTest):
    """hs-checker --db with a PostgreSQL URL: the final check reads the
    rows from the primary, bypassing server and cache."""

    def checker(self, port, *extra):
        r = subprocess.run(
            [hstest.binpath("hs-checker"), "--url",
             "http://127.0.0.1:%d" % port, "--products", "7,8",
             "--readers", "1", "--writers", "1", "--duration", "1",
             "--write-interval-ms", "50", "--settle-ms", "0", "--json",
             "--db", self.url] + list(extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            timeout=120 * hstest.SLOW)
        return r.returncode, json.loads(r.stdout.strip().splitlines()[-1]), \
            r.stderr

    def test_consistent_server_checks_clean(self):
        _, port = self.server("--cache", "off")
        rc, res, err = self.checker(port)
        self.assertEqual(rc, 0, err)
        self.assertTrue(res["db_checked"])
        self.assertGreater(res["writes"], 0)
        self.assertEqual(res["final_checked"], 2)
        self.assertEqual(res["final_db_differs"], 0, err)

    def test_row_changed_behind_the_cache_is_caught(self):
        mc, mport = hstest.start_memcached()
        try:
            _, port = self.server("--memcached", "127.0.0.1:%d" % mport)
            # Cached now; then the row changes where no server sees it.
            for pid in (7, 8):
                self.assertEqual(hstest.request(
                    port, "GET", "/products/%d" % pid).status, 200)
            self.pg.psql("UPDATE products SET stock = stock + 1 "
                         "WHERE id = 8", db="hs")
            rc, res, err = self.checker(port, "--writers", "0",
                                        "--products", "8")
            self.assertEqual(rc, 1, err)
            self.assertEqual(res["final_db_differs"], 1, err)
            self.assertIn("database", err)
        finally:
            mc.stop()


class PostgresKilledTest(ClusterTest):
    """kill -9 of postgres (the postmaster and every backend) under writes."""

    def test_kill9_then_recover(self):
        proc, port = self.server()
        acked = {}          # review id -> body, for every 201
        statuses = set()
        lock = threading.Lock()
        stop = threading.Event()

        def load(k):
            # Background writes that are in flight when postgres dies.
            i = 0
            while not stop.is_set() and i < 3000:
                body = "bg%d-%d" % (k, i)
                r = add_review(port, 2 + k, body)
                with lock:
                    statuses.add(r.status)
                    if r.status == 201:
                        acked[r.json()["id"]] = body
                i += 1

        def write(n, want):
            got = []
            for i in range(n):
                body = "fg-%s-%d" % (want, i)
                r = add_review(port, 1, body)
                got.append(r.status)
                if r.status == 201:
                    with lock:
                        acked[r.json()["id"]] = body
                elif r.status == 503:
                    self.assertTrue(r.header("retry-after"), r.headers)
                    self.assertEqual(r.json()["status"], 503)
            return got

        bg = [threading.Thread(target=load, args=(k,)) for k in range(2)]
        for t in bg:
            t.start()
        try:
            self.assertEqual(write(20, "before"), [201] * 20)
            self.pg.kill9()
            # postgres is gone: every write is refused, none hangs.
            self.assertEqual(write(10, "down"), [503] * 10)
            self.assertTrue(proc.alive(), proc.stderr())
            r = hstest.request(port, "GET", "/healthz")
            self.assertEqual(r.status, 503)
            self.pg.restart()
            # The server reconnects by itself: writes succeed again.
            ok = False
            for _ in range(int(100 * hstest.SLOW)):
                if write(1, "probe") == [201]:
                    ok = True
                    break
                time.sleep(0.1)
            self.assertTrue(ok, "no write succeeded after the restart")
            self.assertEqual(write(10, "after"), [201] * 10)
        finally:
            stop.set()
            for t in bg:
                t.join(60 * hstest.SLOW)
        self.assertTrue(proc.alive(), proc.stderr())
        self.assertLessEqual(statuses, {201, 503})
        self.assertEqual(hstest.request(port, "GET", "/healthz").status, 200)
        # No acknowledged write was lost in the crash.
        ids = ",".join(str(i) for i in acked)
        self.assertEqual(self.scalar(
            "SELECT count(*) FROM reviews WHERE id IN (%s)" % ids),
            len(acked))
        for rid in list(acked)[::7]:
            self.assertEqual(self.pg.psql(
                "SELECT body FROM reviews WHERE id = %d" % rid, db="hs"),
                acked[rid])
        # The server counted the failures it answered 503 for.
        st = hstest.request(port, "GET", "/stats").json()
        self.assertGreaterEqual(st["db"]["errors"], 10)


STACK = os.path.join(hstest.SRC, "loadtest", "stack.py")


class StackPostgresTest(unittest.TestCase):
    """./hammerstack up --db postgres: the cluster is a child of the stack,
    started first, stopped by down, and gone with a killed up."""

    def setUp(self):
        self.run_dir = tempfile.mkdtemp(prefix="hs-run-")
        # postgres runs as nobody under root: it must reach its directory.
        os.chmod(self.run_dir, 0o755)
        self.env = dict(os.environ, HS_RUN_DIR=self.run_dir)
        self.port = hstest.free_port()
        self.args = ["--db", "postgres", "--pg-dir",
                     os.path.join(self.run_dir, "pg"), "--scale", "0.01",
                     "--servers", "1", "--cache", "off", "--no-balancer",
                     "--server-port", str(self.port), "--threads", "2",
                     "--no-dashboard"]

    def tearDown(self):
        subprocess.run([sys.executable, STACK, "down"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def children(self):
        with open(os.path.join(self.run_dir, "stack.json")) as f:
            st = json.load(f)
        return st["pid"], {c["name"]: (c["pid"], c["port"])
                           for c in st["children"]}

    def gone(self, pids, timeout=30):
        deadline = time.monotonic() + timeout * hstest.SLOW
        while time.monotonic() < deadline:
            if not any(hslab.pid_alive(p) for p in pids):
                return True
            time.sleep(0.1)
        return False

    def test_up_down_then_up_again_keeps_the_data(self):
        up = [sys.executable, STACK, "up", "--detach"] + self.args
        r = subprocess.run(up, env=self.env, capture_output=True,
                           timeout=300 * hstest.SLOW)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        sup, kids = self.children()
        self.assertEqual(sorted(kids), ["hs-server-1", "postgres"])
        pg_port = kids["postgres"][1]
        w = put_stock(self.port, 3, 77)
        self.assertEqual(w.status, 200, w.body)
        version = w.json()["version"]
        self.assertEqual(subprocess.run(
            [sys.executable, STACK, "down"], env=self.env,
            stdout=subprocess.DEVNULL, timeout=60).returncode, 0)
        self.assertTrue(self.gone([sup] + [p for p, _ in kids.values()]))
        self.assertTrue(hslab.port_free(pg_port))
        # The cluster stays in --pg-dir: the write is there after a new up.
        r = subprocess.run(up, env=self.env, capture_output=True,
                           timeout=300 * hstest.SLOW)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        got = hstest.request(self.port, "GET", "/products/3").json()
        self.assertEqual((got["version"], got["stock"]), (version, 77))

    def test_kill_9_of_up_stops_postgres(self):
        p = subprocess.Popen([sys.executable, STACK, "up"] + self.args,
                             env=self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 300 * hstest.SLOW
            line = ""
            while "Ctrl-C" not in line and time.monotonic() < deadline:
                line = p.stdout.readline().decode()
                if not line and p.poll() is not None:
                    break
            self.assertIn("Ctrl-C", line)
            _, kids = self.children()
            self.assertIn("postgres", kids)
            p.send_signal(signal.SIGKILL)
            p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
        self.assertTrue(self.gone([pid for pid, _ in kids.values()]),
                        "children survived their supervisor")


if __name__ == "__main__":
    unittest.main()
