"""The peer-comparison benchmarks at smoke size against real processes:
loadtest/bench --quick runs bench-cache and bench-stack (and, in the normal
build, bench-server and bench-balancer) over a small seeded database and
prints one table of ratios with goals; bench-server and bench-balancer add
their open-loop rows (hs-load at two offered rates, achieved req/s and the
ratio of the corrected p99s of both sides, hs-load's own CPU at the highest
rate); the table files are written, every benchmark's summary line is there, nothing it started survives, and bad
options exit 2.  What needs nginx or HAProxy is skipped (and must show as
skipped in the table) when they are not installed."""

import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import hstest

LOADTEST = os.path.join(hstest.SRC, "loadtest")
BENCH = os.path.join(LOADTEST, "bench")
BENCH_STACK = os.path.join(LOADTEST, "bench-stack")
sys.path.insert(0, LOADTEST)
import benchlib  # noqa: E402

HAVE_WRK = benchlib.find_exe("wrk") is not None
HAVE_NGINX = benchlib.find_exe("nginx") is not None
HAVE_HAPROXY = benchlib.find_exe("haproxy") is not None


def run(args, timeout, tmpdir=None):
    env = dict(os.environ, HS_BIN_DIR=hstest.BIN)
    if tmpdir:
        # Every config, log and temp dir of the run lands here, so that
        # the processes it started can be found by their command lines.
        env["TMPDIR"] = tmpdir
    return subprocess.run([sys.executable] + args, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          timeout=timeout * hstest.SLOW, env=env)


def procs_with(text):
    """PIDs whose command line contains text."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if text.encode() in f.read():
                    found.append(int(d))
        except OSError:
            pass
    return found


def descendants(pid):
    """PIDs of every process below pid (children of children...)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def bench_log(out_dir, name):
    """The log bench --out kept of benchmark name, and its BENCHJSON
    summary; (log text, summary)."""
    with open(os.path.join(out_dir, "bench-%s.log" % name)) as f:
        log = f.read()
    j = [x for x in benchlib.parse_result_lines(log)
         if x["bench"] == name][0]
    return log, j


def alive(pids):
    left = []
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    left.append(pid)
        except OSError:
            pass
    return left


