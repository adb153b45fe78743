"""Step 5 of the walkthrough: the database server, then + read replicas.

  5a      PostgreSQL (a local cluster, its own CPU budget: --db-cpus)
          under --servers budgeted hs-servers behind hs-balancer, no cache
          in front, so every read reaches the database
  5b      the same with --replicas streaming replicas (each with the same
          budget), the servers reading from them (--db-read): req/s up,
          the primary's CPU down; each replica's share of the reads and
          the lag measured while the load runs (the servers' /stats
          db.replicas: lag_bytes, replay_age_ms; hslab/sampler.py's
          lag_ms)
  5c/off  the stale-read scene: the cache back (lease), the replicas
          applying each commit --replica-delay-ms late (a distant or busy
          replica; a laptop's own lag is a few ms), hs-checker beside the
          load, hs-server --read-your-writes off: stale reads
  5c/on   the same with --read-your-writes on: the count hs-checker
          measures

The primary's data lives in --pg-dir (seeded once, reused); the replicas
are made afresh for each row (pg_basebackup) and removed after it.
"""

import os
import statistics

import hslab
import stack as hs
from hslab import get_json

STEPS = {
    "5a": ("PostgreSQL, %d servers, no cache",
           "the database server: a primary with its own CPU budget holds "
           "every read and write"),
    "5b": ("+ %d replicas, %d servers",
           "read scale-out: the servers read from streaming replicas, "
           "writes go to the primary"),
    "5c": ("RYW %s, replicas +%d ms",
           "replication lag: a read after a write can come back old; "
           "read-your-writes sends it to the primary until a replica has "
           "replayed the write"),
}
SUBSTEPS = ("5a", "5b", "5c")
SHOW = {
    "5a": "the dashboard: the postgres host's CPU at its budget",
    "5b": "the dashboard: replica lag (kB and ms), each replica's reads, "
          "the primary's CPU",
    "5c": "the stale reads tile; /stats db.replicas: behind, primary_reads",
}
DEFAULT_PG_DIR = os.path.join(hs.ROOT, "data", "pg-walkthrough")
DEFAULT_DB_CPUS = 0.25
COLUMNS = ["db_cpus", "replicas", "replica_delay_ms", "read_your_writes",
           "read_share", "lag_bytes", "lag_ms", "lag_ms_max", "db_cpu"]


def expand(steps):
    """--steps with "5" standing for 5a,5b,5c."""
    out = []
    for s in steps:
        out += list(SUBSTEPS) if s == "5" else [s]
    return out


def runs(step):
    """The rows of a step 5 part: [(row name, run_step keywords)]."""
    if step == "5c":
        return [("5c/off", {"ryw": "off"}), ("5c/on", {"ryw": "on"})]
    return [(step, {})]


def add_args(ap):
    ap.add_argument("--db-cpus", type=float, default=DEFAULT_DB_CPUS,
                    metavar="F",
                    help="step 5: CPU budget of the PostgreSQL primary and "
                    "of each replica in cores, a cgroup each (default %g; "
                    "0: none)" % DEFAULT_DB_CPUS)
    ap.add_argument("--replicas", type=int, default=2, metavar="R",
                    help="step 5: streaming read replicas in 5b and 5c "
                    "(default 2)")
    ap.add_argument("--replica-delay-ms", type=int, default=200,
                    metavar="MS",
                    help="step 5c: the replicas apply each commit MS late "
                    "(recovery_min_apply_delay), as a distant or busy "
                    "replica would; 0: their own lag (default 200)")
    ap.add_argument("--pg-dir", default=DEFAULT_PG_DIR, metavar="DIR",
                    help="step 5: the PostgreSQL primary's directory, "
                    "seeded at --scale once and reused (default "
                    "data/pg-walkthrough)")


def check_args(ap, a):
    if not (a.db_cpus == 0 or hslab.cgroups.MIN_CPUS <= a.db_cpus <= 1024):
        ap.error("--db-cpus must be 0 (no budget) or in %g..1024" %
                 hslab.cgroups.MIN_CPUS)
    if not 1 <= a.replicas <= 8:
        ap.error("--replicas must be in 1..8")
    if not 0 <= a.replica_delay_ms <= 60000:
        ap.error("--replica-delay-ms must be in 0..60000")


