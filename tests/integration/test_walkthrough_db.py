"""Walkthrough step 5, the database server: PostgreSQL with a CPU budget
(5a), + streaming read replicas (5b), replica lag's stale reads with
read-your-writes off and on (5c), end to end in a short form; what the
sampler makes of the servers' db.replicas; the live dashboard's lag tile
and chart; ./hammerstack installing PostgreSQL for step 5 only.

Structure only (rows, numbers measured, stale reads counted, off > 0):
no timing is asserted."""

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import hstest
from hslab import browser
from hslab.dashboard import Dashboard, chartjs_path
from hslab.sampler import replica_metrics

WALK = os.path.join(hstest.SRC, "loadtest", "walkthrough.py")
HAMMERSTACK = os.path.join(hstest.SRC, "hammerstack")
SHOTS = os.path.join(os.path.dirname(hstest.BIN), "screenshots")


def have_postgres():
    try:
        from hslab import pg
        pg.pg_bindir()
        return True
    except Exception:
        return False


def procs_with(text):
    """PIDs whose command line mentions text."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if text.encode() in f.read():
                    out.append(int(d))
        except OSError:
            pass
    return out


@unittest.skipUnless(have_postgres(), "PostgreSQL is not installed "
                     "(./hammerstack setup --pg)")
class StepFiveTest(unittest.TestCase):
    def test_step_5_end_to_end(self):
        db = hstest.seeded_db(0.01)
        out = tempfile.mkdtemp(prefix="hs-walk5-")
        os.chmod(out, 0o755)        # postgres may run as nobody
        self.addCleanup(shutil.rmtree, out, True)
        pg_dir = os.path.join(out, "pg")
        r = subprocess.run(
            [sys.executable, WALK, "--steps", "5", "--db", db, "--scale",
             "0.01", "--pg-dir", pg_dir, "--duration", "2", "--warmup", "1",
             "--connections", "8", "--server-threads", "2", "--no-sweep",
             "--no-dashboard", "--out", out],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=300 * hstest.SLOW, env=dict(os.environ, HS_RUN_DIR=out))
        said = r.stdout.decode() + r.stderr.decode()
        self.assertEqual(r.returncode, 0, said[-3000:])
        self.assertIn("replicas apply WAL 200 ms late, as a distant or busy "
                      "replica would", said)
        with open(os.path.join(out, "results.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([x["step"] for x in rows],
                         ["5a", "5b", "5c/off", "5c/on"])
        by = {x["step"]: x for x in rows}
        for x in rows:
            self.assertGreater(float(x["req_s"]), 0, x)
            self.assertGreater(int(x["checker_reads"]), 0, x)
            self.assertGreater(int(x["checker_writes"]), 0, x)
            self.assertIn("postgres=", x["db_cpu"], x)
            self.assertTrue(x["limit"], x)
        # 5a: the primary alone; 5b and 5c: two replicas, their lag
        # measured as numbers and the reads shared out.
        self.assertEqual(by["5a"]["replicas"], "0")
        self.assertEqual(by["5a"]["lag_ms"], "")
        for step in ("5b", "5c/off", "5c/on"):
            x = by[step]
            self.assertEqual(x["replicas"], "2", step)
            self.assertIn("pg-replica-2=", x["db_cpu"], step)
            self.assertIn("replica-1=", x["read_share"], step)
            for k in ("lag_bytes", "lag_ms", "lag_ms_max"):
                self.assertGreaterEqual(int(x[k]), 0, (step, k))
        self.assertEqual(by["5b"]["replica_delay_ms"], "0")
        # 5c: replicas late on purpose; stale reads with RYW off, and
        # with RYW on whatever the checker counts (a number).
        self.assertEqual((by["5c/off"]["read_your_writes"],
                          by["5c/on"]["read_your_writes"]), ("off", "on"))
        for step in ("5c/off", "5c/on"):
            self.assertEqual(by[step]["replica_delay_ms"], "200")
            self.assertEqual(by[step]["correctness_only"], "1")
            self.assertGreaterEqual(int(by[step]["lag_ms"]), 200, step)
        self.assertGreater(int(by["5c/off"]["stale_reads"]), 0)
        self.assertGreaterEqual(int(by["5c/on"]["stale_reads"]), 0)
        # The lag in the series, the report's slides and the headline.
        with open(os.path.join(out, "series.csv")) as f:
            lag = {(x["step"], x["component"]) for x in csv.DictReader(f)
                   if x["metric"] == "lag_bytes"}
        self.assertIn(("5b", "pg-replica-1"), lag)
        self.assertIn(("5c/off", "pg-replica-2"), lag)
        with open(os.path.join(out, "report.html")) as f:
            page = f.read()
        for slide in ("s-replicas", "s-replica-lag"):
            self.assertIn(slide, page)
        with open(os.path.join(out, "summary.json")) as f:
            labels = {h["label"] for h in json.load(f)["headline"]}
        self.assertTrue({"read replicas", "replica lag",
                         "stale reads from replicas"} <= labels, labels)
        # Nothing left running on the cluster; its replicas removed.
        self.assertEqual(procs_with(pg_dir), [])
        self.assertEqual(sorted(os.listdir(pg_dir)),
                         ["data", "postgres.log"])

    def test_bad_options_fail_fast(self):
        for args, what in ((["--replicas", "0"], "--replicas"),
                           (["--db-cpus", "0.001"], "--db-cpus"),
                           (["--replica-delay-ms", "-1"],
                            "--replica-delay-ms"),
                           (["--steps", "5d"], "unknown step")):
            r = subprocess.run([sys.executable, WALK, "--steps", "5",
                                "--check-args"] + args,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(what, r.stderr.decode().splitlines()[0])


class ReplicaMetricsTest(unittest.TestCase):
    """The sampler's view of the servers' db.replicas (a list, which
    flatten() leaves out): the worst lag any server saw, reads summed."""

    def test_worst_lag_and_summed_reads(self):
        def doc(lag, age, reads, prim):
            return {"db": {"replicas": {
                "read_your_writes": True, "primary_reads": prim,
                "list": [{"url": "a", "up": True, "reads": reads,
                          "behind": 1, "lag_bytes": lag,
                          "replay_age_ms": age},
                         {"url": "b", "up": False, "reads": 7,
                          "behind": 0, "lag_bytes": None,
                          "replay_age_ms": None}]}}}
        out = {}
        # hs-server gives the age in ms with three decimals.
        replica_metrics(doc(100, 19.6, 5, 3), out)
        replica_metrics(doc(4000, 10.0, 6, 1), out)
        # Caught up: an old last commit is no lag.
        replica_metrics(doc(0, 900.0, 0, 0), out)
        replica_metrics({"db": {"queries": 9}}, out)   # no replicas
        self.assertEqual(out["pg-replica-1"],
                         {"reads": 11, "behind": 3, "lag_bytes": 4000,
                          "replay_age_ms": 900, "lag_ms": 20})
        self.assertEqual(out["pg-replica-2"], {"reads": 21, "behind": 0})
        self.assertEqual(out["postgres"], {"reads": 4})


class FakeSampler:
    """series() of a stack with two replicas (or none), ending now."""

    def __init__(self, replicas):
        self.replicas = replicas

    def series(self):
        now = time.time()
        ts = [now - 10 + i for i in range(11)]
        out = {"hs-server-1": {"requests/s": [(t, 500.0) for t in ts],
                               "requests": [(t, 500 * i)
                                            for i, t in enumerate(ts)]}}
        for k in range(1, self.replicas + 1):
            out["pg-replica-%d" % k] = {
                "lag_bytes": [(t, 2048.0 * k) for t in ts],
                "lag_ms": [(t, 100.0 * k + 50) for t in ts]}
        return out


class LagTileTest(unittest.TestCase):
    """With replicas the dashboard shows the worst one's lag (ms and kB)
    in the database tile's place and charts each replica's; without, the
    database tile as before.  No tile label cut off either way."""

    def page(self, replicas, shot=None):
        if not browser.find_chromium() or not chartjs_path():
            self.skipTest("chromium or Chart.js is not installed")
        dash = Dashboard(FakeSampler(replicas), "127.0.0.1", 0).start()
        try:
            with browser.Browser(1280, 720) as b:
                b.open(dash.url, settle=2)
                st = json.loads(b.eval("JSON.stringify(window.hsStatus)"))
                st["tile_hidden"] = b.eval(
                    "document.getElementById('t-lag').hidden")
                st["label"] = b.eval(
                    "document.getElementById('l-lag').textContent")
                st["dbq_hidden"] = b.eval(
                    "document.getElementById('t-dbq').hidden")
                # Tile labels cut off (seven tiles did not fit).
                st["overflow"] = json.loads(b.eval(
                    "JSON.stringify([...document.querySelectorAll("
                    "'.tile:not([hidden]) .lbl')].filter(e => e.scrollWidth"
                    " > e.clientWidth).map(e => e.textContent))"))
                if shot:
                    os.makedirs(SHOTS, exist_ok=True)
                    b.screenshot(os.path.join(SHOTS, shot))
                st["browser_errors"] = list(b.errors)
        finally:
            dash.stop()
        return st

    def test_lag_tile_with_replicas(self):
        st = self.page(2, "dashboard-replicas.png")
        self.assertEqual(st["errors"], [])
        self.assertEqual(st["browser_errors"], [])
        self.assertFalse(st["tile_hidden"])
        self.assertTrue(st["dbq_hidden"])
        self.assertEqual(st["lag"], {"ms": 250, "kb": 4})
        self.assertEqual(st["label"], "lag ms, 4 kB")
        self.assertEqual(st["overflow"], [])
        self.assertGreater(st["points"]["c-db"], 0)

    def test_no_tile_without_replicas(self):
        st = self.page(0)
        self.assertEqual(st["errors"], [])
        self.assertTrue(st["tile_hidden"])
        self.assertFalse(st["dbq_hidden"])
        self.assertIsNone(st["lag"])
        self.assertEqual(st["overflow"], [])


# Fake apt-get / dpkg-query / cmake for the front door (as test_stack's):
# every package is missing, installs are recorded.
FAKE_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "%s"
exit 0
"""
FAKE_DPKG_QUERY = """#!/bin/sh
exit 1
"""


