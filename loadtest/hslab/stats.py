"""Reading the components' counters (an hs-server's /stats, the balancer's
admin /stats, memcached's `stats` command) and the arithmetic the
benchmarks and the walkthrough share: deltas, medians, ratios."""

import json
import os
import socket
import sqlite3
import statistics

from .procs import http_get


def _addr(port, host):
    """port may be a (host, port) pair: a component on its own host."""
    return port if isinstance(port, tuple) else (host, port)


def get_json(port, path="/stats", timeout=5.0, host="127.0.0.1"):
    """The JSON document at host:port/path (port: a number or a (host,
    port) pair); {} when it does not answer 200 with JSON."""
    host, port = _addr(port, host)
    try:
        status, _, body = http_get(port, path, timeout, host)
        if status == 200:
            return json.loads(body)
    except (OSError, ValueError):
        pass
    return {}


def memcached_stats(port, timeout=2.0, host="127.0.0.1"):
    """memcached's `stats` over its text protocol (port: a number or a
    (host, port) pair): {name: number or string}; {} when it does not
    answer."""
    host, port = _addr(port, host)
    out = {}
    try:
        with socket.create_connection((host, port), timeout) as s:
            s.sendall(b"stats\r\n")
            buf = b""
            while not buf.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError:
        return {}
    for line in buf.decode("ascii", "replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            v = parts[2]
            try:
                v = int(v)
            except ValueError:
                try:
                    v = float(v)
                except ValueError:
                    pass
            out[parts[1]] = v
    return out


def server_counters(st):
    """The counters the benchmarks and the walkthrough read from one
    hs-server /stats document (cache fields 0 without a cache)."""
    db = st.get("db", {})
    cache = st.get("cache") if isinstance(st.get("cache"), dict) else {}
    req_ms = 0.0
    for r in st.get("routes", {}).values():
        lat = r.get("latency", {})
        req_ms += lat.get("count", 0) * lat.get("mean_us", 0) / 1000.0
    return {
        "db_queries": db.get("queries", 0),
        "db_ms": db.get("time_ms", 0.0),
        "hits": cache.get("hits", 0),
        "misses": cache.get("misses", 0),
        "bypasses": cache.get("bypasses", 0),
        "cache_ms": cache.get("time_ms", 0.0),
        "batches": cache.get("batches", 0),
        "batch_keys": cache.get("batch_keys", 0),
        "bq_ms": cache.get("batch_queue_ms", 0.0),
        "rw_ms": cache.get("resume_wait_ms", 0.0),
        "dq_ms": db.get("queue_ms", 0.0),
        "requests": st.get("requests", 0),
        "req_ms": req_ms,
    }


def counters_sum(ports):
    """server_counters summed over the hs-servers on ports."""
    tot = {}
    for port in ports:
        for k, v in server_counters(get_json(port, "/stats")).items():
            tot[k] = tot.get(k, 0) + v
    return tot


def delta(a, b):
    """b - a, key by key (the keys of b)."""
    return {k: b.get(k, 0) - a.get(k, 0) for k in b}


def flatten(doc, prefix=""):
    """{"a": {"b": 1}} -> {"a.b": 1}: the numeric leaves of a JSON
    document (booleans as 0/1; strings and lists left out)."""
    out = {}
    for k, v in doc.items():
        key = prefix + str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, bool):
            out[key] = int(v)
        elif isinstance(v, (int, float)):
            out[key] = v
    return out


def db_counts(path):
    """(products, categories) of a seeded database: the id ranges of the
    read mix (ids run from 1; deleted ones answer 404).  Raises
    sqlite3.Error."""
    con = sqlite3.connect("file:%s?mode=ro" % os.path.abspath(path),
                          uri=True, timeout=30)
    try:
        p = con.execute("SELECT max(id) FROM products").fetchone()[0] or 0
        c = con.execute("SELECT max(id) FROM categories").fetchone()[0] or 0
    finally:
        con.close()
    return p, c


def round_order(names, rnd):
    """The order of the targets in round rnd (1-based): rotated every round
    so that drift on a busy machine hits all of them alike (for two
    targets: flipped every round)."""
    names = list(names)
    k = (rnd - 1) % len(names)
    return names[k:] + names[:k]


def median_of(rows, keys=("rps", "p50_us", "p99_us")):
    """Medians of keys over rows (NaN values left out); errors, non2xx and
    requests summed."""
    m = {}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) == r.get(k)
                and r.get(k) is not None]
        m[k] = statistics.median(vals) if vals else float("nan")
    for k in ("errors", "non2xx", "requests"):
        m[k] = sum(r.get(k, 0) for r in rows)
    return m


def ratio(a, b):
    """a / b; inf when b is 0 and a is not, NaN when both are 0."""
    if b:
        return a / b
    return float("inf") if a else float("nan")


def goal_met(x, goal):
    return x == x and x >= goal


def ratio_text(x, goal, digits=2):
    """"1.23x  (goal >= 1.0x: met)"."""
    if x == float("inf"):
        return "inf  (goal >= %gx: met)" % goal
    return "%.*fx  (goal >= %gx: %s)" % (digits, x, goal,
                                        "met" if goal_met(x, goal)
                                        else "NOT met")
