"""benchlib: what the peer-comparison benchmarks share, on top of hslab.

hslab (this folder) runs the processes, finds the ports, runs wrk and
reads the counters; this module adds what only the benchmarks need:
memcached, hs-server and hs-seed as the benchmarks start them; nginx (a
static `return 200` or a proxy) and HAProxy from configs generated in a
temp dir; the cache sweep; result lines (BENCHJSON), rows and CSV.
install_cleanup() stops every child on exit, SIGINT, SIGTERM and SIGHUP.

Used by loadtest/bench-server, bench-balancer, bench-cache, bench-stack and
bench; each of those keeps only its own contenders, rounds and table.
"""

import csv
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

sys.path.insert(0, HERE)
from hslab import (  # noqa: E402,F401  (one copy of each)
    LabError as BenchError, Proc, cpu_seconds, find_exe, free_port,
    free_ports, goal_met, install_cleanup, median_of, mkdtemp, parse_hsjson,
    parse_wrk_text, ratio, ratio_text, round_order, run_wrk,
    server_counters, start_on_free_port, tail, to_us, wait_connect)
from hslab import procs as _procs  # noqa: E402
from hslab import stats as _stats  # noqa: E402
WRK_DIR = os.path.join(HERE, "wrk")
DEFAULT_BIN = os.environ.get("HS_BIN_DIR") or os.path.join(ROOT, "build",
                                                           "bin")


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- processes

def spawn(args, **kw):
    """hslab.Proc(args, **kw): a child in its own process group, tied to
    this process by PR_SET_PDEATHSIG, recorded for cleanup()."""
    return Proc(args, **kw)


def forget(p):
    p.close()


def stop(p, timeout=10, sig=signal.SIGTERM):
    """sig to the child's process group (its pgid is its own PID), then
    SIGKILL to the group if anything lingers."""
    p.stop(timeout, sig, group=True)


def cleanup():
    _procs.stop_all(5)


def machine_line():
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "?"
    return "machine: %d CPUs, load average %s (shared machine: figures are " \
           "noisy; compare medians of runs taken side by side)" % (
               os.cpu_count() or 0, load)


# --------------------------------------------------------------------- HTTP

def http_get(port, path, timeout=5):
    """(status, body); raises OSError when nothing answers."""
    status, _, body = _procs.http_get(port, path, timeout)
    return status, body


def wait_http(port, path="/", deadline_s=30, proc=None):
    """Waits for a 200 from 127.0.0.1:port/path; returns the body."""
    return _procs.wait_http(port, path, deadline_s, proc)[2]


