#!/usr/bin/env python3
"""The scaling walkthrough: the same wrk mix at each step of the talk, with
the consistency checker beside it, an open-loop sweep after it, one row per
step, and a report folder.

  0   one server, no cache: the database is hammered
  1   + memcached, cache-aside with leases
  1b  naive cache-aside with a widened fill window: the stale-set race
      (a correctness demonstration: correctness_only=1)
  2   scale out: hs-balancer in front of 1, 2, 4 servers (--scale-out), the
      same CPU budget each; rows 2/1, 2/2, 2/4 with each server's share and
      the part that stops growth
  2b  async vs blocking: one server, --io blocking --threads 8 against
      --io event: 256 keep-alive users, each sending 2 req/s on its own
      schedule (hs-load --per-connection); throughput, p99, the clients
      never answered and the timeouts; then the same 256 connections
      sending back to back (wrk), where the pool is CPU bound too
  3   profile: where the time goes now (Server-Timing / stats breakdown,
      and a perf flame graph when perf can sample)
  4   lose the cache: memcached killed under open-loop load, then an empty
      one back on the same port
  5   (optional: --steps ...,5) the database server: PostgreSQL with its
      own CPU budget (5a), + streaming read replicas (5b), and replica lag's
      stale reads with read-your-writes off and on (5c/off, 5c/on);
      walkthrough_db.py

Each row: req/s, capacity at the SLO (hs-load sweep), p50, p99, errors, DB
queries per request and DB time share, cache hit %, stale reads, and each
host's CPU use and time throttled by its budget (--server-cpus, default
0.15 core; --cache-cpus, --balancer-cpus).  DIR gets results.csv,
results.md, report.html, sweeps.csv, summary.json (the headline numbers),
series.csv (every component's counters once a second; hslab/sampler.py),
events.csv, cacheloss.csv and each step's raw output (loadtest/README.md,
"The walkthrough's data").
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
from hslab.pauser import Pauser, stdin_usable  # noqa: E402
import walkthrough_db as wdb  # noqa: E402

ROOT = hs.ROOT
WRK_DIR = os.path.join(ROOT, "loadtest", "wrk")

STEPS = {
    "0": ("one server, no cache", "the database is hammered"),
    "1": ("+ memcached (lease)", "cache-aside: repeated reads cost no DB work"),
    "1b": ("naive cache, fill delay",
           "get/miss/query/set: an update's delete can be undone by a slow "
           "fill (a correctness demonstration, not a throughput step)"),
    "2": ("balancer + %d servers",
          "scale out: round robin over servers of the same budget sharing "
          "the cache and the database"),
    "2b": ("%s, 1 server",
           "async vs blocking: many keep-alive clients on one server"),
    "3": ("profile", "where the time goes now"),
    "4": ("lose the cache (%s)",
          "memcached dies under load: the database takes it all, then an "
          "empty cache refills"),
}
STEPS.update(wdb.STEPS)
# Step 5 is optional (PostgreSQL, and minutes more): --steps ...,5.
DEFAULT_STEPS = "0,1,1b,2,2b,3,4"
STEP_CHOICES = "0,1,1b,2,2b,3,4,5 (5a,5b,5c)"

# Step-through mode: what the speaker points at while a step waits.
SHOW = {
    "0": "curl -i: no X-Cache header; /stats: db.queries grows with every "
         "request",
    "1": "curl -i twice: X-Cache MISS then HIT; /stats: cache.hits",
    "1b": "the checker's stale reads once loaded; /stats: cache.fills",
    "2": "curl -i through hs-balancer; the dashboard: each server's share",
    "2b": "the dashboard: req/s and p99 with 256 keep-alive users; "
          "the clients never answered",
    "3": "the profile: where a request's time goes",
    "4": "the dashboard: DB queries/s when memcached dies, hits when an "
         "empty one is back",
}
SHOW.update(wdb.SHOW)
DEFAULT_SERVER_CPUS = 0.15

COLUMNS = ["step", "setup", "req_s", "p50_ms", "p99_ms", "errors",
           "db_queries_s", "cache_hit_pct", "stale_reads", "checker_reads",
           "checker_writes", "server_cpus", "cache_cpus", "balancer_cpus",
           "host_cpu", "host_throttled_s", "servers", "io",
           "connections", "capacity_rps", "slo_ms", "db_queries_per_req",
           "db_time_pct", "server_share", "limit", "waiting_clients",
           "timeouts", "correctness_only", "offered_rps", "busy_req_s",
           "busy_p99_ms", "busy_waiting"] + wdb.COLUMNS

SWEEP_COLUMNS = ["step", "offered_rps", "achieved_rps", "p50_us", "p90_us",
                 "p99_us", "p999_us", "max_us", "errors", "non2xx", "late"]


def progress(msg):
    sys.stderr.write("walkthrough: %s\n" % msg)
    sys.stderr.flush()


def snapshot(stk):
    return hslab.counters_sum(stk.server_ports)


# The measured load's random stream; the cache is warmed with another
# (WARM_SEED): the same Zipf distribution over the same ids, but not the
# same sequence, or a measured run would replay what the warm-up already
# cached and show a hit ratio no real traffic gets.
LOAD_SEED = 1
WARM_SEED = 2


def run_wrk(port, a, counts, duration, out_path=None, seed=LOAD_SEED):
    cmd = hslab.wrk_args(port, duration, a.connections, a.wrk_threads, "",
                         "update-mix.lua",
                         ["products=%d" % counts["products"],
                          "categories=%d" % counts["categories"],
                          "put=%g" % a.put, "review=%g" % a.review,
                          "seed=%d" % seed])
    text = hslab.run_wrk_cmd(cmd, duration + 60, out_path)
    j = hslab.hsjson(text)
    if j is None:
        raise hs.StackError("wrk printed no HSJSON line:\n%s" % text[-2000:])
    return j


class Checker(threading.Thread):
    """hs-checker beside the load; .result is its JSON line.  Its
    progress lines (one a second) go into the sampler's series as the
    component "checker": the dashboard's stale reads while it runs."""

    def __init__(self, port, a, duration, db, out_path):
        super().__init__(daemon=True)
        self.cmd = [os.path.join(hs.BIN, "hs-checker"),
                    "--url", "http://127.0.0.1:%d" % port,
                    "--hot", str(a.hot), "--readers", str(a.readers),
                    "--writers", str(a.writers),
                    "--read-interval-ms", str(a.read_interval_ms),
                    "--write-interval-ms", str(a.write_interval_ms),
                    "--duration", str(duration), "--db", db,
                    "--settle-ms", "500", "--json", "--progress-ms", "1000"]
        self.out_path = out_path
        self.result = None
        self.duration = duration
        self.sampler = getattr(a, "sampler", None)

    def run(self):
        with open(self.out_path, "w") as f:
            f.write("$ %s\n" % " ".join(self.cmd))
        if self.sampler:
            self.sampler.follow("checker", self.out_path)
        # Started from this thread: no PDEATHSIG (it would fire when the
        # thread ends); the hard timeout and kill_all() at exit stop it.
        p = hslab.Proc(self.cmd, name="hs-checker", logpath=self.out_path,
                       timeout=self.duration + 120)
        p.wait()
        p.close()
        for line in hslab.tail(self.out_path, 1 << 20).splitlines():
            if line.startswith("{") and not line.startswith('{"progress"'):
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


# perf's sampling of step 3.  cpu-clock is a software event, so it works
# where the hardware counters are hidden (most VMs and containers; LBR call
# stacks need them too).  The stacks are unwound from a copy of each
# sample's user stack (dwarf, 8 KB): Debian builds SQLite, libmicrohttpd and
# libc without frame pointers, so frame-pointer unwinding stops inside them.
# Measured on step 3 (10 s, 2 servers + balancer, 2 cores, 8 runs each):
# with frame pointers 14% of the samples reached one of our functions (3%
# before hs-server kept them), with dwarf 100%; at the price of 24-52 MB of
# perf.data instead of 0.4-0.8 MB (removed once read), 0.5 s of perf's own
# CPU instead of 0.4 s and 0.5-1 s to read back instead of 0.2-0.8 s.
PERF_RECORD = ["-e", "cpu-clock", "-F", "499", "--call-graph", "dwarf"]

# Module labels for the profile summary, by the file a sample's code is in.
PERF_MODULES = (("hs-server", "hs-server"), ("hs-balancer", "hs-balancer"),
                ("libsqlite3", "SQLite"), ("libmicrohttpd", "libmicrohttpd"),
                ("libmemcached", "libmemcached"),
                ("libhashkit", "libmemcached"), ("libevent", "libevent"),
                ("libjansson", "jansson"), ("libc.so", "libc"),
                ("libc-", "libc"), ("ld-linux", "libc"), ("libm.so", "libc"),
                ("libpthread", "libc"), ("[kernel", "kernel"),
                ("[vdso]", "kernel"))
OUR_MODULES = ("hs-server", "hs-balancer")
OUR_PREFIX = re.compile(r"^(srv|cache|db|bal|hs)_")
# A kernel sample's system call, named by the kernel's entry function or by
# the C library's wrapper just below the kernel frames.
SYSCALL_KINDS = (("database file I/O", r"^p(read|write)|fsync|fdatasync|"
                                       r"openat|lseek|fcntl"),
                 ("socket send", r"send|write"),
                 ("socket receive", r"recv|read"),
                 ("polling", r"poll|select"),
                 ("locks and wake-ups", r"futex"))


