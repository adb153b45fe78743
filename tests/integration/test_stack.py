"""The stack supervisor (./hammerstack up/down/status) and the walkthrough,
run for real: memcached, hs-server processes and hs-balancer on free
loopback ports.  What is checked is what a user relies on: the stack
answers, and afterwards no process and no port is left behind — also when
the supervisor itself is killed with SIGKILL."""

import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import threading

import hstest
import hslab
from hslab import cgroups, sampler

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


class StackBase(unittest.TestCase):
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
        # Two servers need two consecutive ports: find a free pair, also
        # below the ephemeral range, which busy load tests can fill.
        self.srv = None
        for start in (ports[3], random.randrange(20000, 30000)):
            for base in range(start, min(start + 200, 65535)):
                if ports_free([base, base + 1]) and \
                        base + 1 not in ports[:3]:
                    self.srv = base
                    break
            if self.srv:
                break
        self.assertIsNotNone(self.srv, "no two consecutive free ports")
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


class StackTest(StackBase):
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


    def test_printed_wrk_hint_is_right_at_scale_0_01(self):
        # The database has 1,000 products and 1 category, not the 100,000
        # and 100 of scale 1: the printed command must still hit only
        # existing ids.
        r = self.stack("up", "--detach", *self.args)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        hint = [x for x in r.stdout.decode().splitlines()
                if x.startswith("load: ")]
        self.assertEqual(len(hint), 1, r.stdout.decode())
        argv = hint[0][len("load: "):].split()
        self.assertEqual(argv[0], "wrk")
        argv = ["-d2s" if a.startswith("-d") else a for a in argv]
        w = subprocess.run(argv, cwd=hstest.SRC, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60 * hstest.SLOW)
        self.assertEqual(w.returncode, 0, w.stderr.decode())
        line = [x for x in w.stdout.decode().splitlines()
                if x.startswith("HSJSON ")]
        self.assertEqual(len(line), 1, w.stdout.decode())
        j = json.loads(line[0][len("HSJSON "):])
        self.assertGreater(j["status_2xx"], 0, j)
        self.assertEqual(j["non2xx"], 0, j)
        self.assertEqual((j["options"]["products"],
                          j["options"]["categories"]), (1000, 1), j)


BUDGET_ARGS = ["--server-cpus", "0.15", "--cache-cpus", "0.5"]