def product_body_size(port, products):
    """Median size of a few product details served by the stack."""
    sizes = []
    step = max(1, products // 16)
    for pid in range(1, products + 1, step):
        status, body = http_get(port, "/products/%d" % pid)
        if status == 200:
            sizes.append(len(body))
    if not sizes:
        raise BenchError("the stack served no product detail")
    return int(statistics.median(sizes))


def static_body(size):
    """A JSON object of exactly size bytes (at least the braces)."""
    pad = max(0, size - len('{"pad":""}'))
    return '{"pad":"%s"}' % ("x" * pad) if size >= 10 else "x" * size


def stats(port):
    return json.loads(http_get(port, "/stats")[1])


# ------------------------------------------------------ our own processes

def start_memcached(mem_mb, threads):
    """memcached on a free port; (Proc, port)."""
    return _procs.start_memcached(mem_mb=mem_mb, threads=threads,
                                  conns=4096)


def start_server(binary, db, threads, name, extra=()):
    """hs-server on a free port (it reports "listening on HOST:PORT");
    returns (Proc, port) once /healthz answers."""
    logdir = mkdtemp("hs-bench-server-")
    return _procs.start_listening(
        [binary, "--listen", "127.0.0.1:0", "--db", db, "--threads",
         str(threads), "--id", name, "--log-level", "warn"] + list(extra),
        name="hs-server", ready_timeout=60,
        logpath=os.path.join(logdir, "stderr.log"))


def seed(hs_seed, path, scale):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    log("seeding %s at scale %g with hs-seed (once; reused later)..." %
        (path, scale))
    t0 = time.monotonic()
    p = spawn([hs_seed, "--db", path, "--scale", str(scale)],
              stdout=subprocess.DEVNULL)
    rc = p.wait()
    forget(p)
    if rc != 0:
        raise BenchError("hs-seed failed with status %d" % rc)
    log("seeded in %.1f s" % (time.monotonic() - t0))


def seed_counts(scale):
    """(products, categories) that hs-seed creates at this scale."""
    return max(1, round(100000 * scale)), max(1, round(100 * scale))


def db_counts(db):
    """hslab.db_counts, with a BenchError for a database that is missing,
    unreadable or empty."""
    try:
        p, k = _stats.db_counts(db)
    except sqlite3.Error as e:
        raise BenchError("cannot read %s: %s" % (db, e))
    if p < 1 or k < 1:
        raise BenchError("%s has no products or no categories" % db)
    return p, k


# ------------------------------------------------------------ nginx, HAProxy

def _nginx_conf(tmp, name, workers, servers):
    user = "user root;\n" if os.geteuid() == 0 else ""
    t = os.path.join(tmp, name)
    return (
        "# Generated by loadtest/benchlib.py.\n"
        "%sdaemon off;\nmaster_process on;\nworker_processes %d;\n"
        "pid %s.pid;\nerror_log %s.error.log warn;\n"
        "events {\n    worker_connections 8192;\n    multi_accept on;\n}\n"
        "http {\n    access_log off;\n    keepalive_timeout 65s;\n"
        "    keepalive_requests 100000000;\n"
        "    client_body_temp_path %s.body;\n    proxy_temp_path %s.proxy;\n"
        "    fastcgi_temp_path %s.fcgi;\n    uwsgi_temp_path %s.uwsgi;\n"
        "    scgi_temp_path %s.scgi;\n    default_type text/plain;\n%s}\n" %
        (user, workers, t, t, t, t, t, t, t, servers))


def _nginx_string(body):
    """body as an nginx double-quoted string."""
    return '"%s"' % (body.replace("\\", "\\\\").replace('"', '\\"')
                     .replace("$", "${dollar}").replace("\n", "\\n"))


def _start_nginx(name, workers, server_block, check):
    exe = find_exe("nginx")
    if not exe:
        raise BenchError("nginx is not installed (./hammerstack setup --bench "
                         "installs nginx-light)")
    tmp = mkdtemp("hs-bench-%s-" % name)
    conf = os.path.join(tmp, name + ".conf")

    def launch(port):
        with open(conf, "w") as f:
            f.write(_nginx_conf(tmp, name, workers,
                                server_block.replace("@PORT@", str(port))))
        with open(os.path.join(tmp, name + ".stderr"), "ab") as err:
            return spawn([exe, "-p", tmp + "/", "-e", os.path.join(
                tmp, name + ".error.log"), "-c", conf],
                stdout=subprocess.DEVNULL, stderr=err)

    def ready(port, p):
        body = wait_http(port, "/", 10, p)
        if check is not None and body != check:
            raise BenchError("%s answered %r" % (name, body[:80]))

    return start_on_free_port(name, launch, ready,
                              os.path.join(tmp, name + ".error.log"))


def start_nginx_static(body="Hello, World!", workers=1, name="nginx"):
    """nginx answering every path with `return 200 BODY`; (Popen, port)."""
    block = ("    server {\n        listen 127.0.0.1:@PORT@ reuseport;\n"
             "        location / {\n            return 200 %s;\n"
             "        }\n    }\n" % _nginx_string(body))
    if "$" in body:
        block = "    geo $dollar { default \"$\"; }\n" + block
    return _start_nginx(name, workers, block, body.encode())


def start_nginx_proxy(backend_ports, workers=1, name="nginx-proxy"):
    """nginx proxying round robin to the backends over keep-alive
    connections; (Popen, port)."""
    block = ("    upstream be {\n%s        keepalive 128;\n    }\n"
             "    server {\n        listen 127.0.0.1:@PORT@;\n"
             "        location / {\n            proxy_pass http://be;\n"
             "            proxy_http_version 1.1;\n"
             "            proxy_set_header Connection \"\";\n        }\n"
             "    }\n" % "".join("        server 127.0.0.1:%d;\n" % p
                                 for p in backend_ports))
    return _start_nginx(name, workers, block, None)


def start_haproxy(backend_ports, workers=1):
    """HAProxy, round robin over keep-alive connections to the backends
    (http-reuse always, nbthread = workers); (Popen, port)."""
    exe = find_exe("haproxy")
    if not exe:
        raise BenchError("haproxy is not installed")
    tmp = mkdtemp("hs-bench-haproxy-")
    cfg = os.path.join(tmp, "haproxy.cfg")
    errpath = os.path.join(tmp, "haproxy.stderr")

    def launch(port):
        with open(cfg, "w") as f:
            f.write("# Generated by loadtest/benchlib.py.\n"
                    "global\n  nbthread %d\n  maxconn 8000\n\n"
                    "defaults\n  mode http\n  timeout connect 5s\n"
                    "  timeout client 60s\n  timeout server 60s\n"
                    "  option http-keep-alive\n  http-reuse always\n\n"
                    "frontend fe\n  bind 127.0.0.1:%d\n  default_backend be\n"
                    "\nbackend be\n  balance roundrobin\n%s" %
                    (workers, port, "".join(
                        "  server s%d 127.0.0.1:%d\n" % (i, p)
                        for i, p in enumerate(backend_ports))))
        with open(errpath, "ab") as err:
            return spawn([exe, "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                         stderr=err)

    return start_on_free_port("haproxy", launch,
                              lambda port, p: wait_http(port, "/", 15, p),
                              errpath)


# One pass over every key, categories first; each wrk thread takes every
# nth key from its own start.  Passed "products categories threads".
SWEEP_LUA = """\
local counter = 0
function setup(thread)
	thread:set("hs_tid", counter)
	counter = counter + 1
end
local i, nth, products, categories
function init(args)
	products = tonumber(args[1])
	categories = tonumber(args[2])
	nth = tonumber(args[3])
	i = hs_tid or 0
end
function request()
	local k = i % (products + categories)
	i = i + nth
	if k < categories then
		return wrk.format("GET", "/categories/" .. (k + 1) .. "/top")
	end
	return wrk.format("GET", "/products/" .. (k - categories + 1))
end
"""


def cache_fills(ports):
    """Cache fills so far, summed over the hs-server /stats of ports."""
    return sum(stats(p)["cache"]["fills"] for p in ports)


def sweep(port, products, categories, stat_ports, connections=64, threads=1,
          timeout=120.0):
    """Reads every category and product once through port (an hs-server or
    the balancer in front of several); stops wrk (SIGINT) once the servers
    on stat_ports have filled them all into the cache, or after timeout."""
    tmp = mkdtemp("hs-bench-sweep-")
    script = os.path.join(tmp, "sweep.lua")
    with open(script, "w") as f:
        f.write(SWEEP_LUA)
    want = products + categories
    fills0 = cache_fills(stat_ports)
    threads = max(1, threads)
    p = spawn(["wrk", "-t%d" % threads, "-c%d" % connections, "-d3600s",
               "-s", script, "http://127.0.0.1:%d/" % port, "--",
               str(products), str(categories), str(threads)],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    last = 0
    moved, moved_at = -1, t0
    try:
        while True:
            if p.poll() is not None:
                raise BenchError("wrk (sweep) exited with %s" % p.returncode)
            filled = cache_fills(stat_ports) - fills0
            now = time.monotonic()
            if filled >= want:
                log("sweep: every key filled in %.1f s" % (now - t0))
                break
            if filled != moved:
                moved, moved_at = filled, now
            # A pass takes wrk round every key: no new fill for a while
            # means the rest were cached already (read before the sweep).
            if now - t0 > timeout or now - moved_at > 10:
                log("sweep: %d of %d keys filled after %.0f s; going on" %
                    (filled, want, now - t0))
                break
            if filled - last >= want // 10:
                log("sweep: %d of %d keys" % (filled, want))
                last = filled
            time.sleep(0.25)
    finally:
        stop(p, sig=signal.SIGINT)


# ------------------------------------------------------- rounds and results

def fmt_row(r):
    s = "%9.0f req/s  p50 %7.0f us  p99 %7.0f us" % (
        r["rps"], r["p50_us"], r["p99_us"])
    if r.get("errors") or r.get("non2xx"):
        s += "  ERRORS %d non-2xx %d" % (r["errors"], r["non2xx"])
    return s


def result_line(name, **fields):
    """One machine-readable summary line, "BENCHJSON {...}", that
    loadtest/bench parses; fields are numbers, strings or booleans."""
    clean = {}
    for k, v in fields.items():
        if isinstance(v, float) and v != v:
            v = None
        elif isinstance(v, float) and v == float("inf"):
            v = "inf"
        clean[k] = v
    clean["bench"] = name
    log("BENCHJSON " + json.dumps(clean, sort_keys=True))


def parse_result_lines(out):
    """Every BENCHJSON object in a benchmark's output."""
    res = []
    for line in out.splitlines():
        if line.startswith("BENCHJSON "):
            try:
                res.append(json.loads(line[len("BENCHJSON "):]))
            except ValueError:
                pass
    return res


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def check_tools(prog, bin_dir, binaries=(), tools=()):
    """None when everything needed is there, else a one-line message."""
    for exe in binaries:
        if not os.access(os.path.join(bin_dir, exe), os.X_OK):
            return ("%s: %s not found in %s (build first, or --bin DIR)" %
                    (prog, exe, bin_dir))
    for exe in tools:
        if not find_exe(exe):
            return "%s: %s is not installed" % (prog, exe)
    return None
