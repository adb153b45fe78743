"""The walkthrough's report as slides, built from the files of its out dir.

  write_report(outdir, rows, lessons, extra, meta)
      what the walkthrough calls after each step: results.csv, results.md,
      report-meta.json (lessons, meta, the step 3 breakdown), then build()
  build(outdir)
      report.html from whatever of these files exist: summary.json
      (headline), results.csv, sweeps.csv, series.csv, events.csv,
      report-meta.json, flamegraph.svg.  A missing file or column drops
      its chart (or says "not run"), never the report.

report.html: one slide per screen (1280x720), the headline numbers first,
then one chart per slide drawn by Chart.js (copied beside the report from
the local disk: it opens with no network), axes and units on every chart.
Each chart is also written beside it as charts/ID.svg (drawn here, with
the same axes and units) and charts/ID.png (the slide rendered by headless
Chromium, when installed).

Runnable: python3 loadtest/report.py OUTDIR
"""

import csv
import html
import json
import math
import os
import shutil
import sys

from . import browser
from .dashboard import chartjs_path

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(os.path.dirname(HERE), "dashboard")

PALETTE = ["#1f6fd1", "#e8710a", "#1e9e52", "#c2185b", "#7b4fd6",
           "#b8860b", "#00838f", "#d32f2f"]

MAIN_COLUMNS = [("step", "step"), ("setup", "setup"), ("req_s", "req/s"),
                ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                ("errors", "errors"), ("db_queries_s", "DB queries/s"),
                ("cache_hit_pct", "cache hit %"),
                ("stale_reads", "stale reads")]


# ------------------------------------------------------------- reading

