"""PostgreSQL streaming replicas (hslab.pg.start_replica) and hs-server's
--db-read: a replica follows the primary and leaves no process behind;
reads go to it; a replica that is down sends reads to the primary; with
replay paused (deterministic lag), a write acknowledged by the primary
and then read through the same server comes back old when
--read-your-writes is off (hs-checker counts stale reads), and never when
it is on."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import hstest
import hslab.pg
from hslab.procs import free_port
from test_balancer_backend import Balancer

SCALE = 0.01
CHECKER = hstest.binpath("hs-checker")


def put_stock(port, pid, stock):
    return hstest.request(port, "PUT", "/products/%d" % pid,
                          body='{"stock": %d}' % stock,
                          headers={"Content-Type": "application/json"})


def family(pid):
    """pid (while it lives) and its live children (a postmaster's
    backends, walsender, walreceiver, startup process ...)."""
    return [p for p in [pid] if alive(p)] + hslab.children(pid)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ReplicaStartTest(unittest.TestCase):
    """A cluster of its own: start, stream, stop, nothing left."""

    def test_replica_follows_and_stops_clean(self):
        pg = hslab.pg.start_postgres(settings=hslab.pg.REPLICATION_SETTINGS,
                                     timeout=300 * hstest.SLOW, db="hs")
        try:
            rep = hslab.pg.start_replica(pg, timeout=300 * hstest.SLOW)
            try:
                self.assertNotEqual(rep.port, pg.port)
                self.assertEqual(rep.psql("SELECT pg_is_in_recovery()"), "t")
                pg.psql("CREATE TABLE t(x int); INSERT INTO t VALUES (7)",
                        db="hs")
                hslab.pg.wait_replayed(pg, [rep], db="hs",
                                       timeout=30 * hstest.SLOW)
                self.assertEqual(rep.psql("SELECT x FROM t", db="hs"), "7")
                # A standby refuses writes.
                with self.assertRaises(hslab.LabError):
                    rep.psql("INSERT INTO t VALUES (8)", db="hs")
                pids = family(rep.proc.pid) + family(pg.proc.pid)
                self.assertGreater(len(pids), 4)
            finally:
                rep.stop()
        finally:
            pg.stop()
        self.assertEqual([p for p in pids if alive(p)], [], "left behind")


class ReplicaKilledTest(unittest.TestCase):
    """kill -9 of the replica under a server reading from it: the reads
    go to the primary (200, no crash), counted as replica errors."""

    def test_kill9_replica_reads_from_primary(self):
        pg = hslab.pg.start_postgres(settings=hslab.pg.REPLICATION_SETTINGS,
                                     timeout=300 * hstest.SLOW, db="hs")
        srv = None
        try:
            subprocess.run(
                [hstest.binpath("hs-seed"), "--db", pg.url("hs"), "--quiet",
                 "--scale", str(SCALE)], check=True,
                stdout=subprocess.DEVNULL, timeout=300 * hstest.SLOW)
            rep = hslab.pg.start_replica(pg, timeout=300 * hstest.SLOW)
            hslab.pg.wait_replayed(pg, [rep], db="hs",
                                   timeout=60 * hstest.SLOW)
            srv, port = hstest.start_server(pg.url("hs"), "--threads", "1",
                                            "--db-read", rep.url("hs"))
            self.assertEqual(hstest.request(port, "GET",
                                            "/products/1").status, 200)
            pids = family(rep.proc.pid)
            rep.kill9()
            # Its backends exit once they see the postmaster gone (each in
            # a session of its own); until then the server's connection
            # would still answer.
            deadline = time.monotonic() + 30 * hstest.SLOW
            while any(alive(p) for p in pids):
                self.assertLess(time.monotonic(), deadline, "replica lives")
                time.sleep(0.05)
            for pid in (1, 2, 3, 4):
                r = hstest.request(port, "GET", "/products/%d" % pid)
                self.assertEqual(r.status, 200, r.body)
            st = hstest.request(port, "GET",
                                "/stats").json()["db"]["replicas"]
            self.assertEqual(st["list"][0]["reads"], 1)
            self.assertEqual(st["list"][0]["errors"], 1)
            self.assertFalse(st["list"][0]["up"])
            self.assertEqual(st["primary_reads"], 4)
            self.assertIsNone(srv.poll())
        finally:
            if srv is not None:
                srv.stop()
                srv.cleanup()
            pg.stop()


class ReplicaReadsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = hslab.pg.start_postgres(
            settings=hslab.pg.REPLICATION_SETTINGS,
            timeout=600 * hstest.SLOW, db="hs")
        subprocess.run(
            [hstest.binpath("hs-seed"), "--db", cls.pg.url("hs"), "--quiet",
             "--scale", str(SCALE)], check=True,
            stdout=subprocess.DEVNULL, timeout=300 * hstest.SLOW)
        cls.rep = hslab.pg.start_replica(cls.pg, timeout=600 * hstest.SLOW)
        hslab.pg.wait_replayed(cls.pg, [cls.rep], db="hs",
                               timeout=60 * hstest.SLOW)
        cls.servers = []

    @classmethod
    def tearDownClass(cls):
        for p in cls.servers:
            p.stop()
            p.cleanup()
        cls.rep.stop()
        cls.pg.stop()

    def tearDown(self):
        # Every test leaves the replica replaying and caught up.
        hslab.pg.resume_replay(self.rep)
        hslab.pg.wait_replayed(self.pg, [self.rep], db="hs",
                               timeout=60 * hstest.SLOW)

    def server(self, *extra):
        p, port = hstest.start_server(self.pg.url("hs"), "--threads", "2",
                                      *extra)
        self.servers.append(p)
        return port

    def stats(self, port):
        return hstest.request(port, "GET", "/stats").json()["db"]

    def checker(self, port):
        """hs-checker for a bounded second on two hot products; its JSON."""
        r = subprocess.run(
            [CHECKER, "--url", "http://127.0.0.1:%d" % port, "--hot", "2",
             "--readers", "2", "--writers", "1", "--duration", "1",
             "--write-interval-ms", "20", "--settle-ms", "0", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            timeout=60 * hstest.SLOW)
        return json.loads(r.stdout.strip().splitlines()[-1])

    def test_reads_go_to_the_replica(self):
        port = self.server("--db-read", self.rep.url("hs"))
        for pid in range(1, 11):
            self.assertEqual(hstest.request(
                port, "GET", "/products/%d" % pid).status, 200)
        self.assertEqual(hstest.request(port, "GET",
                                        "/categories/1/top").status, 200)
        st = self.stats(port)["replicas"]
        self.assertTrue(st["read_your_writes"])
        [r] = st["list"]
        self.assertEqual(r["url"], self.rep.url("hs"))
        self.assertTrue(r["up"])
        self.assertEqual(r["reads"], 11)
        self.assertEqual(st["primary_reads"], 0)
        self.assertIsInstance(r["lag_bytes"], int)
        self.assertGreaterEqual(r["lag_bytes"], 0)

    def test_lag_is_measured(self):
        port = self.server("--db-read", self.rep.url("hs"))
        hslab.pg.pause_replay(self.rep)
        self.assertEqual(put_stock(port, 5, 55).status, 200)
        r = self.stats(port)["replicas"]["list"][0]
        self.assertGreater(r["lag_bytes"], 0)

    def test_replica_down_reads_from_primary(self):
        dead = "postgres://hammerstack@127.0.0.1:%d/hs" % free_port()
        port = self.server("--db-read", dead)
        for pid in (1, 2, 3):
            r = hstest.request(port, "GET", "/products/%d" % pid)
            self.assertEqual(r.status, 200, r.body)
        st = self.stats(port)["replicas"]
        self.assertEqual(st["primary_reads"], 3)
        self.assertFalse(st["list"][0]["up"])
        self.assertEqual(st["list"][0]["reads"], 0)

    def test_stale_read_without_read_your_writes(self):
        port = self.server("--db-read", self.rep.url("hs"),
                           "--read-your-writes", "off")
        before = hstest.request(port, "GET", "/products/3").json()["version"]
        hslab.pg.pause_replay(self.rep)
        w = put_stock(port, 3, 33)
        self.assertEqual(w.status, 200)
        self.assertEqual(w.json()["version"], before + 1)
        # Acknowledged by the primary; read through the same server.
        self.assertEqual(hstest.request(port, "GET", "/products/3")
                         .json()["version"], before)
        res = self.checker(port)
        self.assertGreater(res["writes"], 0)
        self.assertGreater(res["stale_reads"], 0)

    def test_read_your_writes(self):
        port = self.server("--db-read", self.rep.url("hs"))
        before = hstest.request(port, "GET", "/products/4").json()["version"]
        hslab.pg.pause_replay(self.rep)
        w = put_stock(port, 4, 44)
        self.assertEqual(w.status, 200)
        self.assertEqual(hstest.request(port, "GET", "/products/4")
                         .json()["version"], before + 1)
        res = self.checker(port)
        self.assertGreater(res["writes"], 0)
        self.assertGreater(res["reads"], 0)
        self.assertEqual(res["stale_reads"], 0)
        st = self.stats(port)["replicas"]
        self.assertGreater(st["primary_reads"], 0)
        self.assertGreater(st["list"][0]["behind"], 0)
        # Products nobody wrote still read from the replica.
        reads = st["list"][0]["reads"]
        hstest.request(port, "GET", "/products/900")
        self.assertEqual(self.stats(port)["replicas"]["list"][0]["reads"],
                         reads + 1)

    def two_servers(self, *extra):
        """Two servers on the same primary, replica and memcached behind
        an hs-balancer (round robin: a checker's write goes through one,
        the reads after it through both).  Returns the balancer and the
        servers' ports."""
        # A commit replayed just now: the replica's replay age is known
        # and small when the test pauses it.
        self.pg.psql("UPDATE products SET stock = stock WHERE id = 10",
                     db="hs")
        hslab.pg.wait_replayed(self.pg, [self.rep], db="hs",
                               timeout=60 * hstest.SLOW)
        mc, mc_port = hstest.start_memcached()
        self.servers.append(mc)
        ports = [self.server("--db-read", self.rep.url("hs"), "--memcached",
                             "127.0.0.1:%d" % mc_port, *extra)
                 for _ in range(2)]
        bal = Balancer(["127.0.0.1:%d" % p for p in ports])
        self.servers.append(bal.proc)
        return bal, ports

    def test_two_servers_read_your_writes(self):
        """Server B sees server A's writes through the remote markers in
        memcached: no stale read, from B's replica reads or from a body B
        filled into the cache."""
        # A TTL no run outlasts: the replica never counts as too far.
        bal, ports = self.two_servers("--marker-ttl", "60")
        a, b = ports
        before = hstest.request(b, "GET", "/products/6").json()["version"]
        hslab.pg.pause_replay(self.rep)
        res = self.checker(bal.port)
        self.assertGreater(res["writes"], 0)
        self.assertGreater(res["reads"], 0)
        self.assertEqual(res["stale_reads"], 0)
        # Written through A, then read through B (its body was cached).
        self.assertEqual(put_stock(a, 6, 66).status, 200)
        self.assertEqual(hstest.request(b, "GET", "/products/6")
                         .json()["version"], before + 1)
        st = [self.stats(p)["replicas"] for p in ports]
        self.assertTrue(all(s["marker_sets"] > 0 for s in st), st)
        self.assertGreater(sum(s["marker_hits"] for s in st), 0, st)
        self.assertGreater(sum(s["marker_primary_reads"] for s in st), 0)
        self.assertEqual(sum(s["marker_set_errors"] for s in st), 0)
        # A product nobody wrote still reads from the replica.
        reads = st[1]["list"][0]["reads"]
        hstest.request(b, "GET", "/products/901")
        self.assertEqual(self.stats(b)["replicas"]["list"][0]["reads"],
                         reads + 1)

    def test_two_servers_markers_without_a_cache(self):
        """--cache off --memcached: memcached holds only the markers, and
        server B still reads A's writes from the primary."""
        bal, (a, b) = self.two_servers("--marker-ttl", "60", "--cache",
                                       "off")
        before = hstest.request(b, "GET", "/products/12").json()["version"]
        hslab.pg.pause_replay(self.rep)
        res = self.checker(bal.port)
        self.assertGreater(res["writes"], 0)
        self.assertGreater(res["reads"], 0)
        self.assertEqual(res["stale_reads"], 0)
        self.assertEqual(put_stock(a, 12, 12).status, 200)
        self.assertEqual(hstest.request(b, "GET", "/products/12")
                         .json()["version"], before + 1)
        st = self.stats(b)
        self.assertGreater(st["replicas"]["marker_primary_reads"], 0)

    def test_replica_lagging_past_the_marker_ttl(self):
        """Once A's marker is gone, B must not take the replica's word:
        it lags more than --marker-ttl, so B reads from the primary."""
        _, (a, b) = self.two_servers("--marker-ttl", "1")
        before = hstest.request(b, "GET", "/products/11").json()["version"]
        hslab.pg.pause_replay(self.rep)
        self.assertEqual(put_stock(a, 11, 11).status, 200)
        # Past the marker's TTL (memcached expires within TTL + 1 s) and
        # past the once-a-second distance check.
        time.sleep(3)
        self.assertEqual(hstest.request(b, "GET", "/products/11")
                         .json()["version"], before + 1)
        st = self.stats(b)["replicas"]
        self.assertGreater(st["list"][0]["too_far"], 0)
        self.assertEqual(st["marker_hits"], 0)

    def test_two_servers_stale_without_read_your_writes(self):
        bal, _ = self.two_servers("--read-your-writes", "off")
        hslab.pg.pause_replay(self.rep)
        res = self.checker(bal.port)
        self.assertGreater(res["writes"], 0)
        self.assertGreater(res["stale_reads"], 0)

    def test_memcached_down_reads_from_primary(self):
        """No answer about the markers: the primary, not the replica."""
        dead = "127.0.0.1:%d" % free_port()
        port = self.server("--db-read", self.rep.url("hs"), "--memcached",
                           dead)
        for pid in (7, 8):
            r = hstest.request(port, "GET", "/products/%d" % pid)
            self.assertEqual(r.status, 200, r.body)
        st = self.stats(port)["replicas"]
        self.assertEqual(st["list"][0]["reads"], 0)
        self.assertEqual(st["primary_reads"], 2)
        self.assertEqual(st["marker_primary_reads"], 2)
        self.assertEqual(st["marker_hits"], 0)

    def test_metrics_have_the_replicas(self):
        port = self.server("--db-read", self.rep.url("hs"))
        self.assertEqual(hstest.request(port, "GET",
                                        "/products/9").status, 200)
        text = hstest.request(port, "GET", "/metrics").body.decode()
        lab = '{replica="%s"}' % self.rep.url("hs")
        for line in ("hs_replica_up" + lab + " 1",
                     "hs_replica_reads_total" + lab + " 1",
                     "hs_replica_errors_total" + lab + " 0",
                     "hs_replica_behind_total" + lab + " 0",
                     "hs_replica_primary_reads_total 0",
                     "hs_replica_marker_gets_total 0"):
            self.assertIn("\n" + line + "\n", text)
        for fam in ("hs_replica_lag_bytes", "hs_replica_replay_age_seconds"):
            self.assertIn("# TYPE %s gauge\n" % fam, text)
        self.assertRegex(text, r"\nhs_replica_lag_bytes\{replica=\"[^\"]+\"\}"
                         r" \d+\n")


