"""Per-second series of every component's counters, in a background
thread: into a CSV file (for reports) and the last keep_s seconds in
memory (for a live view).

Each tick (default once a second) reads
  * each hs-server's /stats,
  * the balancer's admin /stats (plus "requests", the sum over its
    backends),
  * each memcached's `stats` over its text protocol,
  * with PostgreSQL replicas, what the servers' /stats say of them
    (db.replicas): under "pg-replica-K" its "lag_bytes" (the primary's
    WAL written minus what the replica replayed), "replay_age_ms" (the
    age of the newest commit it applied) and "lag_ms" (that age while
    lag_bytes > 0, else 0: its lag in time), the largest any server
    measured, and "reads" (summed); under
    "postgres" the reads sent to the primary ("reads"),
  * each host's CPU: "host.cpu_s" (CPU seconds used, from its cgroup, or
    from /proc without a budget), "host.throttled_s", "host.nr_throttled"
    and "host.cpus" (its budget in cores, 0: none),
and writes one row per numeric value: time (Unix seconds), step (the label
set with watch()), component (hs-server-1, hs-balancer, memcached-1),
metric, value.  Nested JSON keys are joined with dots ("db.queries",
"cache.hits", "backends.0.requests": lists by index); strings are left
out, booleans are 0/1.

Tools that print progress lines (hs-checker --progress-ms, hs-load
--progress-ms: JSON objects with "progress": true and "t", Unix seconds)
into a file are followed with follow(component, path): each tick reads
the lines added since, and each becomes one point at its own "t" under
that component ("checker", "hs-load"), every numeric field a metric.

Per-second percentiles: the latency quantiles in /stats are since start,
so the sampler also keeps each component's latency histogram ("buckets"
of hs_hist_json: a server's routes but its own /stats, /metrics and
/healthz polls; the balancer's backends) and writes, from the difference
of two ticks, "window.p50_us", "window.p99_us" and "window.requests": the
server-side latency of the requests answered in that second alone.

Rates: for the counters in RATES the sampler also writes METRIC/s, the
change per second since the previous tick of the same component (so
"requests/s", "db.queries/s", "host.cpu_s/s" = cores in use,
"host.throttled_s/s"); everything else is left to readers.
"""

import collections
import csv
import json
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
                   r"host\.(cpu_s|throttled_s|nr_throttled)|"
                   r"reads|behind|writes|stale_reads|answers|lost)$")

COLUMNS = ["time", "step", "component", "metric", "value"]

# A server's routes left out of its window percentiles: our own polling.
POLL_ROUTES = re.compile(r"^GET /(stats|metrics|healthz)\b")


def hist_buckets(lats):
    """{upper_us: count} summed over hs_hist_json objects (their
    "buckets": "UPPER_US:COUNT UPPER_US:COUNT ...")."""
    out = collections.Counter()
    for lat in lats:
        text = (lat or {}).get("buckets")
        for pair in text.split() if isinstance(text, str) else ():
            le, _, n = pair.partition(":")
            if le.isdigit() and n.isdigit():
                out[int(le)] += int(n)
    return out


def window_quantiles(cur, prev, qs=(0.5, 0.99)):
    """(count, [quantile, ...]) of the values recorded between two
    snapshots of hist_buckets(), as hs_hist_quantile() reports them (a
    bucket's upper bound); None when a bucket went back (a restart)."""
    diff = {}
    for le, n in cur.items():
        d = n - prev.get(le, 0)
        if d < 0:
            return None
        if d:
            diff[le] = d
    if any(le not in cur for le in prev):
        return None
    total = sum(diff.values())
    out = []
    for q in qs:
        rank, seen = max(1, int(q * total + 0.5)), 0
        for le in sorted(diff):
            seen += diff[le]
            if seen >= rank:
                out.append(le)
                break
        else:
            out.append(0)
    return total, out


def replica_metrics(st, out):
    """Adds what one hs-server's /stats says of the PostgreSQL replicas it
    reads from (db.replicas, a list flatten() leaves out) to out:
    {"pg-replica-K": {"lag_bytes", "replay_age_ms", "lag_ms": the largest
    any server measured; "reads", "behind": summed over servers},
    "postgres":
    {"reads": the reads sent to the primary}}.  Replica K is the server's
    K-th --db-read (the stack passes them in that order)."""
    reps = (st.get("db") or {}).get("replicas")
    if not isinstance(reps, dict):
        return
    prim = out.setdefault("postgres", {})
    prim["reads"] = prim.get("reads", 0) + (reps.get("primary_reads") or 0)
    for i, r in enumerate(reps.get("list") or []):
        m = out.setdefault("pg-replica-%d" % (i + 1), {})
        for k in ("reads", "behind"):
            m[k] = m.get(k, 0) + (r.get(k) or 0)
        b, age = r.get("lag_bytes"), r.get("replay_age_ms")
        for k, v in (("lag_bytes", b), ("replay_age_ms", age)):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                m[k] = max(m.get(k, v), v)
        if isinstance(b, int) and isinstance(age, (int, float)) \
                and not isinstance(age, bool):
            # Caught up (nothing left to replay) is no lag, however old
            # the last commit is: writes may be seconds apart.  (hs-server
            # gives the age in ms with three decimals.)
            lag = int(round(age)) if b > 0 else 0
            m["lag_ms"] = max(m.get("lag_ms", lag), lag)