def problem():
    """Why step 5 cannot run here (one line), or None."""
    from hslab import pg
    try:
        pg.pg_bindir()
    except hslab.LabError as e:
        return "step 5 needs PostgreSQL: %s, or ./hammerstack setup --pg" % e
    return None


def title(step, a, ryw=None):
    base = step.split("/")[0]
    t = STEPS[base][0]
    if base == "5a":
        return t % a.servers
    if base == "5b":
        return t % (a.replicas, a.servers)
    return t % (ryw, a.replica_delay_ms)


def make_stack(step, a, logdir, ryw=None):
    """5a: primary only, no cache; 5b: + replicas; 5c: + the cache, the
    replicas late, hs-server --read-your-writes ryw."""
    base = step.split("/")[0]
    n = a.servers
    ports = hs.free_ports(n + 3)
    extra = ["--read-your-writes", ryw] if ryw else []
    return hs.Stack(servers=n, cache="lease" if base == "5c" else "off",
                    memcached=1, balancer=True, db="postgres",
                    pg_dir=a.pg_dir, scale=a.scale,
                    server_ports=ports[:n], memcached_ports=[ports[n]],
                    balancer_port=ports[n + 1], admin_port=ports[n + 2],
                    logdir=logdir, server_args=extra,
                    threads=a.server_threads,
                    db_threads=a.server_db_threads,
                    server_cpus=a.server_cpus, cache_cpus=a.cache_cpus,
                    balancer_cpus=a.balancer_cpus,
                    replicas=0 if base == "5a" else a.replicas,
                    db_cpus=a.db_cpus,
                    replica_delay_ms=(a.replica_delay_ms if base == "5c"
                                      else 0))


def counts(stk, default):
    """The id ranges of the PostgreSQL database (its seed's scale may not
    be the SQLite file's), from a server's /stats."""
    d = get_json(stk.server_ports[0], "/stats").get("data") or {}
    if d.get("products") and d.get("categories"):
        return {"products": d["products"], "categories": d["categories"]}
    return default


def read_counts(stk):
    """[primary reads, replica 1 reads, ...] summed over the servers."""
    out = [0] * (1 + len(stk.replicas))
    for p in stk.server_ports:
        reps = (get_json(p, "/stats").get("db") or {}).get("replicas")
        if not isinstance(reps, dict):
            continue
        out[0] += reps.get("primary_reads") or 0
        for i, r in enumerate(reps.get("list") or []):
            if i + 1 < len(out):
                out[i + 1] += r.get("reads") or 0
    return out


def read_share(before, after):
    """"primary=4.0%;replica-1=48.1%;..." of the reads between two
    read_counts()."""
    got = [y - x for x, y in zip(before, after)]
    tot = float(sum(got))
    if not tot:
        return ""
    names = ["primary"] + ["replica-%d" % k for k in range(1, len(got))]
    return ";".join("%s=%.1f%%" % (n, 100.0 * g / tot)
                    for n, g in zip(names, got))


def lag(sampler, nreplicas, t0, t1):
    """(median lag_bytes, median lag_ms, max lag_ms) over the sampler's
    ticks in [t0, t1], each tick's worst replica (hslab/sampler.py: lag_ms
    is the age of the newest commit a replica applied while it has WAL
    left to replay, else 0); "" when none was measured."""
    series = sampler.series()
    out = []
    for metric in ("lag_bytes", "lag_ms"):
        by_t = {}
        for k in range(1, nreplicas + 1):
            for t, v in series.get("pg-replica-%d" % k, {}).get(metric, []):
                if t0 <= t <= t1:
                    by_t[round(t, 1)] = max(by_t.get(round(t, 1), v), v)
        out.append(sorted(by_t.values()))
    b, ms = out
    return (int(statistics.median(b)) if b else "",
            int(statistics.median(ms)) if ms else "",
            int(ms[-1]) if ms else "")


def db_cpu(before, after, seconds):
    """"postgres=0.25/0.25;pg-replica-1=..." cores used / budget.  Without
    a budget (--db-cpus 0) a cluster's CPU is not measured: only its
    cgroup counts the backends it forks and reaps ("postgres=n/a")."""
    out = []
    for name, u in sorted(after.items()):
        if (name == "postgres" or name.startswith("pg-replica")) and \
                not u.get("cpus"):
            out.append("%s=n/a" % name)
        elif name == "postgres" or name.startswith("pg-replica"):
            used = (u["cpu_s"] - before.get(name, {}).get("cpu_s", 0)) / \
                max(seconds, 1e-9)
            out.append("%s=%.2f/%g" % (name, used, u.get("cpus", 0)))
    return ";".join(out)