def perf_syscall(frames):
    """The system call a kernel sample is in ("" for interrupts,
    scheduling and the rest of the kernel's own work)."""
    for i, (sym, dso) in enumerate(frames):
        if perf_module(dso) != "kernel":
            if i and frames[i - 1][0].startswith("entry_SYSCALL"):
                return re.sub(r"^(__GI_|__libc_|_+)+|@.*$", "", sym)
            break
        m = re.match(r"^(?:__x64_sys_|__ia32_sys_|__do_sys_|__sys_|ksys_|"
                     r"do_sys_|do_)(\w+)$", sym)
        if m and i + 1 < len(frames) and frames[i + 1][0] == "do_syscall_64":
            return m.group(1)
    return ""


def parse_perf_script(script_text):
    """perf script output -> [(comm, [(symbol, dso), ...] leaf first)].
    An unnamed frame's symbol is "?"; its dso is still known most of the
    time (code in a library without symbols)."""
    samples = []
    frames, comm = [], None
    for line in script_text.splitlines():
        if not line.strip():
            if frames and comm:
                samples.append((comm, inline_dsos(frames)))
            frames, comm = [], None
            continue
        if not line.startswith((" ", "\t")):
            comm = line.split()[0]
            continue
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            continue
        rest = parts[1]
        dso = ""
        m = re.search(r" \(([^()]*)\)$", rest)
        if m:
            dso, rest = m.group(1), rest[:m.start()]
        sym = re.sub(r"\+0x[0-9a-f]+$", "", rest.strip())
        frames.append((sym if sym and sym != "[unknown]" else "?", dso))
    if frames and comm:
        samples.append((comm, inline_dsos(frames)))
    return samples


def inline_dsos(frames):
    """perf names an inlined frame's file "inlined": use its caller's."""
    out = list(frames)
    for i in range(len(out) - 2, -1, -1):
        if out[i][1] == "inlined":
            out[i] = (out[i][0], out[i + 1][1])
    return out


def fold_samples(samples):
    """[(comm, frames)] -> {"comm;root;...;leaf": samples}."""
    folded = {}
    for comm, frames in samples:
        key = ";".join([comm] + [f[0] for f in reversed(frames)])
        folded[key] = folded.get(key, 0) + 1
    return folded


def fold_perf(script_text):
    """perf script output -> {"a;b;c": samples} (root first)."""
    return fold_samples(parse_perf_script(script_text))


PERF_MODULE_MEMO = {}


def perf_module(dso):
    """The module label of a sample's file (memoised: called per frame)."""
    label = PERF_MODULE_MEMO.get(dso)
    if label is None:
        base = os.path.basename(dso) if dso.startswith("/") else dso
        label = next((lb for needle, lb in PERF_MODULES
                      if base.startswith(needle)), base or "?")
        PERF_MODULE_MEMO[dso] = label
    return label


def perf_kernel_kind(frames):
    """A kernel sample by what it is doing: a kind of system call, or the
    kernel's own work (interrupts, scheduling)."""
    call = perf_syscall(frames)
    if not call:
        return "interrupts and scheduling"
    for kind, pattern in SYSCALL_KINDS:
        if re.search(pattern, call):
            return kind
    return "other system calls"


def perf_layer(frames):
    """The part of the stack a sample works for: its innermost frame that
    belongs to one.  Kernel and C library frames work for their caller, so
    SQLite's page reads count for the database and memcached's sends for
    the cache client.  Needs the callers, so it is only as good as the
    stacks.  Our static helpers have no module prefix: the walk goes on
    to the caller that has one."""
    ours = False
    for sym, dso in frames:
        mod = perf_module(dso)
        if mod == "SQLite" or sym.startswith("db_"):
            return "database"
        if mod == "libmemcached" or sym.startswith("cache_"):
            return "cache client"
        if mod == "jansson" or "json" in sym.lower():
            return "JSON"
        if mod in ("hs-balancer", "libevent") or sym.startswith("bal_"):
            return "balancer"
        if mod == "libmicrohttpd" or sym.startswith("srv_"):
            return "HTTP server"
        ours = ours or (mod == "hs-server" and sym != "?")
    return "hs-server, other" if ours else "stack ends in the kernel or libc"


def perf_next(layer, share, parts, entries, fills):
    """What the biggest layer says to do next.  parts: {module or
    "kernel: kind": % of all samples} inside that layer; entries: our
    functions that call into it most, [(name, %)]; fills: % of all
    samples in the database on behalf of a cache miss."""
    def part(key):
        return parts.get(key, 0.0)
    kernel = sum(v for k, v in parts.items() if k.startswith("kernel"))
    io = part("kernel: database file I/O")
    send = part("kernel: socket send")
    recv = part("kernel: socket receive")
    said = "%s holds %.0f%% of the samples" % (layer, share)
    if entries:
        said += ", %s" % " and ".join("%.0f%% under %s" % (p, f)
                                      for f, p in entries)
    if kernel:
        top = max((kv for kv in parts.items() if kv[0].startswith("kernel")),
                  key=lambda kv: kv[1])
        said += " (%.0f%% in the kernel, mostly %s %.0f%%)" % (
            kernel, top[0][len("kernel: "):], top[1])
    if layer == "database":
        if fills >= share / 2:
            said += "; %.0f%% fill cache misses" % fills
            todo = ("raise the hit ratio: most of the database's work "
                    "refills entries that expired or a write invalidated")
        else:
            todo = "fewer queries per request: cache more of what is read"
        if io >= share / 4:
            todo += ("; SQLite reads its pages with a system call each: "
                     "memory-map the file (PRAGMA mmap_size) or a bigger "
                     "page cache (cache_size)")
        elif fills < share / 2:
            todo += ", or batch a request's queries into one"
    elif layer == "cache client":
        if send + recv >= share / 2:
            todo = ("fewer round trips to memcached: bigger multi-gets "
                    "(--cache-batch), fewer keys per request")
        else:
            todo = "cheaper cache handling in our client"
    elif layer == "HTTP server":
        if send + recv >= share / 2:
            todo = ("fewer system calls per response: keep-alive, "
                    "pipelining, one write per response")
        else:
            todo = "cheaper request handling (routing, headers, buffers)"
    elif layer == "JSON":
        todo = ("encode less: serve cached bodies as they are, encode once "
                "per change rather than per request")
    elif layer == "balancer":
        todo = ("the proxy hop costs CPU of its own: give hs-balancer its "
                "own core, or keep its backend connections alive")
    elif layer == "hs-server, other":
        todo = "look at our own hot functions in the table above"
    else:
        todo = ("the stacks stop in the kernel or libc before any of our "
                "functions: perf could not unwind them (does this perf "
                "support --call-graph dwarf?)")
    return said + ". Next: " + todo


def profile_summary(samples, top=10):
    """Self time by function and by module, the unnamed share, how often
    our own code is on the stack, time by layer and the kernel's time by
    system call, and what the biggest layer says to do next.  Shares are %
    of all samples."""
    n = len(samples)
    if not n:
        return None

    def pct(k):
        return round(100.0 * k / n, 1)

    def ranked(d):
        return [(k, pct(v)) for k, v in sorted(
            d.items(), key=lambda kv: (-kv[1], str(kv[0])))]
    funcs, mods, unnamed, layers, kinds, parts = {}, {}, {}, {}, {}, {}
    total = {}  # our functions: samples with them anywhere on the stack
    entries = {}  # per layer: our innermost function on the stack
    fills = 0  # database samples under the cache: filling a miss
    ours_self = ours_stack = 0
    for comm, frames in samples:
        sym, dso = frames[0]
        mod = perf_module(dso)
        funcs[(sym, mod)] = funcs.get((sym, mod), 0) + 1
        mods[mod] = mods.get(mod, 0) + 1
        if sym == "?":
            unnamed[mod] = unnamed.get(mod, 0) + 1
        if mod in OUR_MODULES and sym != "?":
            ours_self += 1
        on_stack = set((s, perf_module(d)) for s, d in frames
                       if perf_module(d) in OUR_MODULES and s != "?")
        ours_stack += bool(on_stack)
        for f in on_stack:
            total[f] = total.get(f, 0) + 1
        part = mod
        if mod == "kernel":
            part = "kernel: " + perf_kernel_kind(frames)
            kinds[part] = kinds.get(part, 0) + 1
        layer = perf_layer(frames)
        layers[layer] = layers.get(layer, 0) + 1
        entry = next((s for s, d in frames if perf_module(d) in OUR_MODULES
                      and OUR_PREFIX.match(s)), None)
        if entry:
            le = entries.setdefault(layer, {})
            le[entry] = le.get(entry, 0) + 1
        if layer == "database" and any(s.startswith("cache_")
                                       for s, d in frames):
            fills += 1
        lp = parts.setdefault(layer, {})
        lp[part] = lp.get(part, 0) + 1
    by_layer = ranked(layers)
    first, share = by_layer[0]
    return {
        "samples": n,
        "unresolved_pct": pct(sum(unnamed.values())),
        "unresolved_by_module": ranked(unnamed),
        "ours_self_pct": pct(ours_self),
        "ours_on_stack_pct": pct(ours_stack),
        "top": [(s, m, p) for (s, m), p in ranked(funcs)[:top]],
        "ours_top": [(s, m, p, pct(funcs.get((s, m), 0)))
                     for (s, m), p in ranked(total)
                     if s not in ("main", "loop_main")][:top],
        "modules": ranked(mods),
        "layers": by_layer,
        "kernel": [(k[len("kernel: "):], p) for k, p in ranked(kinds)],
        "next": perf_next(first, share, dict(ranked(parts[first])),
                          ranked(entries.get(first, {}))[:2], pct(fills)),
    }