def stack_targets(stk):
    """The components of a running loadtest/stack.py Stack: (servers,
    balancers, memcacheds, hosts) for Sampler.watch().  A port is a
    (host, port) pair when the component is on a host of its own."""
    def at(host, port):
        a = stk.addr(host) if getattr(stk, "hosts", False) else None
        return (a, port) if a else port
    servers = [("hs-server-%d" % (i + 1), at("server%d" % (i + 1), p))
               for i, p in enumerate(stk.server_ports)]
    balancers = [("hs-balancer", at("balancer", stk.admin_port))] \
        if stk.balancer else []
    mcs = [("memcached-%d" % (i + 1), at("memcached%d" % (i + 1), p))
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
        self._follow = []      # [component, path, offset, partial line]
        self._step = ""
        self._prev = {}
        self._hist = {}        # component -> its last hist_buckets()
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
            # What the followed files still hold belongs to the step
            # ending (a tool's last line may be newer than the last tick).
            self._record(self._read_follows(), self._step, time.time())
            self._targets, self._step = targets, step
            self._prev = {}
            self._hist = {}
            self._follow = []

    def follow(self, component, path):
        """Until the next watch(): each tick, the progress lines appended
        to path (from its end now on) become points of component."""
        try:
            off = os.path.getsize(path)
        except OSError:
            off = 0
        with self._lock:
            self._follow.append([component, path, off, b""])

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
        got, hists, reps = {}, {}, {}
        for name, port in servers:
            st = get_json(port, "/stats", 2.0)
            got[name] = flatten(st)
            replica_metrics(st, reps)
            routes = st.get("routes") or {}
            if routes:
                hists[name] = hist_buckets(
                    r.get("latency") for k, r in routes.items()
                    if not POLL_ROUTES.match(k) and isinstance(r, dict))
        for comp, m in reps.items():
            got.setdefault(comp, {}).update(m)
        for name, port in balancers:
            st = get_json(port, "/stats", 2.0)
            if st.get("backends"):
                hists[name] = hist_buckets(b.get("latency")
                                           for b in st["backends"])
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
        with self._lock:
            if (servers, balancers, mcs, hosts) != self._targets[:4]:
                return []        # retargeted meanwhile: drop this tick
            for comp, h in hists.items():
                prev, self._hist[comp] = self._hist.get(comp), h
                w = window_quantiles(h, prev) if prev is not None else None
                if w and w[0] and comp in got:
                    got[comp].update({"window.requests": w[0],
                                      "window.p50_us": w[1][0],
                                      "window.p99_us": w[1][1]})
            points = [(now, comp, m) for comp, m in got.items()]
            return self._record(points + self._read_follows(), step, now)

    def _record(self, points, step, now):
        """Writes [(t, component, metrics)] with their rates into memory
        and the CSV (under the lock); returns the rows."""
        rows = []
        for t, comp, metrics in points:
            prev = self._prev.get(comp)
            for k, v in sorted(metrics.items()):
                rows.append((t, step, comp, k, v))
                # A counter that went back is a restarted process (step 4's
                # memcached): no rate across it rather than a negative one.
                if prev and RATES.match(k) and k in prev[1] and \
                        v >= prev[1][k]:
                    dt = t - prev[0]
                    if dt > 0:
                        rows.append((t, step, comp, k + "/s",
                                     (v - prev[1][k]) / dt))
            if metrics:
                self._prev[comp] = (t, metrics)
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

    def _read_follows(self):
        """[(t, component, metrics)] of the progress lines added to the
        followed files since the last tick (under the lock)."""
        out = []
        for f in self._follow:
            comp, path, off, part = f
            try:
                with open(path, "rb") as fh:
                    fh.seek(off)
                    data = fh.read(1 << 20)
            except OSError:
                continue
            f[2] = off + len(data)
            lines = (part + data).split(b"\n")
            f[3] = lines.pop()      # an incomplete last line waits
            for ln in lines:
                if not ln.startswith(b'{"progress"'):
                    continue
                try:
                    j = json.loads(ln)
                    t = float(j["t"])
                except (ValueError, KeyError, TypeError):
                    continue
                m = {k: v for k, v in j.items()
                     if k not in ("t", "progress") and
                     isinstance(v, (int, float)) and
                     not isinstance(v, bool)}
                out.append((t, comp, m))
        return out

    def _run(self):
        nxt = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception as e:  # a bad tick must not end the series
                sys.stderr.write("sampler: %s\n" % e)
            nxt += self.interval
            self._stop.wait(max(0.0, nxt - time.monotonic()))
