"""Step 3 of the walkthrough, the profile: perf samples a running hs-server
under the update mix and the summary names our own functions with their
modules, the share of samples without a function name and what to do next.
The summary's arithmetic is also checked on a fixed perf script text, so
that part runs where perf cannot; and our functions keep frame pointers.
The flame graph is drawn from fixed samples and driven in headless
Chromium (zoom, search); its screenshot lands in the build folder."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import types
import unittest
import xml.etree.ElementTree as ET
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import hstest
from hslab import browser

sys.path.insert(0, os.path.join(hstest.SRC, "loadtest"))
import stack as hs  # noqa: E402
import walkthrough as wt  # noqa: E402

# Four samples as perf script prints them: SQLite under our query, a
# memcached send in the kernel under our cache client, an unnamed frame in
# SQLite, and one in the balancer.
SCRIPT = """\
hs-server  101  10.000001:    2004008 cpu-clock:
\t  f194e sqlite3VdbeExec+0x727e (/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6)
\t  f339e sqlite3_step+0x13e (/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6)
\t   dad8 db_product_detail+0xc8 (/x/build/bin/hs-server)
\t   97cc srv_product_body+0x3c (/x/build/bin/hs-server)

hs-server  101  10.000002:    2004008 cpu-clock:
\tffffffff8206b15a tcp_sendmsg+0x3a ([kernel.kallsyms])
\tffffffff8225a101 __sys_sendmsg+0x71 ([kernel.kallsyms])
\tffffffff8225a101 do_syscall_64+0x71 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe+0x76 ([kernel.kallsyms])
\t 108ef3 __libc_sendmsg+0x13 (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t  13f1c cache_mc_gets+0xfc (/x/build/bin/hs-server)
\t  14027 cache_batcher_run+0x57 (/x/build/bin/hs-server)

hs-server  101  10.000003:    2004008 cpu-clock:
\t  f7ccf [unknown] (/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6)
\t  f339e sqlite3_step+0x13e (/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6)
\t   e0fe db_category_top+0x2ae (/x/build/bin/hs-server)

hs-balancer  102  10.000004:    2004008 cpu-clock:
\t   444c bal_io_flush+0x1c (/x/build/bin/hs-balancer)
\t   444c main+0xd1c (/x/build/bin/hs-balancer)
"""


class ProfileSummaryTest(unittest.TestCase):
    def test_summary_of_a_fixed_script(self):
        summ = wt.profile_summary(wt.parse_perf_script(SCRIPT))
        self.assertEqual(summ["samples"], 4)
        self.assertEqual(summ["unresolved_pct"], 25.0)
        self.assertEqual(summ["unresolved_by_module"], [("SQLite", 25.0)])
        self.assertIn(("sqlite3VdbeExec", "SQLite", 25.0), summ["top"])
        self.assertIn(("tcp_sendmsg", "kernel", 25.0), summ["top"])
        self.assertIn(("bal_io_flush", "hs-balancer", 25.0), summ["top"])
        self.assertEqual(dict(summ["modules"]),
                         {"SQLite": 50.0, "kernel": 25.0,
                          "hs-balancer": 25.0})
        # Our callers of the libraries and the kernel, from the stacks.
        ours = {x[0]: x[2] for x in summ["ours_top"]}
        self.assertEqual(ours["db_product_detail"], 25.0)
        self.assertEqual(ours["cache_mc_gets"], 25.0)
        self.assertNotIn("main", ours)
        self.assertEqual(summ["ours_self_pct"], 25.0)
        self.assertEqual(summ["ours_on_stack_pct"], 100.0)
        self.assertEqual(dict(summ["layers"]),
                         {"database": 50.0, "cache client": 25.0,
                          "balancer": 25.0})
        self.assertEqual(summ["kernel"], [("socket send", 25.0)])
        self.assertTrue(summ["next"].startswith(
            "database holds 50% of the samples, 25% under db_category_top "
            "and 25% under db_product_detail"), summ["next"])

    def test_report_shows_the_summary(self):
        out = tempfile.mkdtemp(prefix="hs-prof-")
        self.addCleanup(shutil.rmtree, out, True)
        summ = wt.profile_summary(wt.parse_perf_script(SCRIPT))
        rows = [{"step": "3", "setup": "profile", "req_s": 1, "p50_ms": 1,
                 "p99_ms": 1, "errors": 0, "db_queries_s": 1,
                 "cache_hit_pct": "", "stale_reads": 0, "checker_reads": 1,
                 "checker_writes": 1}]
        meta = {"date": "d", "wrk_threads": 1, "connections": 1,
                "duration": 1, "put": 0, "review": 0, "products": 1,
                "categories": 1, "machine": "m"}
        wt.write_report(out, rows, {"3": "lesson"},
                        ({"server total (per request)": 1.0}, "<svg></svg>",
                         None, summ), meta)
        for name in ("results.md", "report.html"):
            with open(os.path.join(out, name)) as f:
                page = f.read()
            self.assertIn("25.0% without a function name", page, name)
            self.assertIn("db_product_detail", page, name)
            self.assertIn("sqlite3VdbeExec", page, name)
            self.assertIn("What the profile says", page, name)


SRV = "/x/build/bin/hs-server"
SQL = "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6"
MHD = "/usr/lib/x86_64-linux-gnu/libmicrohttpd.so.12.60.0"
MC = "/usr/lib/x86_64-linux-gnu/libmemcached.so.11.0.0"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
K = "[kernel.kallsyms]"
LONG = "sqlite3BtreeMovetoUnpackedWithAVeryLongNameForTheTest"
# (samples, comm, frames leaf first): a wide database stack, a cache stack
# into the kernel, a long name in a middle-sized frame and a fan of narrow
# kernel frames.
FLAME_SAMPLES = [
    (300, "hs-server", [("sqlite3VdbeExec", SQL), ("sqlite3_step", SQL),
                        ("db_product_detail", SRV), ("srv_product_body", SRV),
                        ("srv_on_access", SRV), ("MHD_run", MHD)]),
    (60, "hs-server", [(LONG, SQL), ("sqlite3_step", SQL),
                       ("db_product_detail", SRV), ("srv_product_body", SRV),
                       ("srv_on_access", SRV), ("MHD_run", MHD)]),
    (120, "hs-server", [("tcp_sendmsg", K), ("__sys_sendmsg", K),
                        ("__libc_sendmsg", LIBC), ("memcached_mget", MC),
                        ("cache_mc_gets", SRV), ("cache_batcher_run", SRV)]),
    (40, "hs-server", [("?", SQL), ("sqlite3_step", SQL),
                       ("db_category_top", SRV)]),
] + [(1, "hs-server", [("kernel_helper_%02d" % i, K), ("__sys_recvmsg", K),
                       ("__libc_recvmsg", LIBC), ("srv_read_request", SRV)])
     for i in range(30)]


def flame_samples():
    return [(comm, frames) for n, comm, frames in FLAME_SAMPLES
            for _ in range(n)]


def flame_svg():
    samples = flame_samples()
    return wt.flamegraph_svg(wt.fold_samples(samples), "fixed profile",
                             modules=wt.fold_modules(samples))


SVG_NS = "{http://www.w3.org/2000/svg}"
HUE = re.compile(r"hsl\((-?\d+),(\d+)%,(\d+)%\)")


def frames_of(svg):
    """[(name, module, fill, x, width, label)] of the SVG's frames."""
    root = ET.fromstring(svg.encode("utf-8"))
    out = []
    for g in root.iter(SVG_NS + "g"):
        if g.find(SVG_NS + "title") is None:
            continue
        title = g.find(SVG_NS + "title").text
        rect, text = g.find(SVG_NS + "rect"), g.find(SVG_NS + "text")
        out.append((title.split("\n")[0], g.get("data-m"), rect.get("fill"),
                    float(rect.get("x")), float(rect.get("width")),
                    text.text or ""))
    return root, out


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class FlameGraphTest(unittest.TestCase):
    """flamegraph_svg on fixed samples: well-formed, every frame named in
    full, labels as long as the frame allows, stable colours by module,
    zoom and search in the page's own script."""

    def test_svg_names_labels_and_colours(self):
        svg = flame_svg()
        root, frames = frames_of(svg)
        names = set(f for _, _, fs in FLAME_SAMPLES for f, _ in fs) | {
            "hs-server"}
        self.assertEqual(set(f[0] for f in frames), names)
        by_name = {f[0]: f for f in frames}
        # The widest frames carry their full names.
        for name in ("hs-server", "srv_on_access", "db_product_detail",
                     "sqlite3VdbeExec"):
            self.assertEqual(by_name[name][5], name)
        # 60 of 550 samples: ~130 px, room for ~16 characters, not 1-4.
        label = by_name[LONG][5]
        self.assertTrue(label.endswith("\u2026") and
                        LONG.startswith(label[:-1]), label)
        self.assertGreaterEqual(len(label), 12, label)
        # No label is cut shorter than its frame allows (7.4 px a
        # character at 12 px, 3 px padding a side).
        for name, mod, fill, x, w, label in frames:
            room = int((w - 6) // 7.4)
            if label != name:
                self.assertLess(room, len(name), (name, w, label))
                self.assertTrue(label == "" and room < 4 or
                                len(label) == room and label[-1] == "\u2026",
                                (name, w, label))
        # Colours by module family: every module's hues are apart from
        # every other module's.
        hues = {}
        for name, mod, fill, x, w, label in frames:
            m = HUE.match(fill)
            self.assertTrue(m, fill)
            hues.setdefault(mod, set()).add(int(m.group(1)) % 360)
        self.assertLessEqual({"hs-server", "SQLite", "libmicrohttpd",
                              "libmemcached", "libc", "kernel"},
                             set(hues))
        for a in hues:
            for b in hues:
                if a < b:
                    gap = min(min(abs(x - y), 360 - abs(x - y))
                              for x in hues[a] for y in hues[b])
                    self.assertGreaterEqual(gap, 15, (a, b, hues))
        legend = [t.text for t in root.iter(SVG_NS + "text")]
        for mod in ("hs-server", "SQLite", "libmemcached", "kernel"):
            self.assertIn(mod, legend)
        script = root.find(SVG_NS + "script")
        self.assertIsNotNone(script)
        self.assertIn("zoom", script.text)

    def test_stage_size(self):
        """font_px=24, the report slide's drawing: every text at 24 px or
        more, labels fitted to 14.8 px a character (not the laptop's
        7.4), rows tall enough for the text; the report embeds it."""
        samples = flame_samples()
        svg = wt.flamegraph_svg(wt.fold_samples(samples), "fixed profile",
                                modules=wt.fold_modules(samples), font_px=24)
        root, frames = frames_of(svg)
        self.assertEqual(root.get("font-size"), "24")
        for t in root.iter(SVG_NS + "text"):
            self.assertGreaterEqual(int(t.get("font-size") or 24), 24)
        self.assertEqual(len(frames), len(frames_of(flame_svg())[1]))
        by_name = {f[0]: f for f in frames}
        self.assertEqual(by_name["db_product_detail"][5], "db_product_detail")
        for name, mod, fill, x, w, label in frames:
            room = int((w - 6) // 14.8)
            if label != name:
                self.assertLess(room, len(name), (name, w, label))
                self.assertTrue(label == "" and room < 4 or
                                len(label) == room and label[-1] == "\u2026",
                                (name, w, label))
        heights = {r.get("height") for r in root.iter(SVG_NS + "rect")
                   if r.get("stroke") == "#fff"}
        self.assertEqual(heights, {"35"})
        self.assertIn("CW = 14.8,", svg)
        out = tempfile.mkdtemp(prefix="hs-flame-")
        self.addCleanup(shutil.rmtree, out, True)
        for name in ("flamegraph.svg", "flamegraph-stage.svg"):
            with open(os.path.join(out, name), "w") as f:
                f.write(svg)
        from hslab import report
        report.build(out, png=False)
        with open(os.path.join(out, "report.html")) as f:
            page = f.read()
        self.assertIn("data='flamegraph-stage.svg'", page)
        self.assertIn("href='flamegraph.svg'", page)

    def test_same_profile_same_bytes(self):
        """Two runs of Python (string hashes differ between runs) draw the
        same file."""
        code = ("import sys; sys.path[:0] = %r; import test_profile as t; "
                "sys.stdout.write(t.flame_svg())" % [
                    os.path.dirname(os.path.abspath(__file__))])
        outs = []
        for seed in ("1", "2"):
            r = subprocess.run([sys.executable, "-c", code],
                               stdout=subprocess.PIPE, timeout=60,
                               env=dict(os.environ, PYTHONHASHSEED=seed))
            self.assertEqual(r.returncode, 0)
            outs.append(r.stdout)
        self.assertGreater(len(outs[0]), 1000)
        self.assertEqual(outs[0], outs[1])

    def test_zoom_and_search_in_chromium(self):
        if not browser.find_chromium():
            self.skipTest("chromium is not installed "
                          "(./hammerstack setup --test)")
        out = tempfile.mkdtemp(prefix="hs-flame-")
        self.addCleanup(shutil.rmtree, out, True)
        path = os.path.join(out, "flamegraph.svg")
        with open(path, "w") as f:
            f.write(flame_svg())
        shots = os.path.join(os.path.dirname(hstest.BIN), "screenshots")
        os.makedirs(shots, exist_ok=True)
        frame = ("[].slice.call(document.querySelectorAll('g.f')).filter("
                 "function (g) { return g.querySelector('title').textContent"
                 ".split('\\n')[0] === %s; })[0]")
        with browser.Browser(1280, 720) as b:
            b.open("file://" + path, settle=0.5)
            self.assertTrue(b.eval("!!window.flame"))
            width = b.eval("document.documentElement.viewBox.baseVal.width")
            b.eval(("%s.querySelector('rect').dispatchEvent(new MouseEvent("
                    "'click', {bubbles: true}))") %
                   (frame % "'db_product_detail'"))
            zoomed = b.eval("%s.querySelector('rect').getAttribute('width')"
                            % (frame % "'db_product_detail'"))
            self.assertEqual(float(zoomed), width)
            # Its callee takes 360 of its 360 samples, the long name now
            # has room, a frame outside it is hidden.
            self.assertEqual(float(b.eval(
                "%s.querySelector('rect').getAttribute('width')" %
                (frame % "'sqlite3_step'"))), width)
            label = b.eval("%s.querySelector('text').textContent" %
                           (frame % repr(LONG)))
            self.assertTrue(label.endswith("\u2026") and
                            LONG.startswith(label[:-1]), label)
            self.assertGreater(len(label), len(dict(
                (f[0], f[5]) for f in frames_of(flame_svg())[1])[LONG]))
            self.assertEqual(b.eval("%s.style.display" %
                                    (frame % "'cache_mc_gets'")), "none")
            b.screenshot(os.path.join(shots, "flamegraph-zoomed.png"))
            b.eval(("%s.querySelector('text').dispatchEvent(new MouseEvent("
                    "'click', {bubbles: true}))") % (frame % repr(LONG)))
            self.assertEqual(b.eval("%s.querySelector('text').textContent" %
                                    (frame % repr(LONG))), LONG)
            b.eval("document.getElementById('reset').dispatchEvent("
                   "new MouseEvent('click', {bubbles: true}))")
            self.assertEqual(b.eval("%s.style.display" %
                                    (frame % "'cache_mc_gets'")), "")
            b.eval("var q = document.getElementById('q'); q.value = "
                   "'sqlite'; q.dispatchEvent(new Event('input'))")
            hits = b.eval("[].slice.call(document.querySelectorAll("
                          "'g.hit')).map(function (g) { return "
                          "g.querySelector('title').textContent.split('\\n')"
                          "[0]; }).sort().join(',')")
            self.assertEqual(hits, ",".join(sorted([
                LONG, "sqlite3VdbeExec", "sqlite3_step", "sqlite3_step"])))
            fill = b.eval("getComputedStyle(document.querySelector("
                          "'g.hit rect')).fill")
            self.assertEqual(fill, "rgb(230, 0, 230)")
            # sqlite3_step is under both db_ functions: 400 of 550 samples.
            self.assertIn("72.7%", b.eval(
                "document.getElementById('found').textContent"))
            b.screenshot(os.path.join(shots, "flamegraph.png"))
            b.pump(0.3)
            errors = list(b.errors)
        self.assertEqual(errors, [])

    def test_inside_the_report(self):
        """The report's flame slide embeds the file with <object>: the
        script runs there too (served over loopback, as file:// pages
        cannot look into each other)."""
        if not browser.find_chromium():
            self.skipTest("chromium is not installed "
                          "(./hammerstack setup --test)")
        out = tempfile.mkdtemp(prefix="hs-flame-")
        self.addCleanup(shutil.rmtree, out, True)
        with open(os.path.join(out, "flamegraph.svg"), "w") as f:
            f.write(flame_svg())
        samples = flame_samples()
        with open(os.path.join(out, "flamegraph-stage.svg"), "w") as f:
            f.write(wt.flamegraph_svg(wt.fold_samples(samples),
                                      "fixed profile", font_px=24,
                                      modules=wt.fold_modules(samples)))
        rows = [{"step": "3", "setup": "profile", "req_s": 1, "p50_ms": 1,
                 "p99_ms": 1, "errors": 0, "db_queries_s": 1,
                 "cache_hit_pct": "", "stale_reads": 0, "checker_reads": 1,
                 "checker_writes": 1}]
        meta = {"date": "d", "wrk_threads": 1, "connections": 1,
                "duration": 1, "put": 0, "review": 0, "products": 1,
                "categories": 1, "machine": "m"}
        wt.write_report(out, rows, {"3": "lesson"},
                        ({"server total (per request)": 1.0}, "<svg/>",
                         None, None), meta)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(
            QuietHandler, directory=out))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.server_close)
        self.addCleanup(httpd.shutdown)
        shots = os.path.join(os.path.dirname(hstest.BIN), "screenshots")
        os.makedirs(shots, exist_ok=True)
        with browser.Browser(1280, 720) as b:
            b.open("http://127.0.0.1:%d/report.html" % httpd.server_port,
                   settle=0.5)
            b.eval("document.getElementById('s-flame').scrollIntoView()")
            b.pump(0.5)
            doc = "document.querySelector('object.flame').contentDocument"
            self.assertGreater(b.eval(
                "%s.querySelectorAll('g.f').length" % doc), 40)
            b.eval("document.querySelector('object.flame').contentWindow"
                   ".flame.search('sqlite')")
            self.assertEqual(b.eval("%s.querySelectorAll('g.hit').length" %
                                    doc), 4)
            b.screenshot(os.path.join(shots, "report-flamegraph.png"))
            errors = [x for x in b.errors if "flamegraph" in x]
        self.assertEqual(errors, [])


class FramePointerTest(unittest.TestCase):
    """Our functions keep frame pointers (CMakeLists.txt), so profilers
    that walk them see the callers."""

    def test_functions_set_up_a_frame_pointer(self):
        if os.uname().machine != "x86_64":
            self.skipTest("the prologue check is for x86-64")
        if not shutil.which("objdump"):
            self.skipTest("objdump is not installed (binutils)")
        for fn in ("srv_on_access", "db_product_detail", "cache_mc_gets"):
            r = subprocess.run(
                ["objdump", "-d", "--no-show-raw-insn",
                 "--disassemble=" + fn, hstest.binpath("hs-server")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            text = r.stdout.decode()
            start = text.find("<%s>:" % fn)
            self.assertGreaterEqual(start, 0, "%s not found" % fn)
            prologue = [x.split("\t")[-1].split() for x in
                        text[start:].splitlines()[1:10]]
            self.assertIn(["push", "%rbp"], prologue, (fn, prologue))
            self.assertIn(["mov", "%rsp,%rbp"], prologue, (fn, prologue))


class ProfileRunTest(unittest.TestCase):
    """The walkthrough's profile() against a real hs-server and memcached."""

    def setUp(self):
        why = wt.perf_problem()
        if why:
            self.skipTest("perf cannot profile on this machine: " + why)
        if not shutil.which("wrk"):
            self.skipTest("wrk is not installed (./hammerstack setup)")

    def test_profile_names_our_functions(self):
        db = hstest.seeded_db(0.01)
        out = tempfile.mkdtemp(prefix="hs-prof-")
        self.addCleanup(shutil.rmtree, out, True)
        ports = hs.free_ports(2)
        stk = hs.Stack(servers=1, cache="lease", memcached=1, balancer=False,
                       db=db, server_ports=ports[:1],
                       memcached_ports=ports[1:], logdir=out + "/logs",
                       threads=2)
        stk.start()
        self.addCleanup(stk.stop)
        a = types.SimpleNamespace(no_perf=False, wrk_threads=1,
                                  connections=8, put=0.05, review=0.01)
        counts = {"products": 1000, "categories": 1}
        w, d, breakdown, svg, bal0, no_graph, summ = wt.profile(
            stk, a, counts, out, 3)
        self.assertIsNone(no_graph)
        self.assertGreater(w["requests"], 0)
        self.assertTrue(summ, "no profile summary")
        self.assertGreater(summ["samples"], 0)
        self.assertIsInstance(summ["unresolved_pct"], float)
        self.assertTrue(0.0 <= summ["unresolved_pct"] <= 100.0)
        # Our own functions are named, from the binary's symbols, and seen
        # above the libraries and the kernel they call.
        ours = [x for x in summ["ours_top"] if x[1] == "hs-server" and
                re.match(r"^(srv|cache|db|hs)_", x[0])]
        self.assertTrue(ours, summ["ours_top"])
        self.assertGreater(summ["ours_on_stack_pct"], summ["ours_self_pct"])
        self.assertTrue(summ["next"])
        for name in ("flamegraph.svg", "perf.folded", "profile.json"):
            self.assertGreater(os.path.getsize(os.path.join(out, name)), 10)
        self.assertFalse(os.path.exists(os.path.join(out, "perf.data")))


if __name__ == "__main__":
    unittest.main()