def fold_modules(samples):
    """{"comm;root;...;frame": module} for every stack prefix of the
    samples, by perf_module: perf.folded keeps only the names, and an
    unnamed "?" frame's module depends on where it sits."""
    mods = {}
    for comm, frames in samples:
        key = comm
        mods.setdefault(key, perf_module(comm))
        for sym, dso in reversed(frames):
            key += ";" + sym
            mods.setdefault(key, perf_module(dso))
    return mods


# Flame graph colours: a hue family per module (fixed, so a module keeps its
# colour from run to run and in every report), a shade per function.
FLAME_HUES = (("hs-server", 25, 85), ("hs-balancer", 50, 85),
              ("SQLite", 212, 65), ("libmicrohttpd", 268, 50),
              ("libevent", 310, 50), ("libmemcached", 135, 50),
              ("jansson", 178, 55), ("libc", 75, 45), ("kernel", 350, 65))
FLAME_OTHER = (0, 0)  # hue, saturation of any other module: grey
FLAME_CHAR_W = 7.4    # px per character of the 12 px monospace labels
FLAME_ROW = 18        # px per stack level


def flame_colour(module, name):
    """hsl() of a frame: its module's hue family, a shade from a CRC of the
    function's name (not hash(), which changes with every Python run)."""
    import zlib
    hue, sat = next(((h, s) for m, h, s in FLAME_HUES if m == module),
                    FLAME_OTHER)
    c = zlib.crc32(name.encode("utf-8", "replace"))
    return "hsl(%d,%d%%,%d%%)" % ((hue + c % 9 - 4) % 360, sat,
                                  58 + (c >> 8) % 22)