@unittest.skipUnless(HAVE_WRK, "wrk is not installed")
class BenchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hs-test-bench-")
        cls.db = hstest.seeded_db(0.01, cls.tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_table(self):
        only = ["cache", "stack"]
        if HAVE_NGINX and not hstest.SANITIZE:
            only.insert(0, "server")
        if HAVE_NGINX and HAVE_HAPROXY and not hstest.SANITIZE:
            only.insert(1, "balancer")
        out_dir = os.path.join(self.tmp, "out")
        run_tmp = tempfile.mkdtemp(prefix="run-", dir=self.tmp)
        r = run([BENCH, "--quick", "--only", ",".join(only), "--db", self.db,
                 "--out", out_dir], 240, run_tmp)
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out)

        # One table: a header, then rows with a ratio and a goal each.
        self.assertRegex(out, r"(?m)^comparison\s+ours\s+peer\s+ratio\s+goal")
        table = out[out.rindex("hammerstack bench,"):]
        want = {"cache": [r"cached vs uncached hs-server, req/s",
                          r"DB queries/s, uncached / cached"],
                "stack": [r"full stack \(cached mix\) vs HAProxy->nginx "
                          r"static"],
                "server": [r"hs-server /plaintext vs nginx static"],
                "balancer": [r"hs-balancer vs HAProxy",
                             r"hs-balancer vs nginx proxy"]}
        ratio = r"\s+\d+\s+\d+\s+([\d.]+x|inf)\s+>= [\d.]+x"
        for name in only:
            for what in want[name]:
                if name == "stack" and not (HAVE_NGINX and HAVE_HAPROXY):
                    self.assertRegex(table, what + r".*skipped")
                elif what.startswith("hs-balancer vs nginx"):
                    self.assertRegex(table, what + r"\s+\d+\s+\d+\s+[\d.]+x")
                else:
                    self.assertRegex(table, what + ratio)
                    self.assertRegex(table, what + r".*\b(met|NOT met)\b")

        # The open-loop rows (--quick: 50 % and 90 % of the slower peak):
        # achieved req/s of both, a p99 ratio, both p99s, achieved shares.
        open_rows = {"server": r"hs-server vs nginx", "balancer":
                     r"hs-balancer vs HAProxy"}
        n_open = 0
        for name in only:
            if name not in open_rows:
                continue
            got = re.findall(
                r"(?m)^" + open_rows[name] + r", open loop (\d+)% \(\d+ "
                r"req/s\)\s+\d+\s+\d+\s+[\d.]+x\s+-\s+(?:-|hs-load-bound\?)"
                r"\s+[\d.]+ / [\d.]+\s+ratio: p99 ours/peer; achieved "
                r"[\d.]+% / [\d.]+%", table)
            self.assertEqual(got, ["50", "90"], table)
            n_open += len(got)
            # The highest rate says what hs-load itself used.
            self.assertRegex(table, open_rows[name] + r", open loop 90%.*"
                             r"hs-load CPU \d+% / \d+% of a core")
            log, j = bench_log(out_dir, name)
            self.assertRegex(log, r"hs-load at the highest rate \(\d+ "
                                  r"req/s\): achieved .*of a core: ")
            self.assertEqual([p["share"] for p in j["open_loop"]],
                             [0.5, 0.9])
            for p in j["open_loop"]:
                for side in j["open_loop_targets"]:
                    self.assertGreater(p[side]["achieved_rps"], 0)
                    self.assertGreater(p[side]["p99_us"], 0)
                    self.assertEqual(p[side]["errors"] +
                                     p[side]["non2xx"], 0)
            self.assertGreater(j["hsload_top_cpu_share"], 0)
            self.assertGreater(j["hsload_top_achieved_share"], 0)

        # The files: bench.csv with one row per table row, bench.md.
        with open(os.path.join(out_dir, "bench.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows),
                         sum(len(want[n]) for n in only) + n_open)
        with open(os.path.join(out_dir, "bench.md")) as f:
            md = f.read()
        self.assertIn("| comparison | ours | peer | ratio |", md)

        # Every benchmark's own log is kept; the cached server really hit.
        log, j = bench_log(out_dir, "cache")
        self.assertGreater(j["uncached_rps"], 0)
        self.assertGreater(j["hit_pct"], 90.0)
        self.assertEqual(j["errors"] + j["non2xx"], 0)
        # Hits went through the read batcher (>= 1 key per multi-get).
        self.assertGreaterEqual(j["batch_avg"], 1.0)
        if HAVE_NGINX:
            # The static ceiling: nginx serving a product detail's bytes.
            self.assertGreater(j["static_rps"], 0)
            self.assertGreater(j["static_body_bytes"], 200)
            self.assertRegex(log, r"ceiling: nginx serving a \d+-byte body")
        if HAVE_NGINX and HAVE_HAPROXY:
            log, j = bench_log(out_dir, "stack")
            self.assertRegex(log, r"ratio full stack / HAProxy->nginx static "
                                  r"\(median req/s\): [\d.]+x")
            self.assertGreater(j["stack_rps"], 0)
            self.assertGreater(j["haproxy_rps"], 0)
            self.assertEqual(j["errors"] + j["non2xx"], 0)
            self.assertGreater(j["hit_pct"], 90.0)
            # The static body is the size of a product detail.
            self.assertGreater(j["body_bytes"], 200)

        # Nothing it started is left: every hs-server had our --db, every
        # nginx and HAProxy a config under run_tmp.
        self.assertEqual(self.survivors(run_tmp), [])

    def survivors(self, run_tmp):
        deadline = time.monotonic() + 20 * hstest.SLOW
        while time.monotonic() < deadline:
            left = procs_with(self.db) + procs_with(run_tmp)
            if not left:
                break
            time.sleep(0.1)
        return left

    @unittest.skipUnless(HAVE_NGINX and HAVE_HAPROXY,
                         "bench-stack needs nginx and haproxy")
    def test_stack_killed(self):
        """SIGKILL of bench-stack mid-run: PR_SET_PDEATHSIG stops the
        stack and the peers with it."""
        run_tmp = tempfile.mkdtemp(prefix="run-", dir=self.tmp)
        env = dict(os.environ, HS_BIN_DIR=hstest.BIN, TMPDIR=run_tmp)
        p = subprocess.Popen([sys.executable, BENCH_STACK, "--rounds", "1",
                              "--duration", "30", "--warmup", "0",
                              "--db", self.db],
                             stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env)
        try:
            deadline = time.monotonic() + 60 * hstest.SLOW
            seen = b""
            while b"read mix" not in seen:
                line = p.stdout.readline()
                if not line or time.monotonic() > deadline:
                    break
                seen += line
            self.assertIn(b"read mix", seen)
            self.assertTrue(procs_with(self.db))      # the hs-servers
            self.assertTrue(procs_with(run_tmp))      # nginx, HAProxy
            # memcached, hs-server x2, hs-balancer, 2 nginx, HAProxy, wrk
            below = descendants(p.pid)
            self.assertGreaterEqual(len(below), 8)
            p.kill()
            p.wait(10)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
        self.assertEqual(self.survivors(run_tmp), [])
        deadline = time.monotonic() + 20 * hstest.SLOW
        while alive(below) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(alive(below), [])

    def test_bad_options(self):
        for args in ([BENCH, "--only", "nope"], [BENCH, "--rounds", "0"],
                     [BENCH_STACK, "--rounds", "0"],
                     [BENCH_STACK, "--connections", "x"]):
            r = run(args, 30)
            self.assertEqual(r.returncode, 2, args)
            # bench says the error first ("bench: --only ..."); the
            # single benchmarks print argparse's usage, then "error: ".
            self.assertRegex(r.stdout.decode(), r"^bench: --|error: ")
        for exe in (BENCH, BENCH_STACK):
            r = run([exe, "--help"], 30)
            self.assertEqual(r.returncode, 0)
            self.assertIn(b"--quick", r.stdout)


if __name__ == "__main__":
    unittest.main()


@unittest.skipUnless(HAVE_WRK, "wrk is not installed")
class ScaleOutCheckTest(unittest.TestCase):
    """loadtest/scaleout-check at smoke size: a stack per server count
    through stack.py up/down, one line per round and count, the medians
    and the ratio, the limit named; every stack it started is gone.
    (Its numbers are measured, never asserted.)"""

    def test_rounds_medians_ratio_and_nothing_left(self):
        tmp = tempfile.mkdtemp(prefix="hs-scaleout-test-")
        self.addCleanup(shutil.rmtree, tmp, True)
        db = hstest.seeded_db(0.01, tmpdir=tmp)
        r = run([os.path.join(LOADTEST, "scaleout-check"), "--servers",
                 "1,2", "--rounds", "2", "--duration", "1", "--warmup", "0",
                 "--connections", "8", "--server-cpus", "0.5", "--mix",
                 "read", "--db", db, "--log", os.path.join(tmp, "log")],
                300, tmpdir=tmp)
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out)
        for rnd in (1, 2):
            for n in (1, 2):
                self.assertRegex(out, r"round %d, %d server\(s\): \d+ req/s"
                                 r".*limit: " % (rnd, n))
        self.assertIn("hs-server-2 ", out)
        self.assertIn("GET /products/{id}", out)
        self.assertRegex(out, r"2 server\(s\): median \d+ req/s")
        self.assertRegex(out, r"ratio 2/1 servers: x[0-9.]+ of the medians "
                         r"\(rounds: x[0-9.]+, x[0-9.]+\)")
        self.assertEqual(procs_with(db), [])

    def test_bad_options(self):
        for args in (["--servers", "0"], ["--servers", "a"],
                     ["--rounds", "0"], ["--mix", "x"]):
            r = run([os.path.join(LOADTEST, "scaleout-check")] + args, 30)
            self.assertEqual(r.returncode, 2, (args, r.stdout))