def db_limit(before, after, seconds):
    """The database host most throttled by its budget (a fifth of the
    time or more), as the row's limit; None when none is."""
    worst = None
    for name, u in after.items():
        if not (name == "postgres" or name.startswith("pg-replica")):
            continue
        if not u.get("cpus"):
            continue
        b = before.get(name, {})
        thr = (u["throttled_s"] - b.get("throttled_s", 0)) / \
            max(seconds, 1e-9)
        cpu = (u["cpu_s"] - b.get("cpu_s", 0)) / max(seconds, 1e-9)
        if thr >= 0.2 and (worst is None or thr > worst[1]):
            worst = (name, thr, cpu, u["cpus"])
    if worst is None:
        return None
    name, thr, cpu, cpus = worst
    what = "the primary" if name == "postgres" else name
    return ("the database: %s at its %g-core budget (used %.2f, throttled "
            "%.2f s per second)" % (what, cpus, cpu, thr))


def row_fields(a, stk, ryw, share, lagv, cpu):
    b, ms, mx = lagv
    return {"db_cpus": a.db_cpus, "replicas": len(stk.replicas),
            "replica_delay_ms": stk.replica_delay_ms,
            "read_your_writes": ryw or ("on" if stk.replicas else ""),
            "read_share": share, "lag_bytes": b, "lag_ms": ms,
            "lag_ms_max": mx, "db_cpu": cpu}


def describe(r):
    """The lines printed under a step 5 row."""
    lines = []
    if r.get("db_cpu"):
        lines.append("    database CPU (used/budget cores): %s" % r["db_cpu"])
    if r.get("read_share"):
        lines.append("    reads: %s" % r["read_share"])
    if r.get("replicas"):
        lines.append("    replica lag: median %s bytes, %s ms (max %s ms)%s"
                     % (r["lag_bytes"], r["lag_ms"], r["lag_ms_max"],
                        "; replicas apply WAL %d ms late, as a distant or "
                        "busy replica would" % r["replica_delay_ms"]
                        if r["replica_delay_ms"] else ""))
    return lines


def cores(text, prefix):
    """Cores used by the hosts named prefix* in a db_cpu column, summed."""
    tot = 0.0
    for part in str(text or "").split(";"):
        name, _, v = part.partition("=")
        if name.startswith(prefix) and v and v != "n/a":
            tot += float(v.split("/")[0])
    return tot


def headline(by, add):
    """The summary's step 5 lines (add(label, value, detail)): short
    values, the rest in the detail."""
    if "5a" in by and "5b" in by:
        p, r = by["5a"], by["5b"]
        add("read replicas", "%.0f -> %.0f req/s" % (float(p["req_s"]),
                                                     float(r["req_s"])),
            "5a -> 5b, %s replicas; the primary's CPU %.2f -> %.2f cores; "
            "reads %s" % (r["replicas"], cores(p["db_cpu"], "postgres"),
                          cores(r["db_cpu"], "postgres"),
                          r["read_share"].replace(";", ", ")))
    if by.get("5b", {}).get("lag_ms", "") != "":
        r = by["5b"]
        late = by.get("5c/off") or by.get("5c/on")
        add("replica lag", "%s ms" % r["lag_ms"],
            "5b, median under load (max %s ms, %s bytes of WAL)%s" % (
                r["lag_ms_max"], r["lag_bytes"],
                "; 5c: %s ms with replicas %s ms late on purpose" % (
                    late["lag_ms"], late["replica_delay_ms"])
                if late and late.get("lag_ms") != "" else ""))
    if "5c/off" in by and "5c/on" in by:
        o, n = by["5c/off"], by["5c/on"]
        add("stale reads from replicas",
            "%s -> %s" % (o["stale_reads"], n["stale_reads"]),
            "5c, read-your-writes off -> on; replicas %s ms late, %s "
            "servers behind hs-balancer" % (o["replica_delay_ms"],
                                            o["servers"]))