class InstallTest(unittest.TestCase):
    """./hammerstack walkthrough installs postgresql when --steps has step
    5, and not otherwise."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hs-door5-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        fake = os.path.join(self.tmp, "bin")
        os.mkdir(fake)
        self.calls = os.path.join(self.tmp, "calls")
        for name, text in (("apt-get", FAKE_TOOL % self.calls),
                           ("cmake", FAKE_TOOL % self.calls),
                           ("sudo", FAKE_TOOL % self.calls),
                           ("dpkg-query", FAKE_DPKG_QUERY)):
            with open(os.path.join(fake, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(fake, name), 0o755)
        # No wrk on the PATH: the walkthrough stops right after setup.
        nowrk = os.path.join(self.tmp, "nowrk")
        os.mkdir(nowrk)
        for dirname in os.environ["PATH"].split(os.pathsep):
            try:
                names = os.listdir(dirname)
            except OSError:
                continue
            for n in names:
                if n != "wrk" and not os.path.lexists(
                        os.path.join(nowrk, n)):
                    os.symlink(os.path.join(dirname, n),
                               os.path.join(nowrk, n))
        self.path = fake + os.pathsep + nowrk

    def installs(self, *args):
        try:
            os.unlink(self.calls)
        except OSError:
            pass
        r = subprocess.run([HAMMERSTACK, "walkthrough", "--no-dashboard",
                            "--out", os.path.join(self.tmp, "out")] +
                           list(args),
                           env=dict(os.environ, PATH=self.path,
                                    HS_RUN_DIR=self.tmp),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120)
        self.assertIn("wrk is not installed", r.stderr.decode())
        with open(self.calls) as f:
            return [c for c in f.read().splitlines()
                    if c.startswith("apt-get install")]

    def test_postgresql_for_step_5_only(self):
        for args in (["--steps", "1,5"], ["--steps=5c"]):
            calls = self.installs(*args)
            self.assertTrue(any("postgresql" in c.split() for c in calls),
                            (args, calls))
        calls = self.installs("--steps", "0,1")
        self.assertTrue(calls)
        self.assertFalse(any("postgresql" in c.split() for c in calls),
                         calls)


if __name__ == "__main__":
    unittest.main()
