"""Per-second series of every component's counters, in a background
thread: into a CSV file (for reports) and the last keep_s seconds in
memory (for a live view).

Each tick (default once a second) reads
  * each hs-server's /stats,
  * the balancer's admin /stats (plus "requests", the sum over its
    backends),
  * each memcached's `stats` over its text protocol,
  * each host's CPU: "host.cpu_s" (CPU seconds used, from its cgroup, or
    from /proc without a budget), "host.throttled_s", "host.nr_throttled"
    and "host.cpus" (its budget in cores, 0: none),
and writes one row per numeric value: time (Unix seconds), step (the label
set with watch()), component (hs-server-1, hs-balancer, memcached-1),
metric, value.  Nested JSON keys are joined with dots ("db.queries",
"cache.hits", "backends.0.requests": lists by index); strings are left
out, booleans are 0/1.

Rates: for the counters in RATES the sampler also writes METRIC/s, the
change per second since the previous tick of the same component (so
"requests/s", "db.queries/s", "host.cpu_s/s" = cores in use,
"host.throttled_s/s"); everything else is left to readers.
"""

import collections
import csv
import os
import re
import sys
import threading
import time

from .stats import flatten, get_json, memcached_stats

RATES = re.compile(r"^(requests|accepted|db\.queries|db\.errors|"
                   r"cache\.(hits|misses|bypasses|fills)|"
                   r"backends\.\d+\.(requests|failures)|"
                   r"cmd_get|cmd_set|get_hits|get_misses|total_connections|"
                   r"host\.(cpu_s|throttled_s|nr_throttled))$")

COLUMNS = ["time", "step", "component", "metric", "value"]


def stack_targets(stk):
    """The components of a running loadtest/stack.py Stack: (servers,
    balancers, memcacheds, hosts) for Sampler.watch()."""
    servers = [("hs-server-%d" % (i + 1), p)
               for i, p in enumerate(stk.server_ports)]
    balancers = [("hs-balancer", stk.admin_port)] if stk.balancer else []
    mcs = [("memcached-%d" % (i + 1), p)
           for i, p in enumerate(stk.memcached_ports)]
    return servers, balancers, mcs, stk.host_usage


class Sampler:
    """Sampler(path).start(); watch(stack, "step 1"); ...; stop().

    path: the CSV file (appended to; header when new), or None.
    series(): {component: {metric: [(t, value), ...]}} of the last keep_s
    seconds.  Without targets (watch(None)) it idles."""

    def __init__(self, path=None, interval=1.0, keep_s=120.0):
        self.path, self.interval, self.keep_s = path, interval, keep_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._targets = ([], [], [], None)
        self._step = ""
        self._prev = {}
        self._mem = collections.defaultdict(
            lambda: collections.defaultdict(collections.deque))
        self._file = self._csv = None
        self.rows = 0

    # ---------------------------------------------------------- control

    def watch(self, stk=None, step="", servers=(), balancers=(),
              memcacheds=(), hosts=None):
        """Samples stk (a Stack; or the lists of (name, port) given) under
        the label step from the next tick on; watch(None) pauses."""
        if stk is not None:
            targets = stack_targets(stk)
        else:
            targets = (list(servers), list(balancers), list(memcacheds),
                       hosts)
        with self._lock:
            self._targets, self._step = targets, step
            self._prev = {}

    def start(self):
        if self.path:
            new = not os.path.exists(self.path) or \
                os.path.getsize(self.path) == 0
            self._file = open(self.path, "a", newline="")
            self._csv = csv.writer(self._file)
            if new:
                self._csv.writerow(COLUMNS)
                self._file.flush()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="hslab-sampler")
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        if self._file:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---------------------------------------------------------- reading

    def series(self):
        """{component: {metric: [(t, value), ...]}}, the last keep_s s."""
        with self._lock:
            return {c: {m: list(d) for m, d in ms.items()}
                    for c, ms in self._mem.items()}

    def sample_once(self):
        """One tick now: reads every target, records and writes it;
        returns [(time, step, component, metric, value)]."""
        with self._lock:
            (servers, balancers, mcs, hosts), step = self._targets, \
                self._step
        now = time.time()
        got = {}
        for name, port in servers:
            got[name] = flatten(get_json(port, "/stats", 2.0))
        for name, port in balancers:
            st = get_json(port, "/stats", 2.0)
            m = flatten({k: v for k, v in st.items() if k != "backends"})
            for i, b in enumerate(st.get("backends", [])):
                m.update(flatten(b, "backends.%d." % i))
            if "backends" in st:
                m["requests"] = sum(b.get("requests", 0)
                                    for b in st["backends"])
            got[name] = m
        for name, port in mcs:
            got[name] = {k: v for k, v in memcached_stats(port).items()
                         if isinstance(v, (int, float))}
        if hosts:
            try:
                usage = hosts()
            except OSError:
                usage = {}
            for name, u in usage.items():
                m = got.setdefault(name, {})
                for k, v in u.items():
                    m["host." + k] = v
        rows = []
        with self._lock:
            if (servers, balancers, mcs, hosts) != self._targets[:4]:
                return rows      # retargeted meanwhile: drop this tick
            for comp, metrics in got.items():
                prev = self._prev.get(comp)
                for k, v in sorted(metrics.items()):
                    rows.append((now, step, comp, k, v))
                    if prev and RATES.match(k) and k in prev[1]:
                        dt = now - prev[0]
                        if dt > 0:
                            rows.append((now, step, comp, k + "/s",
                                         (v - prev[1][k]) / dt))
                if metrics:
                    self._prev[comp] = (now, metrics)
            cut = now - self.keep_s
            for t, _, comp, k, v in rows:
                d = self._mem[comp][k]
                d.append((t, v))
                while d and d[0][0] < cut:
                    d.popleft()
            if self._csv:
                for t, s, comp, k, v in rows:
                    self._csv.writerow(("%.3f" % t, s, comp, k,
                                        ("%.6g" % v) if isinstance(v, float)
                                        else v))
                self._file.flush()
            self.rows += len(rows)
        return rows

    def _run(self):
        nxt = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception as e:  # a bad tick must not end the series
                sys.stderr.write("sampler: %s\n" % e)
            nxt += self.interval
            self._stop.wait(max(0.0, nxt - time.monotonic()))
