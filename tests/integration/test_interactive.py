"""The walkthrough's step-through mode (--interactive), driven through a
pipe as a speaker would drive it from a terminal: each step's stack comes
up and waits, idle but answering, until a line on stdin or the dashboard's
POST /next; "q" stops everything (exit 0, no process left behind)."""

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import hstest
from hslab import browser
from hslab.dashboard import Dashboard
from hslab.pauser import Pauser

WALK = os.path.join(hstest.SRC, "loadtest", "walkthrough.py")


def http(url, method="GET", headers=None):
    req = urllib.request.Request(url, method=method, data=b"" if
                                 method == "POST" else None,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10 * hstest.SLOW) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def descendants(pid):
    """Every process below pid, from /proc's children lists."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, task)) as f:
                    kids = [int(x) for x in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            continue
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Walk:
    """The walkthrough in step-through mode with its output in a queue."""

    def __init__(self, test, steps, duration="1"):
        self.out = tempfile.mkdtemp(prefix="hs-interactive-")
        test.addCleanup(shutil.rmtree, self.out, ignore_errors=True)
        db = hstest.seeded_db(0.01, tmpdir=self.out)
        self.p = subprocess.Popen(
            [sys.executable, WALK, "--interactive", "--db", db,
             "--steps", steps, "--duration", duration, "--warmup", "0",
             "--connections", "4", "--server-threads", "1", "--no-sweep",
             "--no-perf", "--out", self.out, "--dashboard", "127.0.0.1:0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1,
            env=dict(os.environ, HS_RUN_DIR=self.out))
        test.addCleanup(self.kill)
        self.lines, self.seen = queue.Queue(), []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, pattern, timeout=60):
        """The first line from now on matching pattern (a regex)."""
        deadline = time.monotonic() + timeout * hstest.SLOW
        while True:
            try:
                line = self.lines.get(timeout=max(
                    0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError("no line matching %r; output:\n%s" % (
                    pattern, "\n".join(self.seen[-40:])))
            self.seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m

    def prompt(self, label):
        """Waits for the step's pause; {"curl", "stats", "dashboard"}."""
        got = {}
        m = self.expect(r"dashboard: (http://\S+)") if not hasattr(
            self, "dash") else None
        if m:
            self.dash = m.group(1).rstrip("/")
        while True:
            m = self.expect(r"^\s*(try|stats):\s+(.*)$|^waiting: (.*)$")
            if m.group(3):
                if m.group(3) != label:
                    raise AssertionError("waiting at %r, not %r" % (
                        m.group(3), label))
                return got
            if m.group(1) == "try":
                got["curl"] = m.group(2).split("curl -i ", 1)[1]
            else:
                got.setdefault("stats", m.group(2).split()[0])

    def send(self, text):
        self.p.stdin.write(text)
        self.p.stdin.flush()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)


def requests(stats_url):
    status, body = http(stats_url)
    assert status == 200, (status, body)
    return json.loads(body)["requests"]