def _num(v):
    """float(v), or None for "", "n/a" and the like."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _read_csv(path):
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _col(rows, *names):
    """The first of names that the rows have (a column's spelling may
    differ between runs), or None."""
    have = set()
    for r in rows:
        have.update(k for k, v in r.items() if v not in (None, ""))
    for n in names:
        if n in have:
            return n
    return None


def _truthy(v):
    return str(v).strip().lower() in ("1", "true", "yes", "y")


def _compared(rows):
    """The rows a throughput comparison may show: not 1b, nor any row
    marked correctness_only (a correctness demonstration)."""
    return [r for r in rows if r.get("step") != "1b" and
            not _truthy(r.get("correctness_only", ""))]


def _label(r):
    s = r.get("step", "?")
    srv = _num(r.get("servers"))
    if s.startswith("2") and not s.startswith("2b") and srv:
        return "%s (%d srv)" % (s, srv) if "srv" not in s else s
    return s


# ------------------------------------------------------------- charts
#
# A chart is a dict both renderers read (the page's Chart.js and svg()):
#   id, title, kind ("bar" | "line"), note
#   x: {"title", "labels": [...]} (categories) or {"title"} (numbers)
#   y: {"title", "log": bool}, y2 (optional): {"title"}
#   datasets: [{"label", "data": [v, ...] or [[x, y], ...], "axis":
#              "y" | "y2", "dash": bool, "color", "kind": "bar"|"line"}]

def charts_from(outdir, rows, sweeps, series, events, meta):
    out = []
    cmp_rows = _compared(rows)

    if cmp_rows and _col(cmp_rows, "req_s"):
        out.append({
            "id": "throughput", "title": "Throughput per step", "kind": "bar",
            "x": {"title": "step", "labels": [_label(r) for r in cmp_rows]},
            "y": {"title": "requests per second (req/s)"},
            "datasets": [{"label": "req/s", "data": [
                _num(r.get("req_s")) for r in cmp_rows]}],
            "note": "step 1b (the naive cache) is a correctness "
                    "demonstration and is left out"})

    if cmp_rows:
        per = _col(cmp_rows, "db_queries_per_req", "db_per_req",
                   "db_queries_per_request", "db_q_per_req")
        if per:
            q = [_num(r.get(per)) for r in cmp_rows]
        else:
            q = [(_num(r.get("db_queries_s")) / _num(r.get("req_s")))
                 if _num(r.get("db_queries_s")) is not None and
                 _num(r.get("req_s")) else None for r in cmp_rows]
        share = _col(cmp_rows, "db_time_share_pct", "db_time_share",
                     "db_share_pct", "db_time_pct")
        ds = [{"label": "DB queries per request", "data": q}]
        y2 = None
        if share:
            vals = [_num(r.get(share)) for r in cmp_rows]
            if vals and max(v or 0 for v in vals) <= 1.0 and \
                    not share.endswith("pct"):
                vals = [None if v is None else 100 * v for v in vals]
            ds.append({"label": "DB time share (%)", "data": vals,
                       "axis": "y2"})
            y2 = {"title": "share of request time in the DB (%)"}
        if any(v is not None for v in q):
            c = {"id": "db", "title": "Database work per request",
                 "kind": "bar",
                 "x": {"title": "step",
                       "labels": [_label(r) for r in cmp_rows]},
                 "y": {"title": "DB queries per request"},
                 "datasets": ds}
            if y2:
                c["y2"] = y2
            out.append(c)

    if cmp_rows and _col(cmp_rows, "p99_ms"):
        out.append({
            "id": "p99", "title": "p99 latency per step", "kind": "bar",
            "x": {"title": "step", "labels": [_label(r) for r in cmp_rows]},
            "y": {"title": "p99 latency (ms)"},
            "datasets": [{"label": "p99 (ms)", "data": [
                _num(r.get("p99_ms")) for r in cmp_rows]}]})

    scale = sorted(((_num(r.get("servers")), _num(r.get("req_s")))
                    for r in rows if str(r.get("step", "")).startswith("2")
                    and not str(r.get("step", "")).startswith("2b")
                    and _num(r.get("servers")) and _num(r.get("req_s"))))
    if len(scale) >= 2:
        n0, r0 = scale[0]
        out.append({
            "id": "scaleout", "title": "Scale-out: servers vs throughput",
            "kind": "line",
            "x": {"title": "hs-server processes behind the balancer",
                  "integer": True},
            "y": {"title": "requests per second (req/s)"},
            "datasets": [
                {"label": "measured", "data": [[n, r] for n, r in scale]},
                {"label": "ideal (linear from %d)" % n0, "dash": True,
                 "data": [[n, r0 * n / n0] for n, _ in scale]}],
            "note": "x%.1f with %d servers" % (
                scale[-1][1] / r0 if r0 else 0, scale[-1][0])})

    if sweeps:
        by = {}
        for s in sweeps:
            x, y = _num(s.get("offered_rps")), _num(s.get("p99_us"))
            if x is not None and y is not None and y > 0:
                by.setdefault(s.get("step", "?"), []).append(
                    [x, y / 1000.0])
        if by:
            ds = [{"label": "step %s" % k, "data": sorted(v)}
                  for k, v in by.items()]
            ys = [p[1] for d in ds for p in d["data"]]
            lo, hi = min(ys), max(ys)
            xs = [p[0] for d in ds for p in d["data"]]
            slo = None
            for r in rows:
                slo = slo or _num(r.get("slo_ms"))
            slo = slo or _num((meta or {}).get("slo_ms"))
            if slo:
                ds.append({"label": "SLO %g ms" % slo, "dash": True,
                           "color": "#d32f2f",
                           "data": [[min(xs), slo], [max(xs), slo]]})
                lo, hi = min(lo, slo), max(hi, slo)
            for i, (k, _) in enumerate(by.items()):
                cap = None
                for r in rows:
                    if r.get("step") == k:
                        cap = _num(r.get("capacity_rps"))
                if cap:
                    ds.append({"label": "capacity %s: %s req/s" % (
                        k, _fmt(cap)), "dash": True,
                        "color": PALETTE[i % len(PALETTE)],
                        "data": [[cap, lo], [cap, hi]]})
            out.append({
                "id": "latency-load", "title": "p99 vs offered load",
                "kind": "line",
                "x": {"title": "offered load (req/s, open loop)"},
                "y": {"title": "p99 latency (ms, log)", "log": True},
                "datasets": ds,
                "note": "capacity: the highest offered load whose p99 "
                        "stays under the SLO"})

    # The checker's progress lines (component "checker" in series.csv):
    # its running count of stale reads against its seconds of load.
    chk = {}
    for s in series:
        if s.get("component") == "checker" and s.get("metric") in (
                "elapsed_s", "stale_reads"):
            t, v = _num(s.get("time")), _num(s.get("value"))
            if t is not None and v is not None:
                chk.setdefault(s.get("step") or "?", {}).setdefault(
                    t, {})[s["metric"]] = v
    ds = []
    for step, pts in chk.items():
        data = [[round(p["elapsed_s"], 1), p["stale_reads"]]
                for _, p in sorted(pts.items())
                if "elapsed_s" in p and "stale_reads" in p]
        if data:
            # Nothing is stale before the first read.
            ds.append({"label": "step %s" % step, "data": [[0, 0]] + data})
    if ds:
        out.append({
            "id": "stale", "title": "Stale reads while the checker runs",
            "kind": "line", "x": {"title": "seconds of load (s)"},
            "y": {"title": "stale reads (running total)"},
            "datasets": ds,
            "note": "hs-checker beside the load, once a second: reads that "
                    "started after an update was acknowledged and still "
                    "returned an older version"})

    out += _db_charts(rows, series, events)

    loss = [s for s in series if s.get("step") == "4"]
    if loss:
        t0 = min(_num(s["time"]) or 0 for s in loss)
        agg = {}
        for s in loss:
            t, v = _num(s.get("time")), _num(s.get("value"))
            if t is None or v is None:
                continue
            sec = round(t - t0)
            comp, m = s.get("component", ""), s.get("metric", "")
            a = agg.setdefault(sec, {})
            if comp == "hs-balancer" and m == "requests/s":
                a["bal"] = a.get("bal", 0) + v
            elif comp.startswith("hs-server"):
                if m == "requests/s":
                    a["srv"] = a.get("srv", 0) + v
                elif m == "db.queries/s":
                    a["db"] = a.get("db", 0) + v
                elif m == "cache.hits/s":
                    a["hits"] = a.get("hits", 0) + v
                elif m == "cache.misses/s":
                    a["miss"] = a.get("miss", 0) + v
        secs = sorted(agg)
        rps = [[t, agg[t].get("bal", agg[t].get("srv"))] for t in secs
               if "bal" in agg[t] or "srv" in agg[t]]
        dbq = [[t, agg[t]["db"]] for t in secs if "db" in agg[t]]
        hit = [[t, 100.0 * agg[t].get("hits", 0) /
                (agg[t].get("hits", 0) + agg[t].get("miss", 0))]
               for t in secs if agg[t].get("hits", 0) +
               agg[t].get("miss", 0) > 0]
        ds = [{"label": "req/s", "data": rps},
              {"label": "DB queries/s", "data": dbq},
              {"label": "cache hit %", "data": hit, "axis": "y2"}]
        top = max([p[1] for p in rps + dbq] + [1])
        for i, e in enumerate(x for x in events if x.get("step") == "4"):
            t = _num(e.get("time"))
            if t is None:
                continue
            ds.append({"label": "%ds: %s" % (round(t - t0),
                                             e.get("event", "")),
                       "dash": True, "color": PALETTE[(i + 4) % 8],
                       "data": [[round(t - t0), 0], [round(t - t0), top]]})
        if rps or dbq:
            out.append({
                "id": "cache-loss", "title": "Losing the cache (step 4)",
                "kind": "line", "x": {"title": "seconds into the step"},
                "y": {"title": "per second (req/s, queries/s)"},
                "y2": {"title": "cache hit ratio (%)"},
                "datasets": ds})
    return out


def _cores(text, prefix):
    """The cores used of hosts named prefix* in a db_cpu column
    ("postgres=0.25/0.25;pg-replica-1=0.05/0.25"), summed; None if none."""
    tot = None
    for part in str(text or "").split(";"):
        name, _, v = part.partition("=")
        used = _num(v.split("/")[0]) if v else None
        if name.startswith(prefix) and used is not None:
            tot = (tot or 0) + used
    return tot


def _db_charts(rows, series, events):
    """Step 5: throughput and the database hosts' CPU for 5a and 5b; the
    replicas' lag (ms and kB) second by second while each step 5 row's
    load ran (its "load start" / "load end" events)."""
    out = []
    db = [r for r in rows if str(r.get("step", "")) in ("5a", "5b")]
    if db and _col(db, "db_cpu"):
        labels = ["%s: %s" % (r["step"], "primary" if r["step"] == "5a"
                              else "+ %s replicas" % r.get("replicas", "?"))
                  for r in db]
        out.append({
            "id": "replicas", "title": "Read replicas (step 5)",
            "kind": "bar", "x": {"title": "step", "labels": labels},
            "y": {"title": "requests per second (req/s)"},
            "y2": {"title": "database CPU (cores)"},
            "datasets": [
                {"label": "req/s", "data": [_num(r.get("req_s"))
                                            for r in db]},
                {"label": "primary CPU (cores)", "axis": "y2",
                 "data": [_cores(r.get("db_cpu"), "postgres") for r in db]},
                {"label": "replicas CPU (cores)", "axis": "y2",
                 "data": [_cores(r.get("db_cpu"), "pg-replica") or 0
                          for r in db]}],
            "note": "; ".join("%s reads: %s" % (
                r["step"], r["read_share"].replace(";", ", "))
                for r in db if r.get("read_share"))})
    span = {}
    for e in events:
        t = _num(e.get("time"))
        if t is not None and e.get("event") in ("load start", "load end"):
            span.setdefault(e.get("step"), {})[e["event"]] = t
    ms, kb = {}, {}
    for s in series:
        comp, step = s.get("component", ""), s.get("step")
        if not comp.startswith("pg-replica") or step not in span or \
                s.get("metric") not in ("lag_ms", "lag_bytes"):
            continue
        t, v = _num(s.get("time")), _num(s.get("value"))
        sp = span[step]
        if t is None or v is None or not \
                sp.get("load start", 1e18) <= t <= sp.get("load end", 0):
            continue
        sec = round(t - sp["load start"])
        into = ms if s["metric"] == "lag_ms" else kb
        pts = into.setdefault(step, {})
        pts[sec] = max(pts.get(sec, 0), v if into is ms else v / 1024.0)
    ds = []
    for i, step in enumerate(sorted(ms)):
        ds.append({"label": "%s ms" % step, "color": PALETTE[i % 8],
                   "data": sorted([k, v] for k, v in ms[step].items())})
        if kb.get(step):
            ds.append({"label": "%s kB" % step, "axis": "y2", "dash": True,
                       "color": PALETTE[i % 8],
                       "data": sorted([k, v] for k, v in kb[step].items())})
    if ds:
        out.append({
            "id": "replica-lag", "title": "Replica lag under load (step 5)",
            "kind": "line", "x": {"title": "seconds of load (s)"},
            "y": {"title": "lag (ms): age of the newest commit applied"},
            # (0 while a replica has nothing left to replay)
            "y2": {"title": "lag (kB of WAL not yet replayed)"},
            "datasets": ds,
            "note": "the worst replica each second, as the servers measure "
                    "it (/stats db.replicas); 5c's replicas apply WAL %s ms "
                    "late on purpose, as a distant or busy replica would" %
                    next((r.get("replica_delay_ms") for r in rows
                          if str(r.get("step", "")).startswith("5c")), "?")})
    return out


def _fmt(v):
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        return "{:,.0f}".format(v)
    return "%.3g" % v


# ------------------------------------------------------------- SVG

def _ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw),
               default=10 * mag)
    t = math.floor(lo / step) * step
    out = [round(t, 10)]
    while out[-1] < hi - step * 1e-9:     # the last tick covers hi
        t += step
        out.append(round(t, 10))
    return out


def _log_ticks(lo, hi):
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return [10 ** e for e in range(a, b + 1)]


def svg(chart, width=1280, height=720):
    """The chart as a standalone SVG: title, axes with their titles and
    units, ticks, bars or lines, a legend."""
    e = html.escape
    L, R, T, B = 150, 150 if chart.get("y2") else 50, 100, 120
    pw, ph = width - L - R, height - T - B
    ds = chart["datasets"]
    cat = "labels" in chart["x"]
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
         'viewBox="0 0 %d %d" font-family="DejaVu Sans, sans-serif" '
         'font-size="24">' % (width, height, width, height),
         '<rect width="100%" height="100%" fill="#ffffff"/>',
         '<text x="%d" y="40" font-size="32" font-weight="bold" '
         'text-anchor="middle">%s</text>' % (width / 2, e(chart["title"]))]

    def vals(axis):
        v = []
        for d in ds:
            if d.get("axis", "y") != axis:
                continue
            for p in d["data"]:
                y = p[1] if isinstance(p, list) else p
                if y is not None:
                    v.append(y)
        return v

    def scale_for(axis, log=False):
        v = vals(axis)
        if log:
            v = [x for x in v if x > 0] or [1]
            ticks = _log_ticks(min(v), max(v))
            lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])
            if hi == lo:
                hi = lo + 1
            return ticks, (lambda y: T + ph - ph * (
                math.log10(max(y, 1e-12)) - lo) / (hi - lo))
        # Bars get headroom for the value written above them.
        top = max(v + [1]) * (1.12 if chart["kind"] == "bar" else 1)
        ticks = _ticks(min([0] + v), top)
        lo, hi = ticks[0], ticks[-1]
        return ticks, (lambda y: T + ph - ph * (y - lo) / (hi - lo))

    yt, ymap = scale_for("y", chart["y"].get("log"))
    y2t, y2map = scale_for("y2") if chart.get("y2") else ([], None)
    if cat:
        labels = chart["x"]["labels"]
        n = max(len(labels), 1)
        xmap = None
    else:
        xs = [p[0] for d in ds for p in d["data"]] or [0, 1]
        xt = _ticks(min(xs), max(xs))
        if chart["x"].get("integer"):  # counts: no ticks between them
            xt = list(range(int(math.floor(min(xs))),
                            int(math.ceil(max(xs))) + 1))
        xlo, xhi = xt[0], xt[-1]

        def xmap(x):
            return L + pw * (x - xlo) / ((xhi - xlo) or 1)
    # grid and y ticks
    for t in yt:
        y = ymap(t)
        o.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" '
                 'stroke="#dddddd"/>' % (L, L + pw, y, y))
        o.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (
            L - 10, y + 8, _fmt(t)))
    for t in y2t:
        o.append('<text x="%d" y="%.1f">%s</text>' % (
            L + pw + 10, y2map(t) + 8, _fmt(t)))
    o.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>' % (
        L, L + pw, T + ph, T + ph))
    o.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>' % (
        L, L, T, T + ph))
    o.append('<text transform="translate(40,%d) rotate(-90)" '
             'text-anchor="middle">%s</text>' % (T + ph / 2,
                                                  e(chart["y"]["title"])))
    if chart.get("y2"):
        o.append('<text transform="translate(%d,%d) rotate(90)" '
                 'text-anchor="middle">%s</text>' % (
                     width - 30, T + ph / 2, e(chart["y2"]["title"])))
    o.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % (
        L + pw / 2, T + ph + 70, e(chart["x"]["title"])))
    if cat:
        for i, lab in enumerate(labels):
            o.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
                     % (L + pw * (i + 0.5) / n, T + ph + 32, e(str(lab))))
        bars = [d for d in ds]
        bw = pw / n * 0.8 / max(len(bars), 1)
        for j, d in enumerate(bars):
            m = y2map if d.get("axis") == "y2" else ymap
            col = d.get("color") or PALETTE[j % len(PALETTE)]
            for i, v in enumerate(d["data"]):
                if v is None:
                    continue
                x = L + pw * i / n + pw / n * 0.1 + j * bw
                y0, y1 = m(0), m(v)
                o.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" '
                         'fill="%s"/>' % (x, min(y0, y1), bw - 4,
                                          abs(y0 - y1), col))
                o.append('<text x="%.1f" y="%.1f" text-anchor="middle" '
                         'font-size="22">%s</text>' % (
                             x + bw / 2 - 2, min(y0, y1) - 6, _fmt(v)))
    else:
        for t in xt:
            o.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
                     % (xmap(t), T + ph + 32, _fmt(t)))
        for j, d in enumerate(ds):
            m = y2map if d.get("axis") == "y2" else ymap
            col = d.get("color") or PALETTE[j % len(PALETTE)]
            pts = " ".join("%.1f,%.1f" % (xmap(x), m(y))
                           for x, y in d["data"] if y is not None)
            if pts:
                o.append('<polyline points="%s" fill="none" stroke="%s" '
                         'stroke-width="3"%s/>' % (
                             pts, col, ' stroke-dasharray="10,6"'
                             if d.get("dash") else ""))
    # legend, one line under the title
    x = L
    for j, d in enumerate(ds):
        col = d.get("color") or PALETTE[j % len(PALETTE)]
        o.append('<rect x="%d" y="58" width="18" height="18" fill="%s"/>'
                 % (x, col))
        o.append('<text x="%d" y="76">%s</text>' % (x + 24, e(d["label"])))
        x += 44 + 14 * len(d["label"])
    o.append("</svg>")
    return "\n".join(o)


# ------------------------------------------------------------- headline

def headline(rows, summary):
    """[{"label", "value", "detail"}]: summary.json's, else derived from
    the rows (the numbers a speaker says out loud)."""
    h = summary.get("headline") if isinstance(summary, dict) else None
    if h:
        return [x for x in h if isinstance(x, dict)]
    by = {r.get("step"): r for r in rows}
    out = []
    r0, r1 = by.get("0"), by.get("1")
    if r0 and r1 and _num(r0.get("req_s")) and _num(r1.get("req_s")):
        out.append({"label": "with the cache",
                    "value": "%s → %s req/s" % (_fmt(_num(r0["req_s"])),
                                                _fmt(_num(r1["req_s"]))),
                    "detail": "step 0 → step 1"})

    def per(r):
        q, n = _num(r.get("db_queries_s")), _num(r.get("req_s"))
        return q / n if q is not None and n else None
    if r0 and r1 and per(r0) is not None and per(r1) is not None:
        out.append({"label": "DB queries per request",
                    "value": "%.2f → %.2f" % (per(r0), per(r1)),
                    "detail": "step 0 → step 1"})
    stale = [r for r in rows if r.get("step") in ("1", "2", "3")
             and _num(r.get("stale_reads")) is not None]
    if stale:
        out.append({"label": "stale reads with leases",
                    "value": "%d" % sum(_num(r["stale_reads"])
                                        for r in stale),
                    "detail": "steps " + ", ".join(r["step"]
                                                   for r in stale)})
    return out


# ------------------------------------------------------------- HTML

def _table(rows):
    cols = [(k, h) for k, h in MAIN_COLUMNS if _col(rows, k)]
    o = ["<table><tr>" + "".join("<th>%s</th>" % html.escape(h)
                                 for _, h in cols) + "</tr>"]
    for r in rows:
        o.append("<tr>" + "".join("<td>%s</td>" % html.escape(
            str(r.get(k, ""))) for k, _ in cols) + "</tr>")
    o.append("</table>")
    return "\n".join(o)


def render_html(outdir, title, heads, charts, rows, info, chartjs):
    e = html.escape
    meta = info.get("meta", {})
    slides = []
    cards = "".join(
        "<div class='card'><div class='val'>%s</div><div class='lbl'>%s"
        "</div><div class='det' title='%s'>%s</div></div>" % (
            e(str(h.get("value", ""))), e(str(h.get("label", ""))),
            e(str(h.get("detail", ""))), e(str(h.get("detail", ""))))
        for h in heads[:6])
    sub = []
    if meta.get("date"):
        sub.append(meta["date"])
    if meta.get("machine"):
        sub.append(meta["machine"])
    if meta.get("budgets"):
        sub.append("CPU budgets: " + str(meta["budgets"]))
    slides.append("<section class='slide' id='s-headline'><h1>%s</h1>"
                  "<div class='cards'>%s</div><p class='sub'>%s</p>"
                  "</section>" % (e(title), cards or
                                  "<p>No headline numbers yet.</p>",
                                  e(" · ".join(str(s) for s in sub))))
    if rows:
        lessons = info.get("lessons", {})
        li = "".join("<li><b>%s</b> %s: %s</li>" % (
            e(r.get("step", "")), e(r.get("setup", "")),
            e(lessons.get(r.get("step"), ""))) for r in rows
            if lessons.get(r.get("step")))
        slides.append("<section class='slide' id='s-table'><h2>Every step"
                      "</h2>%s<ul class='lessons'>%s</ul></section>" % (
                          _table(rows), li))
    for c in charts:
        cid = c["id"]
        slides.append(
            "<section class='slide chart' id='s-%s' data-chart='%s'>"
            "<div class='holder'><canvas id='c-%s'></canvas>"
            "<div class='fallback'>%s</div></div>"
            "<div class='foot'><span class='note'>%s</span>"
            "<span class='exp'>export: <a href='charts/%s.png' download>"
            "PNG</a> · <a href='charts/%s.svg' download>SVG</a> · "
            "<button data-png='%s'>save as shown</button></span></div>"
            "</section>" % (cid, cid, cid, svg(c),
                            e(c.get("note", "")), cid, cid, cid))
    bd = info.get("breakdown")
    if bd:
        trs = "".join("<tr><td class='l'>%s</td><td>%.3f ms</td></tr>" % (
            e(k), v) for k, v in bd.items())
        slides.append("<section class='slide' id='s-breakdown'><h2>Where "
                      "the time goes (step 3, per request)</h2><table>%s"
                      "</table></section>" % trs)
    summ = _read_json(os.path.join(outdir, "profile.json"))
    if summ:
        slides.append("<section class='slide' id='s-profile'>%s</section>" %
                      profile_summary_html(summ))
    if os.path.exists(os.path.join(outdir, "flamegraph.svg")):
        # The stage-size drawing when the walkthrough wrote one (24 px
        # text, for the back row); "open alone": the laptop-size file.
        flame = "flamegraph-stage.svg" if os.path.exists(os.path.join(
            outdir, "flamegraph-stage.svg")) else "flamegraph.svg"
        slides.append("<section class='slide' id='s-flame'><h2>Flame graph "
                      "(perf; <a href='flamegraph.svg'>open alone</a>)</h2>"
                      "<object class='flame' data='%s' "
                      "type='image/svg+xml'></object></section>" % flame)
    elif info.get("no_graph"):
        slides.append("<section class='slide' id='s-flame'><h2>Flame graph"
                      "</h2><p>None: %s.</p></section>" % e(info["no_graph"]))
    data = json.dumps({"charts": charts}).replace("</", "<\\/")
    return PAGE % {
        "title": e(title), "slides": "\n".join(slides), "data": data,
        "chartjs": "<script src='%s'></script>" % chartjs if chartjs else ""}


PAGE = """<!doctype html>
<html lang="en" data-theme="light"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>%(title)s</title>
<link rel="stylesheet" href="report.css">
</head><body>
%(slides)s
<div class="keys">← → slides · t theme · f full screen</div>
%(chartjs)s
<script id="report-data" type="application/json">%(data)s</script>
<script src="report.js"></script>
</body></html>
"""


# ------------------------------------------------------- the profile

def profile_headline(summ):
    return ("%d samples (%s); %.1f%% without a function "
            "name%s; our code (hs-server, hs-balancer) is the leaf in "
            "%.1f%% and on the stack in %.1f%%." % (
                summ["samples"], summ.get("recorded", "perf"),
                summ["unresolved_pct"],
                (" (" + ", ".join("%s %.1f%%" % tuple(x) for x in
                                  summ["unresolved_by_module"][:3]) + ")")
                if summ["unresolved_by_module"] else "",
                summ["ours_self_pct"], summ["ours_on_stack_pct"]))


def profile_summary_md(summ):
    """The summary as markdown lines (results.md and the console)."""
    md = [profile_headline(summ), "",
          "| function (self time) | module | % of samples |",
          "|---|---|---:|"]
    for sym, mod, p in summ["top"]:
        md.append("| %s | %s | %.1f |" % (sym, mod, p))
    if summ["ours_top"]:
        md += ["", "| our function | module | % total (on the stack) "
               "| % self |", "|---|---|---:|---:|"]
        for sym, mod, p, own in summ["ours_top"]:
            md.append("| %s | %s | %.1f | %.1f |" % (sym, mod, p, own))
    md += ["", "By module (self): " + ", ".join(
        "%s %.1f%%" % tuple(x) for x in summ["modules"][:8]),
        "", "By layer (with the kernel and libc work it asks for): " +
        ", ".join("%s %.1f%%" % tuple(x) for x in summ["layers"]),
        "", "The kernel, by system call: " + (", ".join(
            "%s %.1f%%" % tuple(x) for x in summ["kernel"]) or "no samples"),
        "", "What the profile says: " + summ["next"] + "."]
    return md


def profile_summary_html(summ):
    """The summary as an HTML section (report.html)."""
    e = html.escape
    out = ["<h2>Profile (step 3): the top functions by self time</h2>",
           "<p>%s</p>" % e(profile_headline(summ)),
           "<table><tr><th>function</th><th>module</th><th>% of samples</th>"
           "</tr>"]
    for sym, mod, p in summ["top"]:
        out.append("<tr><td style='text-align:left'>%s</td>"
                   "<td style='text-align:left'>%s</td><td>%.1f</td></tr>" %
                   (e(sym), e(mod), p))
    out.append("</table>")
    if summ["ours_top"]:
        out.append("<table><tr><th>our function</th><th>module</th>"
                   "<th>% total (on the stack)</th><th>% self</th></tr>")
        for sym, mod, p, own in summ["ours_top"]:
            out.append("<tr><td style='text-align:left'>%s</td>"
                       "<td style='text-align:left'>%s</td><td>%.1f</td>"
                       "<td>%.1f</td></tr>" % (e(sym), e(mod), p, own))
        out.append("</table>")
    out.append("<p>By module (self): %s</p>" % e(", ".join(
        "%s %.1f%%" % tuple(x) for x in summ["modules"][:8])))
    out.append("<p>By layer (with the kernel and libc work it asks for): "
               "%s</p>" % e(", ".join("%s %.1f%%" % tuple(x)
                                      for x in summ["layers"])))
    out.append("<p>The kernel, by system call: %s</p>" % e(", ".join(
        "%s %.1f%%" % tuple(x) for x in summ["kernel"]) or "no samples"))
    out.append("<p><b>What the profile says:</b> %s.</p>" % e(summ["next"]))
    return "\n".join(out)


# ------------------------------------------------------------- build

def build(outdir, png=True):
    """report.html and charts/ from the files in outdir; returns the list
    of files written."""
    outdir = os.path.abspath(outdir)
    rows = _read_csv(os.path.join(outdir, "results.csv"))
    sweeps = _read_csv(os.path.join(outdir, "sweeps.csv"))
    series = _read_csv(os.path.join(outdir, "series.csv"))
    events = _read_csv(os.path.join(outdir, "events.csv"))
    summary = _read_json(os.path.join(outdir, "summary.json"))
    info = _read_json(os.path.join(outdir, "report-meta.json"))
    if not info.get("meta") and isinstance(summary.get("meta"), dict):
        info["meta"] = summary["meta"]
    meta = dict(summary.get("meta") or {}, **(info.get("meta") or {}))
    charts = charts_from(outdir, rows, sweeps, series, events, meta)
    written = []
    cdir = os.path.join(outdir, "charts")
    os.makedirs(cdir, exist_ok=True)
    for c in charts:
        p = os.path.join(cdir, c["id"] + ".svg")
        with open(p, "w") as f:
            f.write(svg(c))
        written.append(p)
    src = chartjs_path()
    chartjs = None
    if src:
        shutil.copyfile(src, os.path.join(outdir, "chart.min.js"))
        chartjs = "chart.min.js"
    for n in ("report.css", "report.js"):
        shutil.copyfile(os.path.join(ASSETS, n), os.path.join(outdir, n))
    page = render_html(outdir, "hammerstack walkthrough",
                       headline(rows, summary), charts, rows, info, chartjs)
    out = os.path.join(outdir, "report.html")
    with open(out, "w") as f:
        f.write(page)
    written.append(out)
    if png and charts:
        written += render_pngs(outdir, charts)
    return written


def render_pngs(outdir, charts):
    """charts/ID.png: each chart's slide alone at 1280x720 in headless
    Chromium (one browser for all); [] when it is not installed."""
    if not browser.find_chromium():
        return []
    done = []
    url = "file://" + os.path.join(outdir, "report.html")
    try:
        with browser.Browser(1280, 720) as b:
            for c in charts:
                b.open("%s?only=%s" % (url, c["id"]), settle=0.3)
                p = os.path.join(outdir, "charts", c["id"] + ".png")
                b.screenshot(p)
                done.append(p)
    except OSError as e:
        sys.stderr.write("report: PNG export stopped: %s\n" % e)
    return done


def write_report(outdir, rows, lessons, extra, meta, columns=()):
    """The walkthrough's files after each step, then report.html.
    columns: results.csv's leading columns; any other key of the rows
    follows them, so new columns need no change here."""
    cols = list(columns)
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(os.path.join(outdir, "results.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        wr.writeheader()
        for r in rows:
            wr.writerow(r)
    info = {"lessons": lessons, "meta": meta}
    if extra:
        info["breakdown"] = dict(extra[0])
        info["no_graph"] = extra[2] if not extra[1] else ""
        prof = os.path.join(outdir, "profile.json")
        if len(extra) > 3 and extra[3] and not os.path.exists(prof):
            with open(prof, "w") as f:
                json.dump(extra[3], f, indent=1)
    with open(os.path.join(outdir, "report-meta.json"), "w") as f:
        json.dump(info, f, indent=1)
    _write_md(outdir, rows, lessons, extra, meta)
    build(outdir)


def _write_md(outdir, rows, lessons, extra, meta):
    md = ["# hammerstack walkthrough", ""]
    try:
        md += ["%s — wrk -t%d -c%d, %ds per step, update mix (put %g, "
               "review %g), database of %d products in %d categories" % (
                   meta["date"], meta["wrk_threads"], meta["connections"],
                   meta["duration"], meta["put"], meta["review"],
                   meta["products"], meta["categories"]), ""]
    except (KeyError, TypeError):
        pass
    md += ["Machine: %s" % meta.get("machine", "?"), "",
           "CPU budgets: %s" % meta.get("budgets", "none"), "",
           "| " + " | ".join(h for _, h in MAIN_COLUMNS) + " |",
           "|---|---|" + "---:|" * (len(MAIN_COLUMNS) - 2)]
    for r in rows:
        md.append("| " + " | ".join(str(r.get(k, ""))
                                    for k, _ in MAIN_COLUMNS) + " |")
    md.append("")
    for r in rows:
        md.append("- step %s, %s: %s" % (r.get("step"), r.get("setup"),
                                         lessons.get(r.get("step"), "")))
    if extra:
        md += ["", "## Where the time goes (step 3, per request, ms)", ""]
        md += ["| stage | ms |", "|---|---:|"]
        for k, v in extra[0].items():
            md.append("| %s | %.3f |" % (k.strip(), v))
        md += ["", "Flame graph: %s" % ("flamegraph.svg" if extra[1] else
                                        "none; " + extra[2])]
    summ = _read_json(os.path.join(outdir, "profile.json"))
    if summ:
        md += ["", "## Profile (step 3): the top functions by self time",
               ""] + profile_summary_md(summ)
    md += ["", "Slides: report.html (charts/ holds each chart as PNG and "
           "SVG)"]
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        sys.stderr.write("usage: report.py OUTDIR   (rebuilds OUTDIR/"
                         "report.html and OUTDIR/charts/ from its files)\n")
        return 2
    if not os.path.isdir(argv[0]):
        sys.stderr.write("report: %s is not a directory\n" % argv[0])
        return 2
    for p in build(argv[0]):
        print(p)
    return 0
