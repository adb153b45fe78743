#!/usr/bin/env python3
"""The scaling walkthrough: the same wrk mix at each step of the talk, with
the consistency checker beside it, one row per step, and a report folder.

  0   one server, no cache: the database is hammered
  1   + memcached, cache-aside with leases
  1b  naive cache-aside with a widened fill window: the stale-set race
  2   hs-balancer in front of N servers sharing memcached and the database
  3   profile: where the time goes now (Server-Timing / stats breakdown,
      and a perf flame graph when perf can sample)

Each row: req/s, p50, p99, errors, DB queries/s, cache hit %, stale reads,
and each host's CPU use and time throttled by its budget (--server-cpus,
--cache-cpus, --balancer-cpus).  The report lands in DIR: results.csv,
results.md, report.html (charts as inline SVG: it opens with no network),
series.csv (every component's counters once a second, by step; see
hslab/sampler.py) and each step's raw output.
"""

import atexit
import csv
import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hslab  # noqa: E402
from hslab import delta, get_json  # noqa: E402,F401
import stack as hs  # noqa: E402
from hslab.dashboard import serve as serve_dashboard  # noqa: E402
from hslab import report  # noqa: E402

ROOT = hs.ROOT
WRK_DIR = os.path.join(ROOT, "loadtest", "wrk")

STEPS = {
    "0": ("one server, no cache", "the database is hammered"),
    "1": ("+ memcached (lease)", "cache-aside: repeated reads cost no DB work"),
    "1b": ("naive cache, fill delay",
           "get/miss/query/set: an update's delete can be undone by a slow fill"),
    "2": ("balancer + %d servers", "round robin over servers sharing cache and DB"),
    "3": ("profile", "where the time goes now"),
}

COLUMNS = ["step", "setup", "req_s", "p50_ms", "p99_ms", "errors",
           "db_queries_s", "cache_hit_pct", "stale_reads", "checker_reads",
           "checker_writes", "server_cpus", "cache_cpus", "balancer_cpus",
           "host_cpu", "host_throttled_s"]


def progress(msg):
    sys.stderr.write("walkthrough: %s\n" % msg)
    sys.stderr.flush()


def snapshot(stk):
    return hslab.counters_sum(stk.server_ports)


def run_wrk(port, a, counts, duration, out_path=None):
    cmd = hslab.wrk_args(port, duration, a.connections, a.wrk_threads, "",
                         "update-mix.lua",
                         ["products=%d" % counts["products"],
                          "categories=%d" % counts["categories"],
                          "put=%g" % a.put, "review=%g" % a.review])
    text = hslab.run_wrk_cmd(cmd, duration + 60, out_path)
    j = hslab.hsjson(text)
    if j is None:
        raise hs.StackError("wrk printed no HSJSON line:\n%s" % text[-2000:])
    return j


class Checker(threading.Thread):
    """hs-checker beside the load; .result is its JSON line."""

    def __init__(self, port, a, duration, db, out_path):
        super().__init__(daemon=True)
        self.cmd = [os.path.join(hs.BIN, "hs-checker"),
                    "--url", "http://127.0.0.1:%d" % port,
                    "--hot", str(a.hot), "--readers", str(a.readers),
                    "--writers", str(a.writers),
                    "--read-interval-ms", str(a.read_interval_ms),
                    "--write-interval-ms", str(a.write_interval_ms),
                    "--duration", str(duration), "--db", db,
                    "--settle-ms", "500", "--json"]
        self.out_path = out_path
        self.result = None
        self.duration = duration

    def run(self):
        # Started from this thread: no PDEATHSIG (it would fire when the
        # thread ends); the hard timeout and kill_all() at exit stop it.
        p = hslab.Proc(self.cmd, name="hs-checker", stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=self.duration + 120)
        out, err = p.communicate()
        p.close()
        with open(self.out_path, "w") as f:
            f.write("$ %s\n%s%s" % (" ".join(self.cmd),
                                    err.decode(), out.decode()))
        for line in out.decode().splitlines():
            if line.startswith("{"):
                try:
                    self.result = json.loads(line)
                except ValueError:
                    pass