class InteractiveTest(unittest.TestCase):

    def test_enter_then_dashboard_next_through_two_steps(self):
        w = Walk(self, "0,1")
        got = w.prompt("step 0 (1/2)")
        # The stack is up and answers while it waits; no load starts.
        status, _ = http(got["curl"])
        self.assertEqual(status, 200)
        n0 = requests(got["stats"])
        time.sleep(1.5)
        self.assertLessEqual(requests(got["stats"]) - n0, 3,
                             "load started before Enter")
        status, body = http(w.dash + "/data.json")
        d = json.loads(body)
        self.assertEqual((d["interactive"], d["waiting"]),
                         (True, "step 0 (1/2)"))
        w.send("\n")
        w.expect(r"^0\s+one server, no cache\s+[0-9.]+")
        got = w.prompt("step 1 (2/2)")
        self.assertEqual(http(got["curl"])[0], 200)
        # Another site in the speaker's browser cannot step the talk.
        status, _ = http(w.dash + "/next", "POST",
                         {"Origin": "http://example.com"})
        self.assertEqual(status, 403)
        status, body = http(w.dash + "/next", "POST")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"next": "step 1 (2/2)"})
        w.expect(r"^1\s+\+ memcached \(lease\)\s+[0-9.]+")
        w.expect(r"^report: ")
        self.assertEqual(w.p.wait(30 * hstest.SLOW), 0,
                         "\n".join(w.seen[-40:]))
        with open(os.path.join(w.out, "results.csv")) as f:
            steps = [line.split(",")[0] for line in f][1:]
        self.assertEqual(steps, ["0", "1"])

    def test_checker_series_on_the_dashboard(self):
        """Step 1 runs hs-checker beside the load: its progress lines
        reach data.json as the component "checker" (running totals at
        their own times, within the step), and the page's last tile shows
        its stale reads.  Step 0 then waits, so the dashboard stays up."""
        w = Walk(self, "1,0", duration="3")
        w.prompt("step 1 (1/2)")
        t0 = time.time()
        w.send("\n")
        w.expect(r"^1\s+\+ memcached \(lease\)\s+[0-9.]+")
        w.prompt("step 0 (2/2)")
        t1 = time.time()
        status, body = http(w.dash + "/data.json")
        self.assertEqual(status, 200)
        chk = json.loads(body)["series"].get("checker")
        self.assertIsNotNone(chk, "no checker series in data.json")
        reads = chk["reads"]
        self.assertGreaterEqual(len(reads), 2, chk)
        self.assertTrue(all(t0 <= t <= t1 for t, _ in reads), (t0, reads))
        self.assertTrue(all(a[0] < b[0] and a[1] <= b[1]
                            for a, b in zip(reads, reads[1:])), reads)
        self.assertGreater(reads[-1][1], 0)
        self.assertEqual(len(chk["stale_reads"]), len(reads))
        self.assertIn("interval_read_p99_us", chk)
        # The step's row and the series agree on the stale count.
        with open(os.path.join(w.out, "step-1-checker.txt")) as f:
            final = [json.loads(x) for x in f if x.startswith("{") and
                     not x.startswith('{"progress"')]
        self.assertEqual(final[-1]["stale_reads"], chk["stale_reads"][-1][1])
        self.assertEqual(final[-1]["reads"], reads[-1][1])
        if browser.find_chromium():
            before = time.time()
            with browser.Browser(1280, 720) as b:
                b.open(w.dash + "/", settle=1)
                label = b.eval("document.getElementById('l-stale')"
                               ".textContent")
                num = b.eval("document.getElementById('n-stale')"
                             ".textContent")
                self.assertEqual(b.errors, [])
            after = time.time()
            # The tile keeps the checker's count for a minute after its
            # last line (then memcached's gets/s again); a loaded machine
            # may take that long to bring step 0 up.
            if after - reads[-1][0] < 50:
                self.assertEqual(label, "stale reads")
                self.assertEqual(num, str(chk["stale_reads"][-1][1]))
            elif before - reads[-1][0] > 70:
                self.assertEqual(label, "memcached gets/s")
        w.send("q\n")
        self.assertEqual(w.p.wait(30 * hstest.SLOW), 0,
                         "\n".join(w.seen[-40:]))

    def test_q_stops_everything(self):
        """q at the first pause: exit 0 (a stop the speaker asked for),
        every process of the stack gone, the (empty) report written."""
        w = Walk(self, "0,1")
        got = w.prompt("step 0 (1/2)")
        self.assertEqual(http(got["curl"])[0], 200)
        pids = descendants(w.p.pid)
        self.assertTrue(pids, "no child process recorded")
        w.send("q\n")
        w.expect(r"stopped at step 0; partial report in ")
        self.assertEqual(w.p.wait(30 * hstest.SLOW), 0,
                         "\n".join(w.seen[-40:]))
        left = [p for p in pids if alive(p)]
        self.assertEqual(left, [], "processes left behind")
        self.assertTrue(os.path.isfile(os.path.join(w.out, "report.html")))
        with open(os.path.join(w.out, "results.csv")) as f:
            self.assertEqual([line.split(",")[0] for line in f][1:], [])

    def test_nothing_to_say_next_is_refused(self):
        """/dev/null on stdin and no dashboard: refused at once rather
        than a walkthrough that no one could move on."""
        r = subprocess.run([sys.executable, WALK, "--interactive",
                            "--no-dashboard", "--check-args"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           timeout=30 * hstest.SLOW)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--interactive needs a terminal or a pipe", r.stderr)


class NextButtonTest(unittest.TestCase):
    """The dashboard page in headless Chromium: the next button appears
    only in step-through mode, says which step waits, and key n loads it."""

    @unittest.skipUnless(browser.find_chromium(), "chromium not installed")
    def test_key_n_loads_the_step_waiting(self):
        d = Dashboard(None, "127.0.0.1", 0, interval=0.2).start()
        self.addCleanup(d.stop)
        with browser.Browser(1280, 720) as b:
            b.open(d.url)
            self.assertTrue(b.eval("document.getElementById('next').hidden"))
            p = Pauser(None)
            d.pauser = p
            res = []
            t = threading.Thread(target=lambda: res.append(
                p.wait("step 0 (1/2)")), daemon=True)
            t.start()
            deadline = time.monotonic() + 20 * hstest.SLOW
            shown = ""
            while time.monotonic() < deadline and "step 0" not in shown:
                b.pump(0.3)
                shown = b.eval("(e => e.hidden || e.disabled ? '' : "
                               "e.textContent)(document.getElementById("
                               "'next'))")
            self.assertEqual(shown, "next \u25b6 step 0 (1/2)")
            b.eval("document.dispatchEvent(new KeyboardEvent('keydown', "
                   "{key: 'n'}))")
            t.join(10 * hstest.SLOW)
            self.assertEqual(res, [True])
            b.pump(0.5)
            self.assertEqual(b.errors, [])


if __name__ == "__main__":
    unittest.main()