STACK = os.path.join(hstest.SRC, "loadtest", "stack.py")


class StackReplicasTest(unittest.TestCase):
    """./hammerstack up --db postgres --replicas 1: the replica is a child
    of the stack, the server reads from it, and down or a killed up leaves
    no process and no replica directory."""

    def setUp(self):
        self.run_dir = tempfile.mkdtemp(prefix="hs-run-")
        os.chmod(self.run_dir, 0o755)   # postgres may run as nobody
        self.env = dict(os.environ, HS_RUN_DIR=self.run_dir)
        self.port = free_port()
        self.pg_dir = os.path.join(self.run_dir, "pg")
        self.args = ["--db", "postgres", "--pg-dir", self.pg_dir,
                     "--replicas", "1", "--scale", "0.01", "--servers", "1",
                     "--cache", "off", "--no-balancer", "--server-port",
                     str(self.port), "--threads", "2", "--no-dashboard",
                     "--memcached-port", str(free_port())]

    def tearDown(self):
        subprocess.run([sys.executable, STACK, "down"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def children(self):
        with open(os.path.join(self.run_dir, "stack.json")) as f:
            st = json.load(f)
        return st, {c["name"]: c["pid"] for c in st["children"]}

    def all_pids(self, kids):
        out = []
        for pid in kids.values():
            out += family(pid)
        return out

    def gone(self, pids, timeout=30):
        deadline = time.monotonic() + timeout * hstest.SLOW
        while time.monotonic() < deadline:
            if not any(alive(p) for p in pids):
                return True
            time.sleep(0.1)
        return False

    def test_up_reads_from_the_replica_and_down_cleans(self):
        r = subprocess.run([sys.executable, STACK, "up", "--detach"] +
                           self.args, env=self.env, capture_output=True,
                           text=True, timeout=300 * hstest.SLOW)
        self.assertEqual(r.returncode, 0, r.stderr)
        st, kids = self.children()
        self.assertEqual(sorted(kids),
                         ["hs-server-1", "memcached-1", "pg-replica-1",
                          "postgres"])
        url = st["urls"]["replica1"]
        self.assertIn("replica1", r.stdout)
        self.assertIn(url, r.stdout)
        self.assertEqual(hstest.request(self.port, "GET",
                                        "/products/2").status, 200)
        reps = hstest.request(self.port, "GET",
                              "/stats").json()["db"]["replicas"]
        self.assertEqual(reps["list"][0]["url"], url)
        self.assertEqual(reps["list"][0]["reads"], 1)
        pids = [st["pid"]] + self.all_pids(kids)
        self.assertEqual(subprocess.run(
            [sys.executable, STACK, "down"], env=self.env,
            stdout=subprocess.DEVNULL, timeout=60).returncode, 0)
        self.assertTrue(self.gone(pids), "left behind")
        self.assertFalse(os.path.exists(os.path.join(self.pg_dir,
                                                     "replica1")))

    def test_kill_9_of_up_stops_the_replica(self):
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
            self.assertIn("pg-replica-1", kids)
            pids = self.all_pids(kids)
            p.send_signal(signal.SIGKILL)
            p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
        self.assertTrue(self.gone(pids), "children survived their supervisor")


if __name__ == "__main__":
    unittest.main()
