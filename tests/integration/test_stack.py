"""The stack supervisor (./hammerstack up/down/status) and the walkthrough,
run for real: memcached, hs-server processes and hs-balancer on free
loopback ports.  What is checked is what a user relies on: the stack
answers, and afterwards no process and no port is left behind — also when
the supervisor itself is killed with SIGKILL."""

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import hstest

STACK = os.path.join(hstest.SRC, "loadtest", "stack.py")
WALK = os.path.join(hstest.SRC, "loadtest", "walkthrough.py")


def ports_free(ports):
    for p in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited: its ports are closed
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(cond, timeout):
    deadline = time.monotonic() + timeout * hstest.SLOW
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


class StackTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = hstest.seeded_db(0.01)

    def setUp(self):
        self.run_dir = tempfile.mkdtemp(prefix="hs-run-")
        self.env = dict(os.environ, HS_RUN_DIR=self.run_dir)
        ports = []
        socks = []
        for _ in range(5):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
        for s in socks:
            s.close()
        self.bal, self.admin, self.mc = ports[0], ports[1], ports[2]
        # Two servers need two consecutive ports: find a free pair.
        for base in range(ports[3], ports[3] + 200):
            if ports_free([base, base + 1]) and base + 1 not in ports[:3]:
                self.srv = base
                break
        self.ports = [self.bal, self.admin, self.mc, self.srv, self.srv + 1]
        self.args = ["--servers", "2", "--cache", "lease", "--db", self.db,
                     "--port", str(self.bal), "--admin-port", str(self.admin),
                     "--server-port", str(self.srv),
                     "--memcached-port", str(self.mc), "--threads", "2"]

    def tearDown(self):
        subprocess.run([sys.executable, STACK, "down"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def stack(self, *args, timeout=120):
        return subprocess.run([sys.executable, STACK] + list(args),
                              env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE,
                              timeout=timeout * hstest.SLOW)

    def up_foreground(self):
        """`up` in the foreground, returned once it says the stack is up."""
        p = subprocess.Popen([sys.executable, STACK, "up"] + self.args,
                             env=self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        line = ""
        deadline = time.monotonic() + 90 * hstest.SLOW
        while "Ctrl-C" not in line and time.monotonic() < deadline:
            line = p.stdout.readline().decode()
            if not line and p.poll() is not None:
                break
        if "Ctrl-C" not in line:
            p.kill()
            p.wait()
            p.stdout.close()
            self.fail("up did not come up: %r" % line)
        self.addCleanup(self.reap, p)
        return p

    @staticmethod
    def reap(p):
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()

    def child_pids(self):
        import json
        with open(os.path.join(self.run_dir, "stack.json")) as f:
            st = json.load(f)
        return st["pid"], [c["pid"] for c in st["children"]]

    def test_detached_up_status_down(self):
        r = self.stack("up", "--detach", *self.args)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        out = r.stdout.decode()
        self.assertIn("http://127.0.0.1:%d/" % self.bal, out)
        sup, kids = self.child_pids()
        self.assertEqual(len(kids), 4)  # memcached, 2 servers, balancer
        r = self.stack("status")
        self.assertEqual(r.returncode, 0, r.stdout.decode())
        self.assertIn("hs-balancer", r.stdout.decode())
        # Through the balancer, both servers answer, and the cache works.
        seen = set()
        for _ in range(4):
            resp = hstest.request(self.bal, "GET", "/products/7")
            self.assertEqual(resp.status, 200)
            seen.add(resp.header("X-Served-By"))
        self.assertEqual(seen, {"s1", "s2"})
        r = self.stack("down")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(wait_until(
            lambda: not any(pid_alive(p) for p in kids + [sup]), 20))
        self.assertTrue(wait_until(lambda: ports_free(self.ports), 10))
        self.assertEqual(self.stack("status").returncode, 3)

    def test_foreground_ctrl_c_stops_everything(self):
        p = self.up_foreground()
        _, kids = self.child_pids()
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(60 * hstest.SLOW), 0)
        self.assertFalse(any(pid_alive(k) for k in kids))
        self.assertTrue(wait_until(lambda: ports_free(self.ports), 10))

    def test_kill_9_of_up_leaves_no_orphan(self):
        p = self.up_foreground()
        _, kids = self.child_pids()
        self.assertTrue(all(pid_alive(k) for k in kids))
        p.kill()  # SIGKILL: no chance to clean up
        p.wait()
        self.assertTrue(wait_until(
            lambda: not any(pid_alive(k) for k in kids), 20),
            "children survived their supervisor")
        self.assertTrue(wait_until(lambda: ports_free(self.ports), 10))

    def test_port_in_use_is_named(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", self.srv + 1))
            s.listen(1)
            r = self.stack("up", "--detach", *self.args)
        self.assertEqual(r.returncode, 1)
        self.assertIn("port %d (hs-server 2) is already in use" %
                      (self.srv + 1), r.stderr.decode())
        self.assertTrue(ports_free([self.bal, self.admin, self.mc, self.srv]))

    def test_bad_options(self):
        r = self.stack("up", "--servers", "0")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--servers", r.stderr.decode())
        r = self.stack("up", "--cache", "sometimes")
        self.assertEqual(r.returncode, 2)


class WalkthroughTest(unittest.TestCase):
    def test_tiny_walkthrough_writes_the_report(self):
        db = hstest.seeded_db(0.01)
        out = tempfile.mkdtemp(prefix="hs-walk-")
        try:
            r = subprocess.run(
                [sys.executable, WALK, "--db", db, "--duration", "2",
                 "--warmup", "1", "--connections", "8", "--out", out,
                 "--server-threads", "2", "--fill-delay-ms", "20"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                timeout=600 * hstest.SLOW,
                env=dict(os.environ, HS_RUN_DIR=out))
            self.assertEqual(r.returncode, 0, r.stderr.decode()[-3000:])
            for f in ("results.csv", "results.md", "report.html"):
                self.assertGreater(os.path.getsize(os.path.join(out, f)), 100)
            with open(os.path.join(out, "results.csv")) as f:
                rows = list(csv.DictReader(f))
            self.assertEqual([x["step"] for x in rows],
                             ["0", "1", "1b", "2", "3"])
            by = {x["step"]: x for x in rows}
            for step in ("1", "2", "3"):
                self.assertEqual(by[step]["stale_reads"], "0", step)
            for x in rows:
                self.assertGreater(float(x["req_s"]), 0)
                self.assertEqual(x["errors"], "0", x)
                self.assertGreater(int(x["checker_reads"]), 0, x)
            # The cache takes DB work away: fewer queries per request.
            q0 = float(by["0"]["db_queries_s"]) / float(by["0"]["req_s"])
            q1 = float(by["1"]["db_queries_s"]) / float(by["1"]["req_s"])
            self.assertLess(q1, q0)
            self.assertGreater(float(by["1"]["cache_hit_pct"]), 0)
            with open(os.path.join(out, "report.html")) as f:
                page = f.read()
            self.assertIn("<svg", page)
            self.assertNotIn("http://", page.replace(
                'xmlns="http://www.w3.org/2000/svg"', ""))
        finally:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