class BudgetTest(StackBase):
    """--server-cpus / --cache-cpus: each such process in its own cgroup
    with that CPU quota while the stack runs; no cgroup left after down,
    Ctrl-C, or a SIGKILL of up followed by down."""

    def setUp(self):
        super().setUp()
        self.env.pop("HS_CGROUP_ROOT", None)

    def need_cgroups(self):
        kind, _, _, problem = cgroups.find_hierarchy()
        if not kind:
            self.skipTest("no writable cgroup with a cpu controller: %s" %
                          problem)
        return kind

    def cgroups_of(self):
        with open(os.path.join(self.run_dir, "stack.json")) as f:
            st = json.load(f)
        return {c["name"]: (c["pid"], c["cgroup"]) for c in st["children"]}

    def dirs_of(self, groups):
        out = set()
        for _, cg in groups.values():
            if cg:
                for d in (cg["cpu_dir"], cg["acct_dir"]):
                    if d:
                        out.add(d)
                        out.add(os.path.dirname(d))
        return out

    def check_applied(self, groups):
        self.assertIsNone(groups["hs-balancer"][1])  # no budget asked
        for name, cpus in (("hs-server-1", 0.15), ("hs-server-2", 0.15),
                           ("memcached-1", 0.5)):
            pid, cg = groups[name]
            self.assertIsNotNone(cg, name)
            self.assertIn("hammerstack-", cg["cpu_dir"])
            h = cgroups.Host(cg["kind"], cg["cpu_dir"], cg["acct_dir"],
                             cg["cpus"])
            quota, period = h.quota()
            self.assertEqual(quota, round(cpus * period), name)
            self.assertIn(pid, h.pids(), name)
            # Every thread is in it, also those made after exec.
            threads = {int(t) for t in os.listdir("/proc/%d/task" % pid)}
            if cg["kind"] == "v1":
                with open(os.path.join(cg["cpu_dir"], "tasks")) as f:
                    self.assertEqual(threads, {int(x) for x in f.read()
                                               .split()}, name)
            self.assertIn("cpu_s", h.usage())

    def gone(self, dirs):
        return wait_until(lambda: not any(os.path.exists(d) for d in dirs),
                          10)

    def test_budgets_applied_and_removed_by_down(self):
        self.need_cgroups()
        r = self.stack("up", "--detach", *(self.args + BUDGET_ARGS))
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertNotIn("no CPU budgets", r.stderr.decode())
        groups = self.cgroups_of()
        self.check_applied(groups)
        dirs = self.dirs_of(groups)
        self.assertTrue(all(os.path.isdir(d) for d in dirs), dirs)
        r = self.stack("status")
        self.assertIn("cpu 0.15 (used", r.stdout.decode())
        self.assertIn("CPU budgets in cgroup", r.stdout.decode())
        self.assertEqual(hstest.request(self.bal, "GET",
                                        "/products/3").status, 200)
        self.assertEqual(self.stack("down").returncode, 0)
        self.assertTrue(self.gone(dirs), [d for d in dirs
                                          if os.path.exists(d)])

    def up_with_budgets(self):
        """up in the foreground with budgets, checked; (Popen, groups,
        the cgroup dirs)."""
        self.need_cgroups()
        self.args += BUDGET_ARGS
        p = self.up_foreground()
        groups = self.cgroups_of()
        self.check_applied(groups)
        return p, groups, self.dirs_of(groups)

    def test_budgets_removed_on_ctrl_c(self):
        p, _, dirs = self.up_with_budgets()
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(60 * hstest.SLOW), 0)
        self.assertTrue(self.gone(dirs))

    def test_kill_9_of_up_then_down_removes_budgets(self):
        p, groups, dirs = self.up_with_budgets()
        p.kill()  # SIGKILL: the supervisor cannot remove them itself
        p.wait()
        kids = [pid for pid, _ in groups.values()]
        self.assertTrue(wait_until(
            lambda: not any(pid_alive(k) for k in kids), 20))
        # down (or the next up, or status) sweeps the cgroups of a dead
        # owner.
        self.assertEqual(self.stack("down").returncode, 0)
        self.assertTrue(self.gone(dirs), [d for d in dirs
                                          if os.path.exists(d)])

    def test_no_writable_cgroup_warns_once_and_runs(self):
        # A cgroup root that does not exist stands for a host where none
        # is writable (not root, no cpu controller).
        self.env["HS_CGROUP_ROOT"] = os.path.join(self.run_dir, "none")
        r = self.stack("up", "--detach", "--balancer-cpus", "0.5",
                       *(self.args + BUDGET_ARGS))
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 0, err)
        self.assertEqual(err.count("no CPU budgets"), 1, err)
        self.assertIn("WARNING", err)
        self.assertIn("without a CPU limit", err)
        self.assertTrue(all(cg is None for _, cg in
                            self.cgroups_of().values()))
        self.assertEqual(hstest.request(self.bal, "GET",
                                        "/products/3").status, 200)
        out = self.stack("status").stdout.decode()
        self.assertIn("no CPU budgets: %s does not exist" %
                      self.env["HS_CGROUP_ROOT"], out)

    def test_bad_budgets(self):
        for v in ("-1", "0.001", "x"):
            r = self.stack("up", "--server-cpus", v, "--check-args")
            self.assertEqual(r.returncode, 2, v)
            self.assertIn("--server-cpus", r.stderr.decode())