def flame_label(name, w, cw=FLAME_CHAR_W):
    """The label that fits a frame w px wide (cw px a character): the full
    name, or its start and an ellipsis, or nothing below 3 characters and
    the ellipsis (the page's script applies the same rule when zooming)."""
    fits = int((w - 6) // cw)
    if fits >= len(name):
        return name
    return name[:fits - 1] + "\u2026" if fits >= 4 else ""


FLAME_SCRIPT = r"""
(function () {
  var W = %(width)d, CW = %(cw)s, TOTAL = %(total)d, STAGE = %(stage)d;
  var doc = document, frames = [].slice.call(doc.querySelectorAll('g.f'));
  var reset = doc.getElementById('reset'), found = doc.getElementById('found');
  var details = doc.getElementById('details');
  function num(g, k) { return +g.getAttribute('data-' + k); }
  function name(g) {
    return g.querySelector('title').textContent.split('\n')[0];
  }
  function fit(s, w) {
    var n = Math.floor((w - 6) / CW);
    if (n >= s.length) return s;
    return n >= 4 ? s.slice(0, n - 1) + '\u2026' : '';
  }
  function place(g, x, w, show) {
    var r = g.querySelector('rect'), t = g.querySelector('text');
    g.style.display = show && w >= 0.1 ? '' : 'none';
    r.setAttribute('x', x.toFixed(1));
    r.setAttribute('width', w.toFixed(1));
    t.setAttribute('x', (x + 3).toFixed(1));
    t.textContent = fit(name(g), w);
  }
  function zoom(z) {
    var s0 = num(z, 's'), n0 = num(z, 'n'), d0 = num(z, 'd');
    frames.forEach(function (g) {
      var s = num(g, 's'), n = num(g, 'n'), d = num(g, 'd');
      g.classList.remove('anc');
      if (d < d0) {
        var anc = s <= s0 && s + n >= s0 + n0;
        if (anc) g.classList.add('anc');
        place(g, 0, W, anc);
      } else {
        place(g, (s - s0) / n0 * W, n / n0 * W, s >= s0 && s + n <= s0 + n0);
      }
    });
    reset.style.opacity = n0 < TOTAL || d0 > 0 ? 1 : 0.35;
  }
  function unzoom() {
    frames.forEach(function (g) {
      g.classList.remove('anc');
      place(g, num(g, 's') / TOTAL * W, num(g, 'n') / TOTAL * W, true);
    });
    reset.style.opacity = 0.35;
  }
  function search(q) {
    var re = null, hits = 0, end = -1, share = 0;
    if (q) {
      try { re = new RegExp(q, 'i'); } catch (e) { re = null; }
    }
    // Frames in order of their first sample: a match inside an earlier
    // match's samples is not counted twice.
    frames.slice().sort(function (a, b) { return num(a, 's') - num(b, 's'); })
      .forEach(function (g) {
        var hit = !!re && re.test(name(g));
        g.classList.toggle('hit', hit);
        if (!hit) return;
        hits++;
        var s = num(g, 's'), e = s + num(g, 'n');
        if (e > end) { share += e - Math.max(s, end); end = e; }
      });
    found.textContent = re ? 'Matched: ' + hits + ' frames, ' +
      (100 * share / TOTAL).toFixed(1) + '%% of samples' : '';
    return hits;
  }
  doc.documentElement.addEventListener('click', function (e) {
    var g = e.target.closest && e.target.closest('g.f');
    if (g) zoom(g);
  });
  doc.documentElement.addEventListener('mouseover', function (e) {
    var g = e.target.closest && e.target.closest('g.f');
    if (g) details.textContent = g.querySelector('title').textContent
      .replace('\n', ' \u2014 ');
  });
  reset.addEventListener('click', unzoom);
  var q = doc.getElementById('q');
  if (q) q.addEventListener('input', function () { search(q.value); });
  doc.addEventListener('keydown', function (e) {
    if (e.key === 'Escape') { unzoom(); if (q) { q.value = ''; search(''); } }
  });
  window.flame = {zoom: zoom, unzoom: unzoom, search: search};
  // Stage size: taller than a slide; start at the root, at the bottom.
  if (STAGE) window.addEventListener('load', function () {
    window.scrollTo(0, doc.documentElement.getBoundingClientRect().height);
  });
})();
"""


def flamegraph_svg(folded, title, width=1200, modules=None, font_px=12):
    """A flame graph (root at the bottom) as standalone SVG with its own
    script: full names on hover, click a frame to zoom into it, a search
    box, colours by module (modules: fold_modules' map; frames not in it
    are grey).  The same input gives the same bytes.  font_px: the size
    of every text, rows and header grow with it (24: the stage size of
    the report's slide, read from the back of a room; 12: a laptop's)."""
    modules = modules or {}
    k = font_px / 12.0
    cw = round(FLAME_CHAR_W * k, 2)
    tree = {"n": 0, "c": {}}
    for stack, n in folded.items():
        node = tree
        node["n"] += n
        for frame in stack.split(";"):
            node = node["c"].setdefault(frame, {"n": 0, "c": {}})
            node["n"] += n
    total = tree["n"] or 1
    rows = []

    def walk(node, path, s, depth):
        for name, child in sorted(node["c"].items()):
            key = path + ";" + name if path else name
            # Frames under 0.1 px are left out even when zoomed: the
            # file stays small, their samples still count in the parent.
            if child["n"] * width * 1000 >= total * 100:
                rows.append((s, depth, child["n"], name,
                             modules.get(key, "?")))
                walk(child, key, s, depth + 1)
            s += child["n"]
    walk(tree, "", 0, 0)
    depth = max([r[1] for r in rows] + [0]) + 1
    # Header: the title; the legend; zoom reset, search box and matches.
    top, h = int(64 * k), int(round(FLAME_ROW * k))
    height = top + depth * h + int(26 * k)
    present = set(r[4] for r in rows)
    legend = [(m, flame_colour(m, "")) for m, _, _ in FLAME_HUES
              if m in present]
    if present - set(m for m, _, _ in FLAME_HUES):
        legend.append(("other", "hsl(0,0%,70%)"))
    e = html.escape
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<svg xmlns="http://www.w3.org/2000/svg" version="1.1" '
           'width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="DejaVu Sans Mono,monospace" font-size="%d">' %
           (width, height, width, height, font_px),
           '<style>g.f{cursor:pointer}g.f:hover rect{stroke:#000;'
           'stroke-width:1}g.hit rect{fill:#e600e6}g.anc{opacity:.6}'
           '.btn{cursor:pointer;fill:#06c;text-decoration:underline}'
           'input{font:%dpx monospace;width:%dpx}</style>' % (
               font_px, 190 * k),
           '<rect width="100%" height="100%" fill="#fff"/>',
           '<text x="4" y="%d" font-size="%d" font-weight="bold">'
           '%s (%d samples)</text>' % (18 * k, 15 * k, e(title), total),
           '<text id="reset" class="btn" x="4" y="%d" opacity="0.35">'
           'reset zoom</text>' % (58 * k - 4),
           '<foreignObject x="%d" y="%d" width="%d" height="%d">'
           '<input xmlns="http://www.w3.org/1999/xhtml" id="q" '
           'type="search" placeholder="search (regex)"/></foreignObject>' %
           (4 + 12 * cw, 43 * k - 4, 214 * k, 22 * k)]
    x = 4
    for m, fill in legend:
        out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>'
                   '<text x="%d" y="%d">%s</text>' % (
                       x, 27 * k, 12 * k, 12 * k, fill, x + 16 * k, 37 * k,
                       e(m)))
        x += int(16 * k + len(m) * cw + 14 * k)
    out.append('<text id="found" x="%d" y="%d"></text>' % (
        4 + 12 * cw + 214 * k + 10 * k, 58 * k - 4))
    for s, d, n, name, mod in rows:
        x, w = s * width / total, n * width / total
        y = top + (depth - d - 1) * h
        out.append('<g class="f" data-s="%d" data-n="%d" data-d="%d" '
                   'data-m="%s"><title>%s\n%s, %d samples, %.2f%%</title>'
                   '<rect x="%.1f" y="%d" width="%.1f" height="%d" '
                   'fill="%s" stroke="#fff" stroke-width="0.5"/>'
                   '<text x="%.1f" y="%d">%s</text></g>' %
                   (s, n, d, e(mod), e(name), e(mod), n, 100.0 * n / total,
                    x, y, w, h - 1, flame_colour(mod, name), x + 3,
                    y + int(round(13 * k)), e(flame_label(name, w, cw))))
    out.append('<text id="details" x="4" y="%d">Hover: full name, module '
               'and share. Click: zoom. Esc: reset.</text>' % (
                   height - 8 * k))
    out.append('<script type="text/javascript"><![CDATA[%s]]></script>' %
               (FLAME_SCRIPT % {"width": width, "cw": repr(cw),
                                "total": total, "stage": font_px > 12}))
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
            ["perf", "record"] + PERF_RECORD + ["-o", perf_data, "-p",
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
    svg, summ = None, None
    if perf and os.path.exists(perf_data):
        svg, summ = read_profile(perf_data, outdir)
    if perf and svg is None:
        no_graph = "perf recorded no samples of hs-server or hs-balancer"
        progress("step 3: no flame graph: %s" % no_graph)
    return w, d, breakdown, svg, bal0, no_graph, summ


def read_profile(perf_data, outdir):
    """perf.data -> (flame graph SVG, summary), also written to outdir as
    flamegraph.svg, perf.folded and profile.json; perf.data is removed."""
    svg, summ = None, None
    try:
        r = subprocess.run(["perf", "script", "--no-inline", "-i",
                            perf_data],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           timeout=300)
        samples = parse_perf_script(r.stdout.decode("utf-8", "replace"))
    finally:
        os.unlink(perf_data)
    folded = fold_samples(samples)
    if folded:
        svg = flamegraph_svg(folded, "hs-server + hs-balancer, step 3",
                             modules=fold_modules(samples))
        with open(os.path.join(outdir, "flamegraph.svg"), "w") as f:
            f.write(svg)
        # The report's slide: the same graph at stage size.
        with open(os.path.join(outdir, "flamegraph-stage.svg"), "w") as f:
            f.write(flamegraph_svg(folded, "hs-server + hs-balancer, step 3",
                                   modules=fold_modules(samples),
                                   font_px=24))
        with open(os.path.join(outdir, "perf.folded"), "w") as f:
            for k, v in sorted(folded.items(), key=lambda kv: -kv[1]):
                f.write("%s %d\n" % (k, v))
        summ = profile_summary(samples)
        summ["recorded"] = "perf record " + " ".join(PERF_RECORD)
        with open(os.path.join(outdir, "profile.json"), "w") as f:
            json.dump(summ, f, indent=1)
    return svg, summ


def make_stack(step, a, logdir, servers=1, io=None, cache=None):
    """The stack of a step: servers behind hs-balancer when there is more
    than one (and in steps 2 and 3 always), the cache of the step, and
    io ("event" or "blocking") for step 2b."""
    balancer = step.split("/")[0] in ("2", "3")
    if cache is None:
        cache = {"0": "off", "1b": "naive"}.get(step, "lease")
    ports = hs.free_ports(servers + 3)
    extra = []
    threads = a.server_threads
    db_threads = a.server_db_threads
    server_cpus = a.server_cpus
    if step == "1b":
        # Every miss sleeps for the fill delay in the thread that fills
        # it.  On database threads (32: a sleeping thread costs no CPU) the
        # fills sleep apart from the event loops, so the checker's writes
        # are not queued behind sleeping fills and land inside their
        # windows, as the race needs.
        # --durability normal (no fsync per commit): the race needs the
        # checker's writes to come often, and on a busy disk an fsync can
        # take 300 ms.
        extra = ["--debug-fill-delay-ms", str(a.fill_delay_ms),
                 "--durability", "normal"]
        db_threads = max(32, db_threads or 0)
        # No CPU budget: with the budget spent by wrk, every request waits
        # for the next quota period (up to 85 ms of each 100 ms at 0.15
        # core), the checker writes a few times a second, and few writes
        # land in a fill's window.  1b is a correctness demonstration.
        server_cpus = 0
    if io == "blocking":
        # One connection per worker until it closes: no database threads.
        extra = ["--io", "blocking"]
        threads, db_threads = a.blocking_threads, None
    elif io == "event":
        extra = ["--io", "event"]
    return hs.Stack(servers=servers, cache=cache, memcached=1,
                    balancer=balancer, db=a.db, scale=a.scale,
                    server_ports=ports[:servers],
                    memcached_ports=[ports[servers]],
                    balancer_port=ports[servers + 1],
                    admin_port=ports[servers + 2], logdir=logdir,
                    server_args=extra, threads=threads,
                    db_threads=db_threads, server_cpus=server_cpus,
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


def machine_ticks():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def name_limit(before, after, seconds, m0, m1):
    """The part that stops growth, named from the measurements: a host at
    its budget (throttled a fifth of the time or more), a host without a
    budget near a whole core, or the machine with every core busy.
    Servers at their budget means more servers help."""
    def use(name):
        b, u = before.get(name, {}), after[name]
        return ((u["cpu_s"] - b.get("cpu_s", 0)) / max(seconds, 1e-9),
                (u["throttled_s"] - b.get("throttled_s", 0)) /
                max(seconds, 1e-9), u.get("cpus", 0))
    srv = [use(n) for n in after if n.startswith("hs-server")]
    note = ""
    if srv and srv[0][2]:
        note = " (servers throttled %.2f s per second)" % (
            sum(x[1] for x in srv) / len(srv))
    if m0 and m1 and m1[1] > m0[1]:
        busy = (m1[0] - m0[0]) / float(m1[1] - m0[1])
        if busy >= 0.9:
            return ("the machine: %.0f%% of its %d cores busy%s" %
                    (100 * busy, os.cpu_count() or 0, note))
    for name in ("hs-balancer", "memcached-1"):
        if name not in after:
            continue
        cpu, thr, cpus = use(name)
        if cpus and thr >= 0.2:
            return "%s: at its %g-core budget (throttled %.2f s per " \
                "second)%s" % (name, cpus, thr, note)
        if cpu >= 0.9:
            return "%s: %.2f cores busy%s" % (name, cpu, note)
    if srv:
        thr = sum(x[1] for x in srv) / len(srv)
        cpu = sum(x[0] for x in srv) / len(srv)
        if srv[0][2] and thr >= 0.2:
            # throttled_s adds up every CPU a host's threads were held
            # off, so it can pass 1 s per second.
            return ("the servers' budgets (each used %.2f of its %g core, "
                    "its threads held off %.2f s per second): more servers "
                    "help" % (cpu, srv[0][2], thr))
        if not srv[0][2] and cpu >= 0.9:
            return "the servers: %.2f cores each" % cpu
    return ("no host at its CPU limit: the database (its writes and locks) "
            "or the clients")


class QueueWatch(threading.Thread):
    """The clients left waiting: the listen socket's accept queue (ss's
    Recv-Q of a LISTEN socket), sampled every 0.5 s while it runs."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.samples = port, []
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.wait(0.5):
            try:
                r = subprocess.run(["ss", "-ltnH", "sport = :%d" % self.port],
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, timeout=5)
            except (OSError, subprocess.SubprocessError):
                return
            for line in r.stdout.decode().splitlines():
                f = line.split()
                if len(f) >= 2 and f[0] == "LISTEN":
                    self.samples.append(int(f[1]))

    def finish(self):
        self.stop_ev.set()
        self.join(10)
        s = sorted(self.samples)
        return s[len(s) // 2] if s else ""


def hsload_args(port, a, counts, mix, connections):
    args = [os.path.join(hs.BIN, "hs-load"), "http://127.0.0.1:%d/" % port,
            "--mix", mix, "--connections", str(connections),
            "--products", str(counts["products"]),
            "--categories", str(counts["categories"])]
    if mix == "update":
        args += ["--put", "%g" % a.put, "--review", "%g" % a.review]
    return args


def run_sweep(step, port, a, counts, peak, outdir, mix, connections):
    """A short latency-vs-offered-load curve around the step's wrk peak:
    (points, capacity at the SLO: the highest offered rate with p99 <=
    --slo-ms, every answer 2xx and >= 90% of the rate achieved)."""
    if a.no_sweep or peak <= 0:
        return [], ""
    rates = sorted({max(1, int(round(f * peak))) for f in a.sweep_points})
    cmd = hsload_args(port, a, counts, mix, connections) + [
        "--sweep", ",".join(str(r) for r in rates),
        "--duration", "%g" % a.sweep_seconds,
        "--warmup", "%g" % a.sweep_warmup,
        "--timeout", "%g" % max(1.0, a.slo_ms * 20 / 1000.0)]
    progress("step %s: open-loop sweep at %s req/s (%gs each)" % (
        step, ",".join(str(r) for r in rates), a.sweep_seconds))
    limit = len(rates) * (a.sweep_seconds + a.sweep_warmup + 10) + 60
    text = hslab.run_wrk_cmd(cmd, limit, os.path.join(
        outdir, "step-%s-sweep.txt" % step.replace("/", "-")))
    j = hslab.hsjson(text) or {}
    points = j.get("points") or ([j] if "offered_rps" in j else [])
    cap = 0
    for p in points:
        ok = (p.get("p99_us", 1e18) <= a.slo_ms * 1000 and
              not p.get("errors") and not p.get("non2xx") and
              p.get("achieved_rps", 0) >= 0.9 * p.get("offered_rps", 0))
        if ok:
            cap = max(cap, int(round(p["offered_rps"])))
    with open(os.path.join(outdir, "sweeps.csv"), "a", newline="") as f:
        wr = csv.writer(f)
        for p in points:
            wr.writerow([step] + [p.get(k, "") for k in SWEEP_COLUMNS[1:]])
    return points, cap


def server_requests(stk):
    return [get_json(p, "/stats").get("requests", 0) for p in stk.server_ports]


def base_row(step, title, a, stk, w, d, c, host_cpu, host_thr):
    lookups = d.get("hits", 0) + d.get("misses", 0)
    n = d.get("requests", 0)
    return {
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
        "servers": stk.nservers, "io": "event", "connections": a.connections,
        "capacity_rps": "", "slo_ms": a.slo_ms,
        "db_queries_per_req": (round(d.get("db_queries", 0) / n, 3)
                               if n else ""),
        "db_time_pct": (round(100.0 * d.get("db_ms", 0) / d["req_ms"], 1)
                        if d.get("req_ms") else ""),
        "server_share": "", "limit": "", "waiting_clients": "",
        "timeouts": w.get("err_timeout", ""),
        "correctness_only": 1 if step in ("1b", "5c/off", "5c/on") else 0,
        "offered_rps": "", "busy_req_s": "", "busy_p99_ms": "",
        "busy_waiting": "",
    } | {k: "" for k in wdb.COLUMNS}


def warm_cache(stk, a, counts, step, mix="update"):
    """Fills the step's memcached before the measurement, as minutes of
    traffic would: wrk through an extra hs-server without a CPU budget on
    the same memcached and database (a budgeted server would take minutes
    to warm 100,000 products), then that server goes."""
    progress("step %s: warming the cache for %ds" % (step, a.warmup))
    port = hs.free_ports(1)[0]
    args = [os.path.join(hs.BIN, "hs-server"), "--listen",
            "127.0.0.1:%d" % port, "--db", stk.db, "--id", "warmer",
            "--cache", stk.cache, "--memcached", stk.memcached_list()]
    w = hslab.Proc(args, name="hs-server-warmer",
                   logpath=stk._logpath("hs-server-warmer"),
                   timeout=a.warmup + 120)
    try:
        hslab.wait_http(port, "/healthz", 30, w)
        if mix == "update":
            run_wrk(port, a, counts, a.warmup, seed=WARM_SEED)
        else:
            run_wrk_mix(port, a, counts, a.warmup, a.connections, mix, None,
                        seed=WARM_SEED)
    finally:
        w.stop()


class Stopped(Exception):
    """The speaker stopped the walkthrough at a pause (q, end of input,
    or the dashboard's POST /quit)."""


def pause(a, step, title, stk):
    """Step-through mode: the stack of the step is up and idle; say what
    to show and wait for Enter or the dashboard's next before loading it.
    Raises Stopped when the speaker stops."""
    if not a.pauser:
        return
    a.run_index += 1
    label = "step %s (%d/%d)" % (step, a.run_index, a.run_total)
    entry = "http://127.0.0.1:%d" % stk.entry_port()
    lines = ["", "== %s: %s — stack up, waiting ==" % (label, title),
             "  point at:  %s" % SHOW.get(step.split("/")[0], ""),
             "  entry:     %s/ (%s)" % (entry, "hs-balancer" if stk.balancer
                                        else "hs-server-1")]
    for i, p in enumerate(stk.server_ports):
        lines.append("  stats:     http://127.0.0.1:%d/stats (hs-server-%d)"
                     % (p, i + 1))
    if a.dash:
        lines.append("  dashboard: %s" % a.dash.url)
    lines += ["  try:       curl -i %s/products/1" % entry,
              "  Enter: load it   q Enter: stop everything%s" % (
                  "   (or the dashboard's next ▶, key n)" if a.dash else ""),
              "waiting: %s" % label]
    print("\n".join(lines), flush=True)
    event(a, step, "waiting")
    if not a.pauser.wait(label):
        raise Stopped(step)
    event(a, step, "go")


def run_step(step, a, counts, outdir, servers=1, io=None, ryw=None):
    """One measured step: wrk (with the checker beside it unless io is
    given), then its open-loop sweep.  step is the row's name ("0",
    "2/4", "2b/blocking", "5c/off", ...); ryw: step 5c's
    --read-your-writes."""
    base = step.split("/")[0]
    title, lesson = STEPS[base]
    dbstep = base in wdb.STEPS
    if dbstep:
        title = wdb.title(step, a, ryw)
    elif base == "2":
        title = title % servers
    elif base == "2b":
        title = title % ("blocking, %d workers" % a.blocking_threads
                         if io == "blocking" else "event loops")
    elif base == "3":
        servers = a.servers
        title = "profile, %d servers" % servers
    elif base == "1b":
        title = "naive cache, %d ms fill delay" % a.fill_delay_ms
    logdir = os.path.join(outdir, "logs", "step-" + step.replace("/", "-"))
    if dbstep:
        stk = wdb.make_stack(step, a, logdir, ryw)
    else:
        stk = make_stack(step, a, logdir, servers, io)
    progress("step %s: %s — starting %s%d server(s)%s%s" % (
        step, title, "PostgreSQL%s, " % (
            " + %d replicas" % stk.nreplicas if stk.nreplicas else "")
        if dbstep else "", stk.nservers,
        ", memcached" if stk.nmemcached else "",
        ", hs-balancer" if stk.balancer else ""))
    if dbstep and stk.replica_delay_ms:
        progress("step %s: the replicas apply WAL %d ms late, as a distant "
                 "or busy replica would" % (step, stk.replica_delay_ms))
    stk.start()
    if dbstep:
        counts = wdb.counts(stk, counts)
    a.sampler.watch(stk, step)
    conns = a.io_connections if io else a.connections
    mix = "read" if io else "update"
    fname = step.replace("/", "-")
    points, cap, qw = [], "", None
    try:
        port = stk.entry_port()
        pause(a, step, title, stk)
        if stk.cache != "off" and a.warmup > 0:
            warm_cache(stk, a, counts, step, mix)
        progress("step %s: %ds of load (wrk -c%d, %s mix)%s" % (
            step, a.duration, conns, mix, ", then as many users" if io else
            " with the consistency checker beside it"))
        chk = None
        if not io:
            chk = Checker(port, a, a.duration, stk.db,
                          os.path.join(outdir, "step-%s-checker.txt" % fname))
        if stk.budgets.problem:
            a.budget_problem = stk.budgets.problem
        hosts0, t0, m0 = stk.host_usage(), time.monotonic(), machine_ticks()
        wall0 = time.time()
        reads0 = None
        if dbstep:
            reads0 = wdb.read_counts(stk)
            event(a, step, "load start")   # the report's lag chart
        if chk:
            chk.start()
        extra = None
        share0 = server_requests(stk)
        if base == "3":
            w, d, breakdown, svg, _, no_graph, summ = profile(
                stk, a, counts, outdir, a.duration)
            extra = (breakdown, svg, no_graph, summ)
        else:
            before = snapshot(stk)
            if io:
                # The connections busy first (it also warms the cache
                # further), then the same number of users: the row.
                qw = QueueWatch(stk.server_ports[0])
                qw.start()
                busy = run_wrk_mix(port, a, counts, a.duration, conns,
                                   "read", os.path.join(
                                       outdir, "step-%s-wrk.txt" % fname))
                waiting = qw.finish()
                qw = None
                before = snapshot(stk)
                w = run_users(port, a, counts, conns, os.path.join(
                    outdir, "step-%s-users.txt" % fname))
                d = delta(before, snapshot(stk))
            else:
                w = run_wrk(port, a, counts, a.duration,
                            os.path.join(outdir, "step-%s-wrk.txt" % fname))
                d = delta(before, snapshot(stk))
        secs = time.monotonic() - t0
        hosts1, m1 = stk.host_usage(), machine_ticks()
        if dbstep:
            event(a, step, "load end")
            # The sampler's ticks of the load alone (the sweep comes next).
            dbf = wdb.row_fields(
                a, stk, ryw, wdb.read_share(reads0, wdb.read_counts(stk)),
                wdb.lag(a.sampler, stk.nreplicas, wall0, time.time()),
                wdb.db_cpu(hosts0, hosts1, secs))
        if qw:
            waiting = qw.finish()
        elif not io:
            waiting = ""
        share1 = server_requests(stk)
        host_cpu, host_thr = host_columns(hosts0, hosts1, secs)
        limit = name_limit(hosts0, hosts1, secs, m0, m1)
        if dbstep:
            limit = wdb.db_limit(hosts0, hosts1, secs) or limit
        if chk:
            chk.join(a.duration + 150)
        if base not in ("1b", "2b", "5c"):
            points, cap = run_sweep(step, port, a, counts, w["rps"], outdir,
                                    mix, conns)
    finally:
        a.sampler.watch(None)
        stk.stop()
    c = (chk.result if chk else None) or {}
    row = base_row(step, title, a, stk, w, d, c, host_cpu, host_thr)
    got = [y - x for x, y in zip(share0, share1)]
    tot = float(sum(got)) or 1.0
    row.update({
        "io": io or "event", "connections": conns, "capacity_rps": cap,
        "server_share": ";".join("s%d=%.1f%%" % (i + 1, 100.0 * g / tot)
                                 for i, g in enumerate(got)),
        "limit": limit, "waiting_clients": waiting,
    })
    if base == "1b":
        row["server_cpus"] = 0  # see make_stack
    if dbstep:
        row.update(dbf)
    if io:
        row.update({
            "offered_rps": w["offered_rps"],
            "waiting_clients": w["clients_starved"],
            "busy_req_s": round(busy["rps"], 1),
            "busy_p99_ms": round(busy["p99_us"] / 1000.0, 3),
            "busy_waiting": waiting,
        })
    return row, lesson, extra


def run_users(port, a, counts, clients, out_path):
    """Step 2b's load: `clients` keep-alive users of the read mix, each
    sending --io-client-rate req/s on its own schedule on its own
    connection (hs-load --per-connection), for --duration.  A request not
    answered within --io-timeout of its plan is a timeout (the user gave
    up).  Returns wrk-like fields for the row plus hs-load's own
    (offered_rps, clients_starved: clients never answered)."""
    rate = a.io_client_rate * clients
    cmd = hsload_args(port, a, counts, "read", clients) + [
        "--per-connection", "--rate", "%g" % rate,
        "--duration", "%g" % a.duration, "--warmup", "1",
        "--timeout", "%g" % a.io_timeout]
    progress("step 2b: %d keep-alive users at %g req/s each (%g req/s "
             "offered) for %ds" % (clients, a.io_client_rate, rate,
                                   a.duration))
    text = hslab.run_wrk_cmd(cmd, a.duration + a.io_timeout + 60, out_path)
    j = hslab.hsjson(text)
    if j is None:
        raise hs.StackError("hs-load printed no HSJSON line:\n%s" %
                            text[-2000:])
    return {"rps": j["achieved_rps"], "p50_us": j["p50_us"],
            "p99_us": j["p99_us"], "errors": j["errors"],
            "non2xx": j["non2xx"], "err_timeout": j["err_timeout"],
            "duration_s": max(j["duration_s"], 1e-9),
            "offered_rps": j["offered_rps"],
            "clients_starved": j["clients_starved"]}


def run_wrk_mix(port, a, counts, duration, connections, mix, out_path,
                seed=LOAD_SEED):
    """wrk with connections and the read mix (step 2b)."""
    cmd = hslab.wrk_args(port, duration, connections,
                         max(a.wrk_threads, 2), "", mix + "-mix.lua",
                         ["products=%d" % counts["products"],
                          "categories=%d" % counts["categories"],
                          "seed=%d" % seed])
    text = hslab.run_wrk_cmd(cmd, duration + 60, out_path)
    j = hslab.hsjson(text)
    if j is None:
        raise hs.StackError("wrk printed no HSJSON line:\n%s" % text[-2000:])
    return j


def event(a, step, what):
    """A moment of a step, into DIR/events.csv (time, step, event), so the
    report can mark it on the series."""
    with open(a.events_path, "a", newline="") as f:
        csv.writer(f).writerow(["%.3f" % time.time(), step, what])


def restart_memcached(stk, old):
    """An empty memcached on old's port, in old's cgroup."""
    c, _ = hslab.start_memcached(
        old.port, mem_mb=256, threads=2, conns=4096, name=old.name,
        retry_s=5, ready_timeout=20, logpath=stk._logpath(old.name + "-2"),
        cgroup=old.host.procs_files() if old.host else None)
    c.port, c.host = old.port, old.host
    stk.children[stk.children.index(old)] = c
    return c


def cache_loss_series(a, t0, t1, step):
    """Per-second req/s, DB queries/s, cache hit % and bypasses/s and the
    mean server latency of step 4, from the sampler's memory, into
    DIR/cacheloss.csv; returns the rows."""
    s = a.sampler.series().get("hs-server-1", {})

    def pts(k):
        return [(t, v) for t, v in s.get(k, []) if t0 - 1 <= t <= t1 + 0.5]
    cols = {k: dict(pts(k)) for k in ("requests", "db.queries", "cache.hits",
                                      "cache.misses", "cache.bypasses")}
    lat = {}
    for name, ms in s.items():
        if name.startswith("routes.") and name.endswith(".latency.count"):
            pre = name[:-len("count")]
            for t, cnt in pts(name):
                mean = dict(pts(pre + "mean_us")).get(t)
                if mean is not None:
                    x = lat.setdefault(t, [0, 0.0])
                    x[0] += cnt
                    x[1] += cnt * mean
    times = sorted(cols["requests"])
    out = []
    for t_prev, t in zip(times, times[1:]):
        dt = t - t_prev

        def rate(k):
            c = cols[k]
            return ((c.get(t, 0) - c.get(t_prev, 0)) / dt) if dt > 0 else 0
        hits, misses = rate("cache.hits"), rate("cache.misses")
        mean = ""
        if t in lat and t_prev in lat and lat[t][0] > lat[t_prev][0]:
            mean = round((lat[t][1] - lat[t_prev][1]) /
                         (lat[t][0] - lat[t_prev][0]) / 1000.0, 3)
        out.append({"time": "%.3f" % t, "t_s": round(t - t0, 1),
                    "step": step, "req_s": round(rate("requests"), 1),
                    "db_queries_s": round(rate("db.queries"), 1),
                    "hit_pct": (round(100 * hits / (hits + misses), 1)
                                if hits + misses else ""),
                    "bypasses_s": round(rate("cache.bypasses"), 1),
                    "mean_ms": mean})
    with open(os.path.join(a.outdir, "cacheloss.csv"), "a", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(out[0]) if out else ["time"])
        if f.tell() == 0:
            wr.writeheader()
        wr.writerows(out)
    return out


def run_cache_loss(a, counts, outdir, rate):
    """Step 4: open-loop load at rate on one server with the cache; a
    third of the way in memcached is killed, two thirds in an empty one
    comes back on the same port."""
    step = "4"
    title = STEPS["4"][0] % a.cache
    stk = make_stack(step, a, os.path.join(outdir, "logs", "step-4"), 1,
                     cache=a.cache)
    progress("step 4: %s — 1 server, memcached, open-loop load at %d req/s"
             % (title, rate))
    stk.start()
    a.sampler.watch(stk, step)
    dur = float(a.cache_loss_seconds)
    try:
        port = stk.entry_port()
        pause(a, step, title, stk)
        if a.warmup > 0:
            warm_cache(stk, a, counts, step)
        cmd = hsload_args(port, a, counts, "update", a.connections) + [
            "--rate", str(rate), "--duration", "%g" % dur, "--warmup", "0",
            "--timeout", "%g" % max(1.0, a.slo_ms * 20 / 1000.0)]
        out_path = os.path.join(outdir, "step-4-load.txt")
        # Its per-second latency (client-side) live on the dashboard.
        cmd += ["--progress-ms", "1000"]
        a.sampler.follow("hs-load", out_path)
        p = hslab.Proc(cmd, name="hs-load", logpath=out_path,
                       timeout=dur + 120)
        # The checker beside the whole scene: the kill, the bypass and the
        # refill must not serve a stale read (with leases: 0).
        chk = Checker(port, a, max(1, int(round(dur))), stk.db,
                      os.path.join(outdir, "step-4-checker.txt"))
        chk.start()
        before, hosts0 = snapshot(stk), stk.host_usage()
        t0 = time.time()
        event(a, step, "load start")
        time.sleep(dur / 3)
        mc = [x for x in stk.children if x.name.startswith("memcached")][0]
        progress("step 4: killing memcached")
        mc.kill()
        mc.wait(10)
        event(a, step, "memcached killed")
        time.sleep(dur / 3)
        progress("step 4: an empty memcached comes back on port %d" % mc.port)
        restart_memcached(stk, mc)
        if not mc.host:  # CPU from /proc: the new process starts at 0
            hosts0[mc.name] = dict(hosts0[mc.name], cpu_s=0.0)
        event(a, step, "memcached restarted")
        p.wait(dur + 60)
        t1 = time.time()
        event(a, step, "load end")
        chk.join(dur + 150)
        d = delta(before, snapshot(stk))
        host_cpu, host_thr = host_columns(hosts0, stk.host_usage(), t1 - t0)
        time.sleep(1.2)  # the sampler's last tick of the step
    finally:
        a.sampler.watch(None)
        stk.stop()
    p.close()
    j = hslab.hsjson(hslab.tail(out_path, 1 << 20)) or {}
    series = cache_loss_series(a, t0, t1, step)
    w = {"rps": j.get("achieved_rps", 0), "p50_us": j.get("p50_us", 0),
         "p99_us": j.get("p99_us", 0), "errors": j.get("errors", 0),
         "non2xx": j.get("non2xx", 0), "duration_s": max(t1 - t0, 1e-9)}
    row = base_row(step, title, a, stk, w, d, chk.result or {}, host_cpu,
                   host_thr)
    row["connections"] = a.connections
    row["limit"] = "offered %d req/s open loop; peak DB %s q/s, min hit %s%%" \
        % (rate, max([x["db_queries_s"] for x in series] or [""]),
           min([x["hit_pct"] for x in series if x["hit_pct"] != ""] or [""]))
    return row, STEPS["4"][1], series


def fmt_row(r):
    return ("%-11s %-28s %9s %9s %8s %8s %7s %8s %6s %6s" % (
        r["step"], r["setup"][:28], r["req_s"], r["capacity_rps"],
        r["p50_ms"], r["p99_ms"], r["errors"], r["db_queries_per_req"],
        r["cache_hit_pct"], r["stale_reads"]))


HEADER = ("%-11s %-28s %9s %9s %8s %8s %7s %8s %6s %6s" % (
    "", "step", "req/s", "cap@SLO", "p50 ms", "p99 ms", "errors",
    "DB q/req", "hit %", "stale"))


def measure_peak(a, counts, outdir):
    """wrk's peak of step 1's setup, for step 4's offered rate when step 1
    did not run."""
    stk = make_stack("1", a, os.path.join(outdir, "logs", "step-4-peak"))
    stk.start()
    try:
        warm_cache(stk, a, counts, "4")
        return run_wrk(stk.entry_port(), a, counts, 3)["rps"]
    finally:
        stk.stop()


def fnum(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def write_summary(outdir, rows, meta, a):
    """DIR/summary.json: the numbers a speaker says out loud, as
    {"label", "value", "detail"}, and the run's meta."""
    by = {r["step"]: r for r in rows}
    head = []


    def add(label, value, detail):
        head.append({"label": label, "value": value, "detail": detail})
    if "0" in by and "1" in by:
        add("capacity with the cache",
            "%s -> %s req/s" % (by["0"]["capacity_rps"] or by["0"]["req_s"],
                                by["1"]["capacity_rps"] or by["1"]["req_s"]),
            "step 0 -> step 1, open-loop capacity at p99 <= %g ms "
            "(wrk peak %s -> %s req/s)" % (a.slo_ms, by["0"]["req_s"],
                                           by["1"]["req_s"]))
        add("DB queries per request", "%s -> %s" % (
            by["0"]["db_queries_per_req"], by["1"]["db_queries_per_req"]),
            "step 0 -> step 1; DB time share %s%% -> %s%%" % (
                by["0"]["db_time_pct"], by["1"]["db_time_pct"]))
    so = [r for r in rows if r["step"].startswith("2/")]
    if len(so) >= 2:
        lo, hi = so[0], so[-1]
        x = fnum(hi["req_s"]) / max(fnum(lo["req_s"]) or 1e-9, 1e-9)
        add("scale-out", "x%.1f with %d servers" % (x, hi["servers"]),
            "%s -> %s req/s (wrk) for %d -> %d servers, capacity at the "
            "SLO %s -> %s req/s; limit at %d: %s" % (
                lo["req_s"], hi["req_s"], lo["servers"], hi["servers"],
                lo["capacity_rps"], hi["capacity_rps"], hi["servers"],
                hi["limit"]))
    if "2b/blocking" in by and "2b/event" in by:
        b, e = by["2b/blocking"], by["2b/event"]
        add("event loop vs blocking pool", "x%.1f" % (
            fnum(e["req_s"]) / max(fnum(b["req_s"]) or 1e-9, 1e-9)),
            "%s vs %s req/s, %s keep-alive users offering %s; never "
            "answered %s vs %s; back to back (wrk) %s vs %s req/s" % (
                e["req_s"], b["req_s"], e["connections"], e["offered_rps"],
                e["waiting_clients"], b["waiting_clients"], e["busy_req_s"],
                b["busy_req_s"]))
    lease = [r for r in rows if r["step"].split("/")[0] in ("1", "2", "3")
             or (r["step"] == "4" and a.cache == "lease")]
    if lease:
        add("stale reads at the lease steps",
            sum(int(r["stale_reads"]) for r in lease
                if str(r["stale_reads"]).isdigit()),
            "steps %s" % ", ".join(r["step"] for r in lease))
    if "1b" in by:
        add("stale reads with the naive cache", by["1b"]["stale_reads"],
            "step 1b, a correctness demonstration")
    wdb.headline(by, add)
    if "4" in by:
        add("losing the cache", by["4"]["limit"], "%s; stale reads %s "
            "(hs-checker beside the scene)" % (by["4"]["setup"],
                                               by["4"]["stale_reads"]))
    caps = [{"step": r["step"], "capacity_rps": r["capacity_rps"],
             "req_s": r["req_s"]} for r in rows
            if not r["correctness_only"]]
    doc = {"headline": head, "capacity": caps, "slo_ms": a.slo_ms,
           "meta": dict(meta, budget_problem=a.budget_problem,
                        server_cpus=a.server_cpus, cache_cpus=a.cache_cpus,
                        balancer_cpus=a.balancer_cpus,
                        duration=a.duration,
                        sweep_seconds=(0 if a.no_sweep else
                                       a.sweep_seconds),
                        sweep_points=a.sweep_points,
                        cache_loss_seconds=a.cache_loss_seconds)}
    with open(os.path.join(outdir, "summary.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


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
                    help="seconds of unmeasured load before a cached step, "
                    "through an extra server without a budget on the same "
                    "memcached (default 3)")
    ap.add_argument("--connections", type=int, default=64, metavar="C",
                    help="wrk connections (default 64)")
    ap.add_argument("--wrk-threads", type=int, default=1, metavar="T",
                    help="wrk threads (default 1)")
    ap.add_argument("--servers", type=int, default=2, metavar="N",
                    help="servers behind the balancer in steps 3 and 5 "
                    "(default 2; step 2 runs --scale-out)")
    ap.add_argument("--server-threads", type=int, default=None, metavar="N",
                    help="event loop threads per server (default: CPUs)")
    ap.add_argument("--server-db-threads", type=int, default=None,
                    metavar="N",
                    help="database threads per server (default 0: the loops "
                    "run the queries; try --server-threads 1 "
                    "--server-db-threads 8)")
    ap.add_argument("--steps", default=DEFAULT_STEPS,
                    help="steps to run, of %s (default %s; 5, the "
                    "database server with PostgreSQL and read replicas, "
                    "only when asked for)" % (STEP_CHOICES, DEFAULT_STEPS))
    ap.add_argument("--scale-out", default="1,2,4", metavar="LIST",
                    help="step 2: the server counts behind hs-balancer, one "
                    "row each (default 1,2,4)")
    ap.add_argument("--blocking-threads", type=int, default=8, metavar="N",
                    help="step 2b: workers of the blocking server (8)")
    ap.add_argument("--io-connections", type=int, default=256, metavar="C",
                    help="step 2b: keep-alive clients (256)")
    ap.add_argument("--io-client-rate", type=float, default=2.0,
                    metavar="R",
                    help="step 2b: requests per second each client sends on "
                    "its own schedule, a user pausing between requests (2)")
    ap.add_argument("--io-timeout", type=float, default=2.0, metavar="S",
                    help="step 2b: a request unanswered S seconds after its "
                    "plan is a timeout: the user gave up (2)")
    ap.add_argument("--slo-ms", type=float, default=50.0, metavar="MS",
                    help="the latency objective: a step's capacity is the "
                    "highest offered rate of its sweep with p99 <= MS, no "
                    "errors and >= 90%% of the rate achieved (default 50)")
    ap.add_argument("--sweep-points", default="0.25,0.5,0.75,0.9,1.0,1.1",
                    metavar="F,F,..",
                    help="the open-loop sweep's offered rates as fractions "
                    "of the step's wrk peak (default 0.25,0.5,0.75,0.9,1.0,"
                    "1.1)")
    ap.add_argument("--sweep-seconds", type=float, default=3.0, metavar="S",
                    help="measured seconds per sweep point (default 3)")
    ap.add_argument("--sweep-warmup", type=float, default=0.5, metavar="S",
                    help="unmeasured seconds before each sweep point (0.5)")
    ap.add_argument("--no-sweep", action="store_true",
                    help="no open-loop sweeps (no capacity at the SLO)")
    ap.add_argument("--cache-loss-seconds", type=float, default=15.0,
                    metavar="S",
                    help="step 4: seconds of load; memcached dies at a third "
                    "and an empty one is back at two thirds (default 15)")
    ap.add_argument("--cache-loss-load", type=float, default=0.5,
                    metavar="F",
                    help="step 4: offered rate as a fraction of step 1's wrk "
                    "peak (default 0.5)")
    ap.add_argument("--cache", choices=("lease", "naive"), default="lease",
                    help="step 4's cache: lease (each cold key costs one "
                    "query) or naive (the refill herd)")
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
    ap.add_argument("--interactive", action="store_true",
                    help="step-through mode: bring each step's stack up, "
                    "print what to show (URLs, a curl -i line) and wait for "
                    "a line on stdin (Enter) or the dashboard's next button "
                    "before loading it; q, end of input or the dashboard's "
                    "POST /quit stop everything (exit 0, partial report). "
                    "stdin: a terminal or a pipe; else the dashboard alone "
                    "drives it")
    hs.add_cpu_args(ap)
    wdb.add_args(ap)
    # Small hosts: 0.15 core per server, so that on a 2-core machine four
    # of them, memcached, hs-balancer and the clients still fit, and
    # every server is CPU bound at its own budget (README, "The talk").
    ap.set_defaults(server_cpus=DEFAULT_SERVER_CPUS)
    for act in ap._actions:
        if act.dest == "server_cpus":
            act.help = ("CPU budget of each hs-server in cores, a cgroup "
                        "CPU quota like a small VM (default %g; 0: none)" %
                        DEFAULT_SERVER_CPUS)
    hs.add_dashboard_args(ap)
    hs.add_check_args(ap)
    a = ap.parse_args(argv)
    steps = wdb.expand([s.strip() for s in a.steps.split(",") if s.strip()])
    bad = [s for s in steps if s not in STEPS]
    if bad:
        ap.error("unknown step %s (steps: %s)" % (",".join(bad),
                                                   STEP_CHOICES))
    # One table of ranges; None (an option left to its default) passes.
    for name, v, lo, hi in (
            ("--duration", a.duration, 1, 3600),
            ("--warmup", a.warmup, 0, 600),
            ("--connections", a.connections, 1, 20000),
            ("--wrk-threads", a.wrk_threads, 1, 64),
            ("--servers", a.servers, 1, 32),
            ("--hot", a.hot, 1, 1000),
            ("--readers", a.readers, 0, 256),
            ("--writers", a.writers, 0, 64),
            ("--fill-delay-ms", a.fill_delay_ms, 0, 10000),
            ("--read-interval-ms", a.read_interval_ms, 0, 60000),
            ("--write-interval-ms", a.write_interval_ms, 0, 60000),
            ("--server-threads", a.server_threads, 1, 1024),
            ("--server-db-threads", a.server_db_threads, 0, 1024),
            ("--blocking-threads", a.blocking_threads, 1, 1024),
            ("--io-connections", a.io_connections, 1, 20000),
            ("--io-client-rate", a.io_client_rate, 0.01, 1000),
            ("--io-timeout", a.io_timeout, 0.1, 600),
            ("--slo-ms", a.slo_ms, 0.1, 60000),
            ("--sweep-seconds", a.sweep_seconds, 0.1, 600),
            ("--sweep-warmup", a.sweep_warmup, 0, 600),
            ("--cache-loss-seconds", a.cache_loss_seconds, 3, 3600),
            ("--cache-loss-load", a.cache_loss_load, 0.01, 10)):
        if v is not None and not lo <= v <= hi:
            ap.error("%s must be in %g..%g" % (name, lo, hi))
    try:
        a.scale_out = [int(x) for x in a.scale_out.split(",") if x.strip()]
        a.sweep_points = [float(x) for x in a.sweep_points.split(",")
                          if x.strip()]
    except ValueError:
        ap.error("--scale-out takes server counts and --sweep-points "
                 "fractions, comma-separated")
    if not a.scale_out or not all(1 <= n <= 32 for n in a.scale_out):
        ap.error("--scale-out must list server counts in 1..32")
    if not a.sweep_points or not all(0 < f <= 10 for f in a.sweep_points):
        ap.error("--sweep-points must list fractions in 0..10")
    if not 0.0001 <= a.scale <= 100:
        ap.error("--scale must be in 0.0001..100")
    hs.check_cpus(ap, a)
    wdb.check_args(ap, a)
    if not (0 <= a.put and 0 <= a.review and a.put + a.review <= 1):
        ap.error("--put and --review must be shares with put+review <= 1")
    if a.connections < a.wrk_threads:
        ap.error("--connections must be at least --wrk-threads")
    a.pauser, a.dash = None, None
    a.run_index, a.run_total = 0, sum(
        len(a.scale_out) if s == "2" else 2 if s in ("2b", "5c") else 1
        for s in steps)
    if a.interactive and a.no_dashboard and not stdin_usable():
        ap.error("--interactive needs a terminal or a pipe on stdin, or "
                 "the dashboard (no --no-dashboard): nothing could say next")
    if a.check_args:
        return 0
    if any(s in wdb.STEPS for s in steps):
        # Before anything slow (after --check-args: setup installs it).
        why = wdb.problem()
        if why:
            sys.stderr.write("walkthrough: %s\n" % why)
            return 2
        a.pg_dir = os.path.abspath(a.pg_dir)
    if a.interactive:   # its reader thread takes stdin from here on
        a.pauser = Pauser(sys.stdin if stdin_usable() else None)
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
    a.outdir = outdir
    a.events_path = os.path.join(outdir, "events.csv")
    with open(a.events_path, "w") as f:
        f.write("time,step,event\n")
    with open(os.path.join(outdir, "sweeps.csv"), "w", newline="") as f:
        csv.writer(f).writerow(SWEEP_COLUMNS)
    started = time.monotonic()
    if a.server_cpus or a.cache_cpus or a.balancer_cpus:
        meta["budgets"] = "server %g, cache %g, balancer %g cores" % (
            a.server_cpus, a.cache_cpus, a.balancer_cpus)
        if any(s in wdb.STEPS for s in steps):
            meta["budgets"] += ", database %g (step 5)" % a.db_cpus
    rows, lessons, extra = [], {}, None
    print(HEADER, flush=True)
    # Every component's counters once a second, labelled by step.
    a.sampler = hslab.Sampler(os.path.join(outdir, "series.csv")).start()
    dash = None if a.no_dashboard else serve_dashboard(
        a.sampler, a.dashboard, say=True)
    a.dash = dash
    if dash and a.pauser:
        dash.pauser = a.pauser
    try:
        if a.pauser and not dash and not a.pauser.has_stdin:
            sys.stderr.write("walkthrough: --interactive: the dashboard is "
                             "not served and stdin cannot say next\n")
            return 2
        for step in steps:
            runs = [(step, {})]
            if step == "2":
                runs = [("2/%d" % n, {"servers": n}) for n in a.scale_out]
            elif step == "2b":
                runs = [("2b/blocking", {"io": "blocking"}),
                        ("2b/event", {"io": "event"})]
            elif step in wdb.STEPS:
                runs = wdb.runs(step)
            for name, kw in runs:
                event(a, name, "start")
                if step == "4":
                    peak = next((float(r["req_s"]) for r in rows
                                 if r["step"] == "1"), 0.0)
                    if not peak:
                        progress("step 4: measuring step 1's peak first")
                        peak = measure_peak(a, counts, outdir)
                    row, lesson, ex = run_cache_loss(
                        a, counts, outdir,
                        max(1, int(peak * a.cache_loss_load)))
                    ex = None
                else:
                    row, lesson, ex = run_step(name, a, counts, outdir, **kw)
                event(a, name, "end")
                rows.append(row)
                lessons[name] = lesson
                if ex:
                    extra = ex
                if a.budget_problem:
                    meta["budgets"] = "NONE APPLIED: " + a.budget_problem
                print(fmt_row(row), flush=True)
                if row["limit"]:
                    print("    limit: %s" % row["limit"], flush=True)
                if row["server_share"] and row["servers"] > 1:
                    print("    share: %s" % row["server_share"], flush=True)
                for line in wdb.describe(row):
                    print(line, flush=True)
                if row["waiting_clients"] != "":
                    print("    %s users offering %s req/s: never answered "
                          "%s, timeouts %s; sending back to back (wrk): "
                          "%s req/s, p99 %s ms, %s waiting in the accept "
                          "queue" % (
                              row["connections"], row["offered_rps"],
                              row["waiting_clients"], row["timeouts"],
                              row["busy_req_s"], row["busy_p99_ms"],
                              row["busy_waiting"]), flush=True)
                # The summary first: the report's headline reads it.
                meta["wall_s"] = round(time.monotonic() - started, 1)
                write_summary(outdir, rows, meta, a)
                write_report(outdir, rows, lessons, extra, meta)
    except KeyboardInterrupt:
        sys.stderr.write("walkthrough: interrupted; partial report in %s\n" %
                         outdir)
        return 130
    except Stopped as e:
        # A stop the speaker asked for: a normal end (exit 0).
        if not rows:
            write_report(outdir, rows, lessons, extra, meta)
        sys.stderr.write("walkthrough: stopped at step %s; partial report "
                         "in %s\n" % (e, outdir))
        return 0
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
        if len(extra) > 3 and extra[3]:
            print("\nprofile (step 3):")
            for line in report.profile_summary_md(extra[3]):
                print(("  " + line) if line else "")
    print("\nreport: %s/report.html (results.md, results.csv, series.csv)" %
          outdir)
    stale = [r for r in rows if (r["step"].split("/")[0] in ("1", "2", "3")
                                 or (r["step"] == "4" and a.cache == "lease"))
             and r["stale_reads"] not in (0, "n/a")]
    if stale:
        sys.stderr.write("walkthrough: stale reads at a lease step: %s\n" %
                         ", ".join(r["step"] for r in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