def perf_problem():
    """Why perf cannot sample here (one line for the output and the
    report), or None when it can."""
    if not shutil.which("perf"):
        return ("perf is not installed (Debian: apt-get install linux-perf, "
                "or ./hammerstack setup --demo)")
    try:
        r = subprocess.run(["perf", "record", "-o", "/dev/null", "-q", "--",
                            "true"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return "perf does not run: %s" % e
    if r.returncode == 0:
        return None
    said = [x.strip() for x in r.stderr.decode("utf-8", "replace")
            .splitlines() if x.strip()]
    said = said[0][:160] if said else "exit status %d" % r.returncode
    try:
        with open("/proc/sys/kernel/perf_event_paranoid") as f:
            paranoid = int(f.read().strip())
    except (OSError, ValueError):
        paranoid = None
    if paranoid is not None and paranoid > 1 and os.geteuid() != 0:
        why = ("kernel.perf_event_paranoid is %d: run as root, or "
               "sysctl kernel.perf_event_paranoid=1" % paranoid)
    else:
        why = ("the kernel refuses perf events here (a container or a VM "
               "without them?)")
    return "perf cannot sample: %s (perf said: %s)" % (why, said)


def fold_perf(script_text):
    """perf script output -> {"a;b;c": samples} (root first)."""
    folded = {}
    stack = []
    comm = None
    for line in script_text.splitlines():
        if not line.strip():
            if stack and comm:
                key = ";".join([comm] + list(reversed(stack)))
                folded[key] = folded.get(key, 0) + 1
            stack, comm = [], None
            continue
        if not line.startswith((" ", "\t")):
            comm = line.split()[0]
            continue
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            sym = re.sub(r"\+0x[0-9a-f]+$", "", parts[1].split(" (")[0])
            stack.append(sym if sym != "[unknown]" else "?")
    if stack and comm:
        key = ";".join([comm] + list(reversed(stack)))
        folded[key] = folded.get(key, 0) + 1
    return folded


def flamegraph_svg(folded, title, width=1200):
    """A small flame graph (root at the bottom) as standalone SVG."""
    tree = {"n": 0, "c": {}}
    for stack, n in folded.items():
        node = tree
        node["n"] += n
        for frame in stack.split(";"):
            node = node["c"].setdefault(frame, {"n": 0, "c": {}})
            node["n"] += n
    total = tree["n"] or 1
    rows = []

    def walk(node, x, depth):
        for name, child in sorted(node["c"].items()):
            w = child["n"] / total * width
            if w >= 0.5:
                rows.append((x, depth, w, name, child["n"]))
                walk(child, x, depth + 1)
            x += w
    walk(tree, 0.0, 0)
    depth = max([r[1] for r in rows] + [0]) + 1
    h = 16
    height = depth * h + 40
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="monospace" font-size="11">' % (width, height),
           '<text x="4" y="14" font-size="13">%s (%d samples)</text>' %
           (html.escape(title), total)]
    for x, d, w, name, n in rows:
        y = height - (d + 1) * h
        hue = 20 + (hash(name) % 40)
        label = name if len(name) * 7 < w else name[:max(0, int(w / 7) - 1)]
        out.append('<g><title>%s (%d samples, %.1f%%)</title>'
                   '<rect x="%.1f" y="%d" width="%.1f" height="%d" '
                   'fill="hsl(%d,80%%,60%%)" stroke="white" stroke-width="0.5"/>'
                   '<text x="%.1f" y="%d">%s</text></g>' %
                   (html.escape(name), n, 100.0 * n / total, x, y, w, h - 1,
                    hue, x + 2, y + 11, html.escape(label)))
    out.append("</svg>")
    return "\n".join(out)


def profile(stk, a, counts, outdir, duration):
    """Step 3: load + the stats breakdown + a perf flame graph."""
    pids = [str(c.pid) for c in stk.children if c.name.startswith("hs-")]
    perf = None
    perf_data = os.path.join(outdir, "perf.data")
    no_graph = "--no-perf was given" if a.no_perf else perf_problem()
    if no_graph:
        progress("step 3: no flame graph: %s" % no_graph)
    else:
        perf = subprocess.Popen(
            ["perf", "record", "-F", "499", "-g", "-o", perf_data, "-p",
             ",".join(pids), "--", "sleep", str(duration)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = snapshot(stk)
    bal0 = get_json(stk.admin_port, "/stats") if stk.balancer else {}
    w = run_wrk(stk.entry_port(), a, counts, duration,
                os.path.join(outdir, "step-3-wrk.txt"))
    after = snapshot(stk)
    d = delta(before, after)
    breakdown = {}
    n = max(d.get("requests", 0), 1)
    breakdown["server total (per request)"] = d.get("req_ms", 0) / n
    breakdown["  in the database"] = d.get("db_ms", 0) / n
    breakdown["  in memcached"] = d.get("cache_ms", 0) / n
    breakdown["  waiting for the multi-get"] = d.get("bq_ms", 0) / n
    breakdown["  answered, waiting to be served"] = d.get("rw_ms", 0) / n
    breakdown["  waiting for a database thread"] = d.get("dq_ms", 0) / n
    breakdown["  HTTP, JSON, the rest"] = max(
        0.0, (d.get("req_ms", 0) - d.get("db_ms", 0) - d.get("cache_ms", 0) -
              d.get("bq_ms", 0) - d.get("rw_ms", 0) - d.get("dq_ms", 0)) / n)
    breakdown["client-seen p50"] = w["p50_us"] / 1000.0
    if perf:
        perf.wait(duration + 30)
    svg = None
    if perf and os.path.exists(perf_data):
        r = subprocess.run(["perf", "script", "-i", perf_data],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           timeout=300)
        folded = fold_perf(r.stdout.decode("utf-8", "replace"))
        if folded:
            svg = flamegraph_svg(folded, "hs-server + hs-balancer, step 3")
            with open(os.path.join(outdir, "flamegraph.svg"), "w") as f:
                f.write(svg)
            with open(os.path.join(outdir, "perf.folded"), "w") as f:
                for k, v in sorted(folded.items(), key=lambda kv: -kv[1]):
                    f.write("%s %d\n" % (k, v))
        os.unlink(perf_data)
    if perf and svg is None:
        no_graph = "perf recorded no samples of hs-server or hs-balancer"
        progress("step 3: no flame graph: %s" % no_graph)
    return w, d, breakdown, svg, bal0, no_graph


def make_stack(step, a, logdir):
    servers = a.servers if step in ("2", "3") else 1
    balancer = step in ("2", "3")
    cache = {"0": "off", "1b": "naive"}.get(step, "lease")
    ports = hs.free_ports(servers + 3)
    extra = []
    threads = a.server_threads
    db_threads = a.server_db_threads
    if step == "1b":
        # Every miss sleeps in its worker thread for the fill delay: enough
        # threads keep the server answering while fills sleep.
        extra = ["--debug-fill-delay-ms", str(a.fill_delay_ms)]
        threads = max(16, threads or 0)
        if db_threads:
            db_threads = max(16, db_threads)  # the fills sleep there
    return hs.Stack(servers=servers, cache=cache, memcached=1,
                    balancer=balancer, db=a.db, scale=a.scale,
                    server_ports=ports[:servers],
                    memcached_ports=[ports[servers]],
                    balancer_port=ports[servers + 1],
                    admin_port=ports[servers + 2], logdir=logdir,
                    server_args=extra, threads=threads,
                    db_threads=db_threads, server_cpus=a.server_cpus,
                    cache_cpus=a.cache_cpus, balancer_cpus=a.balancer_cpus)


def host_columns(before, after, seconds):
    """Each host's CPU use (cores, averaged over the step) and time
    throttled by its budget, as "name=value;..." (the bottleneck is the
    host at its budget with the most throttled time)."""
    cpu, thr = [], []
    for name, u in after.items():
        b = before.get(name, {})
        cpu.append("%s=%.3f" % (name, (u["cpu_s"] - b.get("cpu_s", 0)) /
                                max(seconds, 1e-9)))
        thr.append("%s=%.2f" % (name, u["throttled_s"] -
                                b.get("throttled_s", 0)))
    return ";".join(cpu), ";".join(thr)


def run_step(step, a, counts, outdir):
    title, lesson = STEPS[step]
    if "%d" in title:
        title = title % a.servers
    stk = make_stack(step, a, os.path.join(outdir, "logs", "step-" + step))
    progress("step %s: %s — starting %d server(s)%s%s" % (
        step, title, stk.nservers, ", memcached" if stk.nmemcached else "",
        ", hs-balancer" if stk.balancer else ""))
    stk.start()
    a.sampler.watch(stk, step)
    try:
        port = stk.entry_port()
        if stk.cache != "off" and a.warmup > 0:
            progress("step %s: warming the cache for %ds" % (step, a.warmup))
            run_wrk(port, a, counts, a.warmup)
        progress("step %s: %ds of load (wrk -c%d) with the consistency "
                 "checker beside it" % (step, a.duration, a.connections))
        chk = Checker(port, a, a.duration, stk.db,
                      os.path.join(outdir, "step-%s-checker.txt" % step))
        if stk.budgets.problem:
            a.budget_problem = stk.budgets.problem
        hosts0, t0 = stk.host_usage(), time.monotonic()
        chk.start()
        extra = None
        if step == "3":
            w, d, breakdown, svg, _, no_graph = profile(
                stk, a, counts, outdir, a.duration)
            extra = (breakdown, svg, no_graph)
        else:
            before = snapshot(stk)
            w = run_wrk(port, a, counts, a.duration,
                        os.path.join(outdir, "step-%s-wrk.txt" % step))
            d = delta(before, snapshot(stk))
        host_cpu, host_thr = host_columns(hosts0, stk.host_usage(),
                                          time.monotonic() - t0)
        chk.join(a.duration + 150)
    finally:
        a.sampler.watch(None)
        stk.stop()
    c = chk.result or {}
    lookups = d.get("hits", 0) + d.get("misses", 0)
    row = {
        "step": step, "setup": title,
        "req_s": round(w["rps"], 1),
        "p50_ms": round(w["p50_us"] / 1000.0, 3),
        "p99_ms": round(w["p99_us"] / 1000.0, 3),
        "errors": w["errors"] + w["non2xx"],
        "db_queries_s": round(d.get("db_queries", 0) / w["duration_s"], 1),
        "cache_hit_pct": (round(100.0 * d["hits"] / lookups, 1)
                          if lookups else ""),
        "stale_reads": c.get("stale_reads", "n/a"),
        "checker_reads": c.get("reads", 0),
        "checker_writes": c.get("writes", 0),
        "server_cpus": a.server_cpus, "cache_cpus": a.cache_cpus,
        "balancer_cpus": a.balancer_cpus,
        "host_cpu": host_cpu, "host_throttled_s": host_thr,
    }
    return row, lesson, extra


def fmt_row(r):
    return ("%-3s %-28s %9s %8s %8s %7s %10s %6s %6s" % (
        r["step"], r["setup"], r["req_s"], r["p50_ms"], r["p99_ms"],
        r["errors"], r["db_queries_s"], r["cache_hit_pct"], r["stale_reads"]))


HEADER = ("%-3s %-28s %9s %8s %8s %7s %10s %6s %6s" % (
    "", "step", "req/s", "p50 ms", "p99 ms", "errors", "DB q/s", "hit %",
    "stale"))


def svg_bars(title, rows, key, unit, width=560):
    vals = [float(r[key] or 0) for r in rows]
    top = max(vals + [1e-9])
    bh, gap, left = 26, 8, 210
    height = 40 + len(rows) * (bh + gap)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="12">' % (width, height),
           '<text x="0" y="16" font-size="14" font-weight="bold">%s</text>' %
           html.escape(title)]
    for i, (r, v) in enumerate(zip(rows, vals)):
        y = 30 + i * (bh + gap)
        w = (width - left - 90) * v / top
        out.append('<text x="0" y="%d">%s %s</text>' % (
            y + 17, html.escape(r["step"]), html.escape(r["setup"][:26])))
        out.append('<rect x="%d" y="%d" width="%.1f" height="%d" '
                   'fill="#3b7dd8"/>' % (left, y, w, bh))
        out.append('<text x="%.1f" y="%d">%s %s</text>' % (
            left + w + 6, y + 17, "%g" % v, unit))
    out.append("</svg>")
    return "\n".join(out)


def write_report(outdir, rows, lessons, extra, meta):
    # results.csv, results.md and the slides (hslab/report.py).
    report.write_report(outdir, rows, lessons, extra, meta, COLUMNS)


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%d cores (%s), Linux %s" % (os.cpu_count() or 0, cpu,
                                       os.uname().release)


def main(argv=None):
    ap = hs.CliParser(
        prog=os.environ.get("HS_PROG", "hammerstack walkthrough"),
        description="Run each scaling step under the same wrk mix with the "
        "consistency checker beside it; print a row per step and write the "
        "report (results.csv, results.md, report.html).")
    ap.add_argument("--duration", type=int, default=10, metavar="S",
                    help="seconds of measured load per step (default 10)")
    ap.add_argument("--warmup", type=int, default=3, metavar="S",
                    help="seconds of unmeasured load before a cached step "
                    "(default 3)")
    ap.add_argument("--connections", type=int, default=64, metavar="C",
                    help="wrk connections (default 64)")
    ap.add_argument("--wrk-threads", type=int, default=1, metavar="T",
                    help="wrk threads (default 1)")
    ap.add_argument("--servers", type=int, default=2, metavar="N",
                    help="servers behind the balancer in steps 2-3 (default 2)")
    ap.add_argument("--server-threads", type=int, default=None, metavar="N",
                    help="event loop threads per server (default: CPUs)")
    ap.add_argument("--server-db-threads", type=int, default=None,
                    metavar="N",
                    help="database threads per server (default 0: the loops "
                    "run the queries; try --server-threads 1 "
                    "--server-db-threads 8)")
    ap.add_argument("--steps", default="0,1,1b,2,3",
                    help="steps to run (default 0,1,1b,2,3)")
    ap.add_argument("--put", type=float, default=0.02,
                    help="share of PUT /products/{id} in the mix (0.02)")
    ap.add_argument("--review", type=float, default=0.01,
                    help="share of POST reviews in the mix (0.01)")
    ap.add_argument("--hot", type=int, default=1,
                    help="products the checker updates and reads (1: every "
                    "write and read on one key makes the race window busy)")
    ap.add_argument("--readers", type=int, default=2,
                    help="checker reader threads (2)")
    ap.add_argument("--writers", type=int, default=1,
                    help="checker writer threads (1)")
    ap.add_argument("--read-interval-ms", type=int, default=2,
                    help="checker pause between reads, so that it stays a "
                    "light load beside wrk (2)")
    ap.add_argument("--write-interval-ms", type=int, default=10,
                    help="checker pause between writes (10)")
    ap.add_argument("--fill-delay-ms", type=int, default=20,
                    help="step 1b: delay between DB read and cache store (20)")
    ap.add_argument("--db", default=hs.DEFAULT_DB,
                    help="database (default data/hammerstack.db; created)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="seed scale if the database is created (1.0)")
    ap.add_argument("--out", default=None, metavar="DIR",
                    help="report folder (default out/walkthrough-DATE)")
    ap.add_argument("--no-perf", action="store_true",
                    help="skip the perf flame graph in step 3")
    hs.add_cpu_args(ap)
    hs.add_dashboard_args(ap)
    hs.add_check_args(ap)
    a = ap.parse_args(argv)
    steps = [s.strip() for s in a.steps.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad:
        ap.error("unknown step %s (steps: %s)" % (",".join(bad),
                                                   ",".join(STEPS)))
    for name, v, lo, hi in (("--duration", a.duration, 1, 3600),
                            ("--warmup", a.warmup, 0, 600),
                            ("--connections", a.connections, 1, 20000),
                            ("--wrk-threads", a.wrk_threads, 1, 64),
                            ("--servers", a.servers, 1, 32),
                            ("--hot", a.hot, 1, 1000),
                            ("--readers", a.readers, 0, 256),
                            ("--writers", a.writers, 0, 64),
                            ("--fill-delay-ms", a.fill_delay_ms, 0, 10000),
                            ("--read-interval-ms", a.read_interval_ms, 0,
                             60000),
                            ("--write-interval-ms", a.write_interval_ms, 0,
                             60000)):
        if not lo <= v <= hi:
            ap.error("%s must be in %d..%d" % (name, lo, hi))
    for name, v, lo, hi in (("--server-threads", a.server_threads, 1, 1024),
                            ("--server-db-threads", a.server_db_threads, 0,
                             1024)):
        if v is not None and not lo <= v <= hi:
            ap.error("%s must be in %d..%d" % (name, lo, hi))
    if not 0.0001 <= a.scale <= 100:
        ap.error("--scale must be in 0.0001..100")
    hs.check_cpus(ap, a)
    if not (0 <= a.put and 0 <= a.review and a.put + a.review <= 1):
        ap.error("--put and --review must be shares with put+review <= 1")
    if a.connections < a.wrk_threads:
        ap.error("--connections must be at least --wrk-threads")
    if a.check_args:
        return 0
    atexit.register(hslab.kill_all)  # e.g. a checker left by an error
    a.db = os.path.abspath(a.db)
    outdir = os.path.abspath(a.out or os.path.join(
        ROOT, "out", "walkthrough-" + time.strftime("%Y%m%d-%H%M%S")))
    os.makedirs(outdir, exist_ok=True)
    if not shutil.which("wrk"):
        sys.stderr.write("walkthrough: wrk is not installed "
                         "(./hammerstack setup)\n")
        return 2
    try:
        hs.Stack(db=a.db, scale=a.scale).seed()
    except subprocess.CalledProcessError as e:
        sys.stderr.write("walkthrough: seeding failed: %s\n" % e)
        return 1
    try:
        p, c = hs.db_counts(a.db)
    except sqlite3.Error as e:
        sys.stderr.write("walkthrough: cannot read %s: %s\n" % (a.db, e))
        return 1
    counts = {"products": max(p, 1), "categories": max(c, 1)}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wrk_threads": a.wrk_threads, "connections": a.connections,
            "duration": a.duration, "put": a.put, "review": a.review,
            "products": counts["products"],
            "categories": counts["categories"],
            "machine": machine()}
    a.budget_problem = None
    if a.server_cpus or a.cache_cpus or a.balancer_cpus:
        meta["budgets"] = "server %g, cache %g, balancer %g cores" % (
            a.server_cpus, a.cache_cpus, a.balancer_cpus)
    rows, lessons, extra = [], {}, None
    print(HEADER, flush=True)
    # Every component's counters once a second, labelled by step.
    a.sampler = hslab.Sampler(os.path.join(outdir, "series.csv")).start()
    dash = None if a.no_dashboard else serve_dashboard(
        a.sampler, a.dashboard, say=True)
    try:
        for step in steps:
            row, lesson, ex = run_step(step, a, counts, outdir)
            rows.append(row)
            lessons[step] = lesson
            if ex:
                extra = ex
            if a.budget_problem:
                meta["budgets"] = "NONE APPLIED: " + a.budget_problem
            print(fmt_row(row), flush=True)
            write_report(outdir, rows, lessons, extra, meta)
    except KeyboardInterrupt:
        sys.stderr.write("walkthrough: interrupted; partial report in %s\n" %
                         outdir)
        return 130
    except (hs.StackError, subprocess.SubprocessError, OSError) as e:
        sys.stderr.write("walkthrough: %s\n" % e)
        return 1
    finally:
        a.sampler.stop()
        if dash:
            dash.stop()
    if extra:
        print("\nwhere the time goes (step 3, per request):")
        for k, v in extra[0].items():
            print("  %-34s %8.3f ms" % (k, v))
        print("\nflame graph: %s" % (
            os.path.join(outdir, "flamegraph.svg") if extra[1] else
            "none; " + extra[2]))
    print("\nreport: %s/report.html (results.md, results.csv, series.csv)" %
          outdir)
    stale = [r for r in rows if r["step"] in ("1", "2", "3") and
             r["stale_reads"] not in (0, "n/a")]
    if stale:
        sys.stderr.write("walkthrough: stale reads at a lease step: %s\n" %
                         ", ".join(r["step"] for r in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