class SamplerTest(unittest.TestCase):
    """hslab.Sampler over a small running stack: a CSV row per component
    and metric each second, counters that grow under load, and the same
    series in memory."""

    def test_series_of_a_small_stack(self):
        import stack as hs
        tmp = tempfile.mkdtemp(prefix="hs-sampler-")
        self.addCleanup(shutil.rmtree, tmp, True)
        ports = hslab.free_ports(5)
        budget = 0.5 if cgroups.find_hierarchy()[0] else 0
        stk = hs.Stack(servers=2, cache="lease", db=hstest.seeded_db(0.01),
                       server_ports=ports[:2], memcached_ports=[ports[2]],
                       balancer_port=ports[3], admin_port=ports[4],
                       logdir=tmp, threads=1, server_cpus=budget)
        stk.start()
        self.addCleanup(stk.stop)
        done = threading.Event()

        def load():
            i = 0
            while not done.is_set():
                hstest.request(ports[3], "GET", "/products/%d" % (i % 50 + 1))
                i += 1
                time.sleep(0.005)
        t = threading.Thread(target=load, daemon=True)
        path = os.path.join(tmp, "series.csv")
        smp = hslab.Sampler(path).start()
        smp.watch(stk, "tiny")
        t.start()
        time.sleep(3.5)
        done.set()
        t.join(10)
        smp.stop()
        with open(path) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(list(rows[0]), ["time", "step", "component",
                                         "metric", "value"])
        comps = ["hs-server-1", "hs-server-2", "hs-balancer", "memcached-1"]
        self.assertEqual({r["component"] for r in rows}, set(comps))
        self.assertEqual({r["step"] for r in rows}, {"tiny"})
        for comp, counter in (("hs-server-1", "requests"),
                              ("hs-server-2", "requests"),
                              ("hs-server-1", "db.queries"),
                              ("hs-balancer", "requests"),
                              ("hs-balancer", "backends.1.requests"),
                              ("memcached-1", "cmd_get"),
                              ("hs-server-1", "host.cpu_s")):
            vals = [float(r["value"]) for r in rows
                    if r["component"] == comp and r["metric"] == counter]
            self.assertGreaterEqual(len(vals), 3, (comp, counter))
            self.assertGreater(vals[-1], vals[0], (comp, counter, vals))
            rates = [float(r["value"]) for r in rows
                     if r["component"] == comp and
                     r["metric"] == counter + "/s"]
            self.assertTrue(rates and max(rates) > 0, (comp, counter))
        for comp in comps:
            self.assertTrue(any(r["component"] == comp and
                                r["metric"] == "host.cpu_s" for r in rows))
        cpus = {r["value"] for r in rows if r["component"] == "hs-server-1"
                and r["metric"] == "host.cpus"}
        self.assertEqual({float(x) for x in cpus}, {budget})
        mem = smp.series()
        self.assertEqual(set(mem), set(comps))
        pts = mem["hs-server-1"]["requests"]
        self.assertGreaterEqual(len(pts), 3)
        self.assertTrue(all(a[0] < b[0] for a, b in zip(pts, pts[1:])))
        # Per-second percentiles from the differenced histograms, at each
        # server and at the balancer; the sampler's own /stats polls are
        # not in the servers' windows.
        for comp in ("hs-server-1", "hs-server-2", "hs-balancer"):
            p50 = [v for _, v in mem[comp].get("window.p50_us", [])]
            p99 = [v for _, v in mem[comp].get("window.p99_us", [])]
            n = [v for _, v in mem[comp].get("window.requests", [])]
            self.assertGreaterEqual(len(p99), 2, comp)
            self.assertTrue(all(0 < a <= b for a, b in zip(p50, p99)),
                            (comp, p50, p99))
            self.assertGreater(sum(n), 0, comp)
        got = mem["hs-server-1"]["requests"]
        self.assertLess(sum(v for _, v in mem["hs-server-1"][
            "window.requests"]), got[-1][1] - got[0][1] + 1)

    def test_window_quantiles(self):
        # 1000 fast requests before, 10 slow ones in this second: the
        # window's p50 is the slow ones', where the cumulative stays fast.
        prev = {100: 1000}
        cur = {100: 1000, 5119: 10}
        self.assertEqual(sampler.window_quantiles(cur, prev), (10, [5119,
                                                                   5119]))
        cur = {100: 1090, 5119: 10}
        self.assertEqual(sampler.window_quantiles(cur, prev), (100, [100,
                                                                    5119]))
        self.assertEqual(sampler.window_quantiles(prev, prev), (0, [0, 0]))
        # A counter that went back (a restarted server): no window.
        self.assertIsNone(sampler.window_quantiles({100: 5}, prev))
        self.assertIsNone(sampler.window_quantiles({5119: 2000}, prev))
        h = sampler.hist_buckets([{"buckets": "5:2 1007:1"},
                                  {"buckets": "5:1"}, None, {},
                                  {"buckets": "x:1 7:"}])
        self.assertEqual(h, {5: 3, 1007: 1})

    def test_follow_progress_lines(self):
        # A tool's progress lines in a file become points of a component
        # at their own times, with rates; an unfinished line waits for
        # its end; watch() takes in what is left before it retargets.
        tmp = tempfile.mkdtemp(prefix="hs-follow-")
        self.addCleanup(shutil.rmtree, tmp, True)
        log = os.path.join(tmp, "checker.txt")
        with open(log, "w") as f:
            f.write('$ hs-checker\n{"progress":true,"t":1.0,"reads":1}\n')
        path = os.path.join(tmp, "series.csv")
        # Ticks by hand: the thread's own first tick has nothing to read.
        smp = hslab.Sampler(path, interval=3600, keep_s=1e12).start()
        smp.watch(step="1b")
        smp.follow("checker", log)   # from the file's end: not t=1.0
        with open(log, "a") as f:
            f.write('{"progress":true,"t":100.0,"reads":10,"stale_reads":0,'
                    '"interval_read_p99_us":250}\nnoise\n'
                    '{"progress":true,"t":102.0,"reads":30,"stale_reads":4,'
                    '"interval_read_p99_us":300}\n{"progress":true,"t":1')
        smp.sample_once()
        with open(log, "a") as f:
            f.write('03.0,"reads":31,"stale_reads":4}\n'
                    '{"url":"x","stale_reads":4,"result":"stale"}\n')
        smp.sample_once()
        with open(log, "a") as f:
            f.write('{"progress":true,"t":104.0,"reads":40,"stale_reads":6}'
                    '\n{"progress":true,"t":104.5,"reads":3,"stale_reads":0}'
                    '\n')   # a restarted tool: its counters start again
        smp.watch(None)     # the last line belongs to step 1b
        with open(log, "a") as f:
            f.write('{"progress":true,"t":105.0,"reads":50}\n')
        smp.sample_once()    # no longer followed
        mem = smp.series()
        self.assertEqual(list(mem), ["checker"])
        c = mem["checker"]
        self.assertEqual(c["reads"], [(100.0, 10), (102.0, 30), (103.0, 31),
                                      (104.0, 40), (104.5, 3)])
        self.assertEqual(c["stale_reads"][-2], (104.0, 6))
        # No rate across the restart (not -12/s).
        self.assertEqual(c["stale_reads/s"], [(102.0, 2.0), (103.0, 0.0),
                                              (104.0, 2.0)])
        self.assertEqual(c["interval_read_p99_us"], [(100.0, 250),
                                                     (102.0, 300)])
        smp.stop()
        with open(path) as f:
            rows = list(csv.DictReader(f))
        self.assertTrue(rows)
        self.assertEqual({r["step"] for r in rows}, {"1b"})


