"""The live dashboard and the slides report, looked at in headless Chromium
as a speaker's audience would: `up` serves the page, a short bounded load
runs through the balancer, and the page must load with no console error,
every chart must get points and the numbers must grow; data.json must
carry the series of every component.  The report is built from a small
fixture out dir (the files a walkthrough writes, some of them missing or
with older columns) and must write report.html and non-empty PNG and SVG
exports.  Screenshots land in the build folder (HS_BIN_DIR/..)."""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import hstest
import hslab
from hslab import browser, report
from hslab.dashboard import chartjs_path

STACK = os.path.join(hstest.SRC, "loadtest", "stack.py")
REPORT = os.path.join(hstest.SRC, "loadtest", "report.py")
SHOTS = os.path.join(os.path.dirname(hstest.BIN), "screenshots")


# Per vertical axis with a title: the px between its tick labels and its
# (rotated) title, from Chart.js's layout and the labels' measured widths.
AXIS_GAPS = r"""JSON.stringify([].concat(...Object.values(Chart.instances).map(
  ch => Object.values(ch.scales).filter(s => s.axis === "y" &&
    s.options.title.display).map(s => {
    const o = s.options, H = Chart.helpers, f = H.toFont(o.ticks.font);
    s.ctx.save(); s.ctx.font = f.string;
    const w = Math.max(0, ...s.ticks.map(t =>
      s.ctx.measureText(String(t.label)).width));
    s.ctx.restore();
    const tick = o.grid.drawTicks ? o.grid.tickLength : 0;
    const lh = H.toFont(o.title.font).lineHeight;
    const top = H.toPadding(o.title.padding).top;
    const gap = o.position === "right" ?
      (s.right - top - lh) - (s.left + tick + o.ticks.padding + w) :
      (s.right - tick - o.ticks.padding - w) - (s.left + top + lh);
    return [ch.canvas.id + "." + s.id, Math.round(gap), H.toFont(
      o.title.font).size, f.size];
  }))))"""


# Visible text under 24 px: [element, text, px].
SMALL_TEXT = r"""JSON.stringify((() => {
  const out = [], walk = el => el.childNodes.forEach(n => {
    if (n.nodeType === 1) return walk(n);
    if (n.nodeType !== 3 || !n.textContent.trim()) return;
    const p = n.parentElement;
    if (p.closest("[hidden]")) return;
    const px = parseFloat(getComputedStyle(p).fontSize);
    if (px < 24) out.push([p.id || p.className, n.textContent.trim(), px]);
  });
  walk(document.body);
  return out;
})())"""


def need_browser(test):
    if not browser.find_chromium():
        test.skipTest("chromium is not installed (./hammerstack setup --test)")
    if not chartjs_path():
        test.skipTest("Chart.js is not installed (./hammerstack setup)")


def read(path):
    with open(path) as f:
        return f.read()


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout * hstest.SLOW) as r:
        return r.status, r.headers, r.read()


class DashboardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = hstest.seeded_db(0.01)

    def setUp(self):
        self.run_dir = tempfile.mkdtemp(prefix="hs-run-")
        self.addCleanup(shutil.rmtree, self.run_dir, True)
        env = dict(os.environ, HS_RUN_DIR=self.run_dir)
        bal, admin, mc, dash = hslab.free_ports(4)
        srv = None
        for base in range(21000 + os.getpid() % 5000, 30000):
            if hslab.port_free(base) and hslab.port_free(base + 1) and \
                    base not in (bal, admin, mc, dash) and \
                    base + 1 not in (bal, admin, mc, dash):
                srv = base
                break
        self.bal, self.dash = bal, dash
        self.up = subprocess.Popen(
            [sys.executable, STACK, "up", "--servers", "2", "--db", self.db,
             "--port", str(bal), "--admin-port", str(admin),
             "--server-port", str(srv), "--memcached-port", str(mc),
             "--threads", "1", "--dashboard", "127.0.0.1:%d" % dash],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.addCleanup(self.stop_up)
        lines, deadline = [], time.monotonic() + 90 * hstest.SLOW
        while time.monotonic() < deadline:
            line = self.up.stdout.readline().decode()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        self.assertIn("dashboard: http://127.0.0.1:%d/\n" % dash, lines,
                      "".join(lines))

    def stop_up(self):
        if self.up.poll() is None:
            self.up.terminate()
            try:
                self.up.wait(60 * hstest.SLOW)
            except subprocess.TimeoutExpired:
                self.up.kill()
                self.up.wait()
        self.up.stdout.close()

    def load(self, seconds):
        """A bounded load through the balancer: 4 connections, seconds."""
        return subprocess.Popen(
            ["wrk", "-t1", "-c4", "-d%ds" % seconds,
             "http://127.0.0.1:%d/products/1" % self.bal],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def test_data_json_has_every_component(self):
        w = self.load(3)
        w.wait(60)
        time.sleep(2)
        status, headers, body = get("http://127.0.0.1:%d/data.json" %
                                    self.dash)
        self.assertEqual(status, 200)
        d = json.loads(body)
        for c in ("hs-server-1", "hs-server-2", "hs-balancer",
                  "memcached-1"):
            self.assertIn(c, d["series"])
        self.assertGreaterEqual(len(d["series"]["hs-server-1"]["requests"]),
                                2)
        self.assertIn("requests/s", d["series"]["hs-balancer"])
        self.assertIn("cmd_get", d["series"]["memcached-1"])
        # The per-second percentiles the latency chart draws.
        for c in ("hs-server-1", "hs-balancer"):
            p99 = d["series"][c].get("window.p99_us", [])
            self.assertTrue(p99 and max(v for _, v in p99) > 0, c)
        self.assertEqual(d["step"], "up")
        t = [p[0] for p in d["series"]["hs-server-1"]["requests"]]
        self.assertLessEqual(max(t) - min(t), 121)
        # The page's own files come from the local disk.
        for path, ctype in (("/", "text/html"),
                            ("/static/dashboard.js", "text/javascript")):
            status, headers, _ = get("http://127.0.0.1:%d%s" %
                                     (self.dash, path))
            self.assertEqual(status, 200)
            self.assertIn(ctype, headers["Content-Type"])
        if chartjs_path():
            self.assertEqual(get("http://127.0.0.1:%d/static/chart.js" %
                                 self.dash)[0], 200)

    def test_events_stream_one_message_a_second(self):
        s = socket.create_connection(("127.0.0.1", self.dash),
                                     10 * hstest.SLOW)
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        buf, deadline = b"", time.monotonic() + 10 * hstest.SLOW
        while buf.count(b"\n\ndata: ") < 2 and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        self.assertIn(b"text/event-stream", buf)
        msgs = [json.loads(x.split(b"\n\n")[0])
                for x in buf.split(b"data: ")[1:] if b"\n\n" in x]
        self.assertGreaterEqual(len(msgs), 2)
        self.assertIn("hs-server-1", msgs[-1]["latest"])

    def test_page_in_headless_chromium(self):
        need_browser(self)
        w = self.load(12)
        try:
            time.sleep(2)
            with browser.Browser(1280, 720) as b:
                b.open("http://127.0.0.1:%d/" % self.dash, settle=3)
                first = b.eval("JSON.stringify(window.hsStatus)")
                b.pump(3 * hstest.SLOW)
                second = json.loads(b.eval(
                    "JSON.stringify(window.hsStatus)"))
                second_small = b.eval(SMALL_TEXT)
                os.makedirs(SHOTS, exist_ok=True)
                shot = b.screenshot(os.path.join(SHOTS, "dashboard.png"))
                b.call("Input.dispatchKeyEvent", type="keyDown", key="t",
                       text="t")
                b.pump(1.5)
                theme = b.eval("document.documentElement.dataset.theme")
                gaps = json.loads(b.eval(AXIS_GAPS))
                b.screenshot(os.path.join(SHOTS, "dashboard-light.png"))
                errors = list(b.errors)
        finally:
            w.wait(60)
        first = json.loads(first)
        self.assertEqual(errors, [])
        self.assertEqual(second["errors"], [])
        for cid in ("c-rps", "c-lat", "c-db", "c-cache", "c-cpu"):
            self.assertGreater(second["points"].get(cid, 0), 0, cid)
        self.assertGreater(second["ticks"], first["ticks"])
        self.assertGreater(second["requests"], first["requests"])
        self.assertEqual(theme, "light")
        # Every axis title clear of its tick labels (the Database chart's
        # "q/request" touched them), at 24 px.
        self.assertEqual(len(gaps), 8, gaps)
        for name, gap, title_px, tick_px in gaps:
            self.assertGreaterEqual(gap, 10, (name, gaps))
            self.assertGreaterEqual(min(title_px, tick_px), 24, name)
        # No text on the page under 24 px.
        small = json.loads(second_small)
        self.assertEqual(small, [])
        self.assertGreater(os.path.getsize(shot), 10000)


def write_fixture(d, with_sweeps=True):
    """The files of a small walkthrough out dir."""
    rows = [
        {"step": "0", "setup": "one server, no cache", "req_s": 900,
         "p50_ms": 30, "p99_ms": 120, "errors": 0, "db_queries_s": 2700,
         "cache_hit_pct": "", "stale_reads": "n/a", "servers": 1,
         "db_queries_per_req": 2.97, "db_time_share": 0.8,
         "capacity_rps": 850, "slo_ms": 50},
        {"step": "1", "setup": "+ memcached (lease)", "req_s": 5100,
         "p50_ms": 4, "p99_ms": 20, "errors": 0, "db_queries_s": 3900,
         "cache_hit_pct": 92, "stale_reads": 0, "servers": 1,
         "db_queries_per_req": 0.76, "db_time_share": 0.2,
         "capacity_rps": 4000, "slo_ms": 50},
        {"step": "1b", "setup": "naive cache", "req_s": 5000, "p50_ms": 4,
         "p99_ms": 25, "errors": 0, "db_queries_s": 3000,
         "cache_hit_pct": 90, "stale_reads": 12, "servers": 1,
         "correctness_only": 1},
    ]
    for n, r in ((1, 900), (2, 3500), (4, 6400)):
        rows.append({"step": "2", "setup": "balancer + %d servers" % n,
                     "req_s": r, "p50_ms": 5, "p99_ms": 30, "errors": 0,
                     "db_queries_s": 100, "cache_hit_pct": 95,
                     "stale_reads": 0, "servers": n})
    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(os.path.join(d, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    if with_sweeps:
        with open(os.path.join(d, "sweeps.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "offered_rps", "achieved_rps", "p50_us",
                        "p90_us", "p99_us", "p999_us", "max_us", "errors",
                        "non2xx", "late"])
            for step, cap in (("0", 850), ("1", 4000)):
                for x in (0.25, 0.5, 0.75, 1.0, 1.25):
                    off = cap * x
                    p99 = 2000 * (1 + 30 * max(0, x - 0.9))
                    w.writerow([step, off, min(off, cap), p99 / 4, p99 / 2,
                                p99, p99 * 2, p99 * 3, 0, 0, 0])
    t0 = 1700000000.0
    with open(os.path.join(d, "series.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "step", "component", "metric", "value"])
        for i in range(30):
            down = 10 <= i < 18
            w.writerow([t0 + i, "4", "hs-balancer", "requests/s",
                        1500 if down else 5000])
            w.writerow([t0 + i, "4", "hs-server-1", "db.queries/s",
                        4000 if down else (2000 if i < 22 else 300)])
            w.writerow([t0 + i, "4", "hs-server-1", "cache.hits/s",
                        0 if down else 4000])
            w.writerow([t0 + i, "4", "hs-server-1", "cache.misses/s",
                        0 if down else (2000 if i < 22 else 100)])
        # hs-checker's progress lines in steps 1 and 1b.
        for step, t1, stale in (("1", t0 + 100, 0), ("1b", t0 + 200, 7)):
            for i in range(1, 6):
                w.writerow([t1 + i, step, "checker", "elapsed_s", i])
                w.writerow([t1 + i, step, "checker", "stale_reads",
                            stale * i])
                w.writerow([t1 + i, step, "checker", "reads", 100 * i])
    with open(os.path.join(d, "events.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "step", "event"])
        w.writerow([t0 + 10, "4", "memcached killed"])
        w.writerow([t0 + 18, "4", "memcached back, empty"])
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump({"headline": [
            {"label": "with the cache", "value": "900 → 5,100 req/s",
             "detail": "step 0 → 1"},
            {"label": "DB queries per request", "value": "2.97 → 0.76",
             "detail": "step 0 → 1"},
            {"label": "4 servers", "value": "×7.1", "detail": "step 2"}],
            "meta": {"date": "2026-01-01 00:00 UTC"}}, f)


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.out = tempfile.mkdtemp(prefix="hs-report-")
        self.addCleanup(shutil.rmtree, self.out, True)

    def test_report_from_fixture_writes_exports(self):
        write_fixture(self.out)
        p = subprocess.run([sys.executable, REPORT, self.out],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=180 * hstest.SLOW)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        page = read(os.path.join(self.out, "report.html"))
        self.assertIn("900 → 5,100 req/s", page)
        ids = ("throughput", "db", "p99", "scaleout", "latency-load",
               "stale", "cache-loss")
        for cid in ids:
            svg = os.path.join(self.out, "charts", cid + ".svg")
            self.assertGreater(os.path.getsize(svg), 500, cid)
            self.assertIn("<text", read(svg))
        # 1b is a correctness demonstration: not in the throughput chart.
        spec = json.loads(page.split('type="application/json">')[1]
                          .split("</script>")[0])
        thr = [c for c in spec["charts"] if c["id"] == "throughput"][0]
        self.assertNotIn("1b", thr["x"]["labels"])
        # The checker's running stale count per step, from series.csv.
        st = [c for c in spec["charts"] if c["id"] == "stale"][0]
        self.assertEqual([d["label"] for d in st["datasets"]],
                         ["step 1", "step 1b"])
        self.assertEqual(st["datasets"][1]["data"],
                         [[i, 7 * i] for i in range(0, 6)])
        if browser.find_chromium():
            os.makedirs(SHOTS, exist_ok=True)
            for cid in ids:
                png = os.path.join(self.out, "charts", cid + ".png")
                self.assertGreater(os.path.getsize(png), 5000, cid)
                with open(png, "rb") as f:
                    self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
                shutil.copy(png, os.path.join(SHOTS, "report-" + cid +
                                              ".png"))

    def test_report_degrades_without_files(self):
        # An older run: results.csv only, with today's columns, no
        # sweeps, series, events or summary.
        with open(os.path.join(self.out, "results.csv"), "w") as f:
            f.write("step,setup,req_s,p50_ms,p99_ms,errors,db_queries_s,"
                    "cache_hit_pct,stale_reads\n"
                    "0,one server,1091,20,80,0,3242,,n/a\n"
                    "1,+ memcached,5197,3,15,0,3932,91,0\n")
        written = report.build(self.out, png=False)
        page = read(os.path.join(self.out, "report.html"))
        self.assertIn("1,091 → 5,197 req/s", page)
        names = {os.path.basename(p) for p in written}
        self.assertIn("throughput.svg", names)
        self.assertNotIn("scaleout.svg", names)
        # An empty out dir still gives a page.
        empty = tempfile.mkdtemp(prefix="hs-report-")
        self.addCleanup(shutil.rmtree, empty, True)
        report.build(empty, png=False)
        self.assertTrue(os.path.exists(os.path.join(empty, "report.html")))


if __name__ == "__main__":
    unittest.main()