# Fake tools for the front door: each records its name and succeeds;
# dpkg-query reports every package as missing, so setup would install.
FAKE_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "%s"
exit 0
"""
FAKE_DPKG_QUERY = """#!/bin/sh
echo "dpkg-query $*" >> "%s"
exit 1
"""


class FrontDoorTest(unittest.TestCase):
    """./hammerstack checks every option before anything slow (apt-get,
    cmake) runs, and says what is wrong on the first line."""

    HAMMERSTACK = os.path.join(hstest.SRC, "hammerstack")

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hs-door-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.fake = os.path.join(self.tmp, "bin")
        os.mkdir(self.fake)
        self.calls = os.path.join(self.tmp, "calls")
        for name in ("apt-get", "cmake", "sudo"):
            self.tool(name, FAKE_TOOL % self.calls)
        self.tool("dpkg-query", FAKE_DPKG_QUERY % self.calls)

    def tool(self, name, text, where=None):
        path = os.path.join(where or self.fake, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)

    def run_door(self, *args, path=None):
        env = dict(os.environ, HS_RUN_DIR=self.tmp,
                   PATH=path or self.fake + os.pathsep + os.environ["PATH"])
        return subprocess.run([self.HAMMERSTACK] + list(args), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=120 * hstest.SLOW)

    def slow_calls(self):
        try:
            with open(self.calls) as f:
                return [x for x in f.read().splitlines()
                        if not x.startswith("dpkg-query")]
        except FileNotFoundError:
            return []

    def test_bad_options_fail_first_and_fast(self):
        cases = [
            (["frob"], "hammerstack: unknown command 'frob'"),
            (["up", "--servers", "0"], "hammerstack up: --servers"),
            (["up", "--bogus"], "hammerstack up: "),
            (["up", "--scale", "x"], "hammerstack up: "),
            (["down", "extra"], "hammerstack down: "),
            (["walkthrough", "--bogus"], "hammerstack walkthrough: "),
            (["walkthrough", "--steps", "9"], "hammerstack walkthrough: "),
            (["demo", "--duration", "x"], "hammerstack demo: "),
            (["demo", "--servers", "0"], "hammerstack demo: --servers"),
            (["demo", "--scale-out", "1,0"], "hammerstack demo: --scale-out"),
            (["walkthrough", "--slo-ms", "0"],
             "hammerstack walkthrough: --slo-ms"),
            (["bench", "--rounds", "0"], "hammerstack bench: --rounds"),
            (["bench", "--only", "nope"], "hammerstack bench: --only"),
            (["seed", "--scale", "abc"], "hammerstack seed: --scale"),
            (["seed", "--bogus"], "hammerstack seed: "),
            (["serve", "--bogus"], "hammerstack serve: "),
            (["test", "--bogus"], "hammerstack test: "),
            (["build", "--bogus"], "hammerstack build: "),
            (["setup", "--bogus"], "hammerstack setup: "),
        ]
        for args, first in cases:
            with self.subTest(args=args):
                r = self.run_door(*args)
                err = r.stderr.decode().splitlines()
                self.assertEqual(r.returncode, 2, (args, err))
                self.assertTrue(err and err[0].startswith(first), err)
                self.assertLessEqual(len(err), 2, err)
                self.assertNotIn("usage: hammerstack [-h]",
                                 r.stderr.decode())
                self.assertEqual(self.slow_calls(), [], args)

    def test_the_fakes_would_see_an_install(self):
        # The same harness sees a real setup install and build.
        r = self.run_door("setup", "--demo")
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        calls = self.slow_calls()
        self.assertTrue(any(c.startswith("apt-get install") and
                            "linux-perf" in c for c in calls), calls)
        self.assertFalse(any("nginx-light" in c for c in calls), calls)
        os.unlink(self.calls)
        r = self.run_door("setup", "--bench")
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertTrue(any("nginx-light" in c and "haproxy" in c
                            for c in self.slow_calls()), self.slow_calls())

    def no_apt_path(self, drop=()):
        """A PATH like this one without apt-get and dpkg-query (and drop)."""
        d = os.path.join(self.tmp, "noapt")
        os.mkdir(d)
        for dirname in os.environ["PATH"].split(os.pathsep):
            try:
                names = os.listdir(dirname)
            except OSError:
                continue
            for n in names:
                if (n.startswith("apt") or n.startswith("dpkg") or
                        n in drop or os.path.lexists(os.path.join(d, n))):
                    continue
                os.symlink(os.path.join(dirname, n), os.path.join(d, n))
        return d

    def test_without_apt_names_what_is_needed(self):
        path = self.no_apt_path()
        r = self.run_door("setup", path=path)
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 0, err)
        self.assertIn("no apt-get here", err)
        self.assertIn("Debian or Ubuntu", err)
        shutil.rmtree(path)
        r = self.run_door("setup", path=self.no_apt_path(drop=("wrk",)))
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 1, err)
        self.assertIn("install these by hand", err)
        self.assertIn("wrk", err)
        self.assertNotIn("command not found", err)


class FirstStepsTest(unittest.TestCase):
    """What a first look at hs-server shows."""

    def test_busy_port_fails_before_seeding(self):
        d = tempfile.mkdtemp(prefix="hs-busy-")
        self.addCleanup(shutil.rmtree, d, True)
        db = os.path.join(d, "new.db")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            r = subprocess.run(
                [hstest.binpath("hs-server"), "--listen",
                 "127.0.0.1:%d" % port, "--db", db, "--scale", "0.05"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                timeout=120 * hstest.SLOW)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cannot listen", r.stderr.decode())
        self.assertNotIn("seeding", r.stderr.decode())
        self.assertFalse(os.path.exists(db), "seeded before binding")

    def test_json_ends_with_a_newline_and_stats_pretty(self):
        db = hstest.seeded_db(0.01)
        p, port = hstest.start_server(db, "--threads", "1")
        self.addCleanup(p.stop)
        for path, status in (("/json", 200), ("/products/1", 200),
                             ("/categories/1/top", 200), ("/healthz", 200),
                             ("/products/999999", 404), ("/nope", 404),
                             ("/stats", 200)):
            r = hstest.request(port, "GET", path)
            self.assertEqual(r.status, status, path)
            self.assertTrue(r.body.endswith(b"}\n") or
                            r.body.endswith(b"]\n"), (path, r.body[-20:]))
            self.assertEqual(int(r.header("Content-Length")), len(r.body))
            json.loads(r.body)
        self.assertEqual(hstest.request(port, "GET", "/plaintext").body,
                         b"Hello, World!")
        compact = hstest.request(port, "GET", "/stats").json()
        self.assertEqual(compact["data"], {"products": 1000,
                                           "categories": 1})
        self.assertEqual(hstest.request(port, "GET", "/catalog").json(),
                         {"products": 1000, "categories": 1})
        self.assertEqual(hstest.request(port, "POST", "/catalog").status,
                         405)
        r = hstest.request(port, "GET", "/stats?pretty=1")
        self.assertEqual(r.status, 200)
        self.assertIn(b'\n  "data": {\n', r.body)
        self.assertTrue(r.body.endswith(b"}\n"))
        self.assertEqual(set(json.loads(r.body)), set(compact))

    def test_cached_body_ends_with_one_newline(self):
        mc, mport = hstest.start_memcached()
        self.addCleanup(mc.stop)
        db = hstest.seeded_db(0.01)
        p, port = hstest.start_server(db, "--threads", "1", "--memcached",
                                      "127.0.0.1:%d" % mport)
        self.addCleanup(p.stop)
        first = hstest.request(port, "GET", "/products/3")
        again = hstest.request(port, "GET", "/products/3")
        self.assertEqual(again.header("X-Cache"), "HIT")
        self.assertEqual(again.body, first.body)
        self.assertTrue(again.body.endswith(b"}\n"), again.body[-10:])
        self.assertFalse(again.body.endswith(b"\n\n"))


class WalkthroughTest(unittest.TestCase):
    STEPS = ["0", "1", "1b", "2/1", "2/2", "2b/blocking", "2b/event", "3",
             "4"]

    def test_tiny_walkthrough_writes_the_report(self):
        db = hstest.seeded_db(0.01)
        out = tempfile.mkdtemp(prefix="hs-walk-")
        try:
            r = subprocess.run(
                [sys.executable, WALK, "--db", db, "--duration", "2",
                 "--warmup", "1", "--connections", "8", "--out", out,
                 "--server-threads", "2", "--fill-delay-ms", "20",
                 "--scale-out", "1,2", "--sweep-points", "0.5,1.0",
                 "--sweep-seconds", "0.5", "--sweep-warmup", "0.2",
                 "--cache-loss-seconds", "6"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                timeout=900 * hstest.SLOW,
                env=dict(os.environ, HS_RUN_DIR=out))
            self.assertEqual(r.returncode, 0, r.stderr.decode()[-3000:])
            for f in ("results.csv", "results.md", "report.html",
                      "sweeps.csv", "summary.json", "events.csv",
                      "cacheloss.csv"):
                self.assertGreater(os.path.getsize(os.path.join(out, f)), 60,
                                   f)
            with open(os.path.join(out, "results.csv")) as f:
                rows = list(csv.DictReader(f))
            self.assertEqual([x["step"] for x in rows], self.STEPS)
            by = {x["step"]: x for x in rows}
            # 0 stale reads at every lease step, step 4 (memcached killed
            # and back, leases) included; 1b is kept apart and shows the
            # race (its fills sleep on database threads, no budget).
            for step in ("1", "2/1", "2/2", "3", "4"):
                self.assertEqual(by[step]["stale_reads"], "0", step)
            self.assertGreater(int(by["1b"]["stale_reads"]), 0)
            self.assertEqual(by["1b"]["server_cpus"], "0")
            self.assertEqual(by["1b"]["correctness_only"], "1")
            self.assertEqual(by["1"]["correctness_only"], "0")
            for x in rows:
                self.assertGreater(float(x["req_s"]), 0, x)
                # Step 4's failure scene may answer 503; the blocking
                # pool's unserved users time out (its point).
                if x["step"] not in ("4", "2b/blocking"):
                    self.assertEqual(x["errors"], "0", x)
                if not x["step"].startswith("2b"):
                    self.assertGreater(int(x["checker_reads"]), 0, x)
            # The cache takes DB work away: fewer queries per request.
            self.assertLess(float(by["1"]["db_queries_per_req"]),
                            float(by["0"]["db_queries_per_req"]))
            self.assertGreater(float(by["0"]["db_time_pct"]), 0)
            self.assertGreater(float(by["1"]["cache_hit_pct"]), 0)
            # Scale-out: one row per server count, each server's share and
            # the limit named.
            self.assertEqual((by["2/1"]["servers"], by["2/2"]["servers"]),
                             ("1", "2"))
            self.assertIn("s2=", by["2/2"]["server_share"])
            for step in ("2/1", "2/2"):
                self.assertTrue(by[step]["limit"], step)
            # Async vs blocking, 256 keep-alive users and 8 workers: each
            # worker is held by the user it accepted, so most users are
            # never answered and their requests time out; the event loops
            # answer more of them.  (Their throughputs are not compared:
            # performance is measured, not asserted.)
            b, e = by["2b/blocking"], by["2b/event"]
            self.assertEqual((b["io"], e["io"]), ("blocking", "event"))
            self.assertEqual(b["offered_rps"], e["offered_rps"])
            self.assertGreaterEqual(int(b["waiting_clients"]), 256 - 2 * 8)
            self.assertGreater(int(b["timeouts"]), 0)
            self.assertLess(int(e["waiting_clients"]),
                            int(b["waiting_clients"]))
            for x in (b, e):
                self.assertGreater(float(x["busy_req_s"]), 0, x)
            self.assertGreater(int(b["busy_waiting"]), 0)
            # Each host's CPU use in the row; the series of every step.
            self.assertIn("hs-server-1=", by["0"]["host_cpu"])
            self.assertIn("memcached-1=", by["1"]["host_throttled_s"])
            with open(os.path.join(out, "series.csv")) as f:
                series = list(csv.DictReader(f))
            self.assertEqual({x["step"] for x in series}, set(self.STEPS))
            self.assertIn("hs-balancer", {x["component"] for x in series})
            # Losing the cache: bypasses while memcached is away, hits again
            # after the empty one is back.
            with open(os.path.join(out, "events.csv")) as f:
                ev = {(x["step"], x["event"]): float(x["time"])
                      for x in csv.DictReader(f)}
            killed = ev[("4", "memcached killed")]
            back = ev[("4", "memcached restarted")]
            s4 = [x for x in series if x["step"] == "4" and
                  x["component"] == "hs-server-1"]
            byp = [float(x["value"]) for x in s4
                   if x["metric"] == "cache.bypasses/s" and
                   killed < float(x["time"]) <= back + 1]
            self.assertGreater(max(byp + [0]), 0, "no bypass in the series")
            hits = [float(x["value"]) for x in s4
                    if x["metric"] == "cache.hits/s" and
                    float(x["time"]) > back + 0.5]
            self.assertGreater(max(hits + [0]), 0, "no recovery")
            # Open-loop sweeps: points and a capacity for every measured
            # step (2b's load is its users, at one offered rate); the
            # headline numbers.
            with open(os.path.join(out, "sweeps.csv")) as f:
                swept = {x["step"] for x in csv.DictReader(f)}
            self.assertFalse(swept & {"2b/blocking", "2b/event"}, swept)
            for x in rows:
                if x["step"] in ("1b", "4", "2b/blocking", "2b/event"):
                    continue
                self.assertIn(x["step"], swept)
                self.assertGreaterEqual(int(x["capacity_rps"]), 0, x)
                self.assertEqual(float(x["slo_ms"]), 50.0)
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
            labels = {h["label"]: h for h in summary["headline"]}
            self.assertIn("scale-out", labels)
            self.assertIn("event loop vs blocking pool", labels)
            self.assertEqual(labels["stale reads at the lease steps"]["value"],
                             0)
            self.assertEqual(len(summary["capacity"]), len(rows) - 1)
            self.assertIn("machine", summary["meta"])
            with open(os.path.join(out, "report.html")) as f:
                page = f.read()
            self.assertIn("<svg", page)
            self.assertNotIn("http://", page.replace(
                'xmlns="http://www.w3.org/2000/svg"', ""))
        finally:
            shutil.rmtree(out, ignore_errors=True)


class FlameGraphMessageTest(unittest.TestCase):
    """When perf cannot sample, the walkthrough says why, in its output
    and in the report (it used to leave the flame graph out silently)."""

    def setUp(self):
        sys.path.insert(0, os.path.join(hstest.SRC, "loadtest"))
        self.addCleanup(sys.path.remove, os.path.join(hstest.SRC, "loadtest"))
        import walkthrough
        self.w = walkthrough
        self.tmp = tempfile.mkdtemp(prefix="hs-perf-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.path = os.environ["PATH"]
        self.addCleanup(os.environ.__setitem__, "PATH", self.path)

    def test_no_perf_binary(self):
        os.environ["PATH"] = self.tmp  # an empty folder: no perf
        why = self.w.perf_problem()
        self.assertIn("perf is not installed", why)
        self.assertIn("linux-perf", why)

    def test_perf_refused(self):
        with open(os.path.join(self.tmp, "perf"), "w") as f:
            f.write("#!/bin/sh\necho 'Error: perf_event_open failed' >&2\n"
                    "exit 1\n")
        os.chmod(os.path.join(self.tmp, "perf"), 0o755)
        os.environ["PATH"] = self.tmp + os.pathsep + self.path
        why = self.w.perf_problem()
        self.assertIn("perf cannot sample", why)
        self.assertIn("perf_event_open failed", why)

    def test_report_says_why(self):
        rows = [{"step": "3", "setup": "profile", "req_s": 1, "p50_ms": 1,
                 "p99_ms": 1, "errors": 0, "db_queries_s": 1,
                 "cache_hit_pct": "", "stale_reads": 0, "checker_reads": 1,
                 "checker_writes": 1}]
        meta = {"date": "d", "wrk_threads": 1, "connections": 1,
                "duration": 1, "put": 0, "review": 0, "products": 1,
                "categories": 1, "machine": "m"}
        self.w.write_report(self.tmp, rows, {"3": "lesson"},
                            ({"server total (per request)": 1.0}, None,
                             "perf is not installed (x)"), meta)
        for name in ("results.md", "report.html"):
            with open(os.path.join(self.tmp, name)) as f:
                self.assertIn("perf is not installed (x)", f.read(), name)


if __name__ == "__main__":
    unittest.main()
