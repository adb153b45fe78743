"""benchlib: what the peer-comparison benchmarks share.

Children by PID in their own process group with PR_SET_PDEATHSIG (if the
benchmark dies, even by SIGKILL, the kernel stops them too), all stopped on
exit, SIGINT, SIGTERM and SIGHUP; free ports; waiting for HTTP readiness;
memcached, hs-server and hs-seed; nginx (a static `return 200` or a proxy)
and HAProxy from configs generated in a temp dir; wrk with or without a Lua
script and its results (req/s, p50/p99 from --latency or the HSJSON line,
socket errors, non-2xx); CPU seconds of processes from /proc; alternating
round order, medians, ratio/goal lines and CSV.

Used by loadtest/bench-server, bench-balancer, bench-cache, bench-stack and
bench; each of those keeps only its own contenders, rounds and table.
"""

import atexit
import csv
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

sys.path.insert(0, HERE)
from stack import (  # noqa: E402  (one copy of each)
    _preexec, db_counts as _stack_db_counts, free_port, free_ports,
    http_get as _stack_http_get, server_counters)
WRK_DIR = os.path.join(HERE, "wrk")
DEFAULT_BIN = os.environ.get("HS_BIN_DIR") or os.path.join(ROOT, "build",
                                                           "bin")

_children = []      # Popen objects started here, killed on exit by PID
_tmpdirs = []


class BenchError(Exception):
    pass


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- processes

def spawn(args, **kw):
    """Starts a child in its own process group (so that its own children,
    e.g. nginx workers, are signalled with it), tied to this process by
    PR_SET_PDEATHSIG, and records it for cleanup()."""
    p = subprocess.Popen(args, start_new_session=True,
                         stdin=subprocess.DEVNULL,
                         preexec_fn=_preexec(os.getpid(), False), **kw)
    _children.append(p)
    return p


def forget(p):
    if p in _children:
        _children.remove(p)


def stop(p, timeout=10, sig=signal.SIGTERM):
    """sig to the child's process group (its pgid is its own PID), then
    SIGKILL to the group if anything lingers."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)  # stragglers in the group
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    forget(p)


def cleanup():
    for p in list(reversed(_children)):
        stop(p, timeout=5)
    for d in _tmpdirs:
        shutil.rmtree(d, ignore_errors=True)
    _tmpdirs.clear()


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


def install_cleanup():
    """SIGINT/SIGTERM/SIGHUP end the benchmark through SystemExit, so that
    finally blocks and cleanup() run; cleanup() also runs at exit."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    atexit.register(cleanup)


def mkdtemp(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


def tail(path, n=2000):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


def _drain(f):
    for _ in f:
        pass


def find_exe(name):
    """The path of a system tool (also in /usr/sbin, often not in PATH)."""
    exe = shutil.which(name)
    if exe:
        return exe
    for d in ("/usr/sbin", "/usr/bin", "/sbin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def cpu_seconds(*pids):
    """CPU time (user + system) of the processes pids and their direct
    children (nginx workers, HAProxy's master/worker), summed, from one
    pass over /proc.  A process counts once per pid it is or is a child
    of, as when each pid is measured on its own and the results added."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        me, parent = int(d), int(fields[1])
        for pid in pids:
            if me == pid or parent == pid:
                total += (int(fields[11]) + int(fields[12])) / tck
    return total


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
    status, _, body = _stack_http_get(port, path, timeout)
    return status, body


def wait_http(port, path="/", deadline_s=30, proc=None):
    """Waits for a 200 from 127.0.0.1:port/path; returns the body."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError("process exited with status %s" % proc.poll())
        try:
            status, body = http_get(port, path, 2)
            if status == 200:
                return body
            last = status
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise BenchError("127.0.0.1:%d%s not ready: %s" % (port, path, last))


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

def start_on_free_port(name, launch, ready, log=None):
    """Starts a process told which port to listen on: launch(port) returns
    its Popen, ready(port, p) raises BenchError until it answers.  Tries 5
    free ports, since another process may take one between our pick and the
    bind.  Returns (Popen, port); the error quotes the end of log."""
    last = None
    for _ in range(5):
        port = free_port()
        p = launch(port)
        try:
            ready(port, p)
            return p, port
        except BenchError as e:
            stop(p)
            last = e
    raise BenchError("could not start %s: %s%s" % (
        name, last, "\n" + tail(log) if log else ""))


def _wait_connect(port, p, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError("nothing listens on port %d" % port)


def start_memcached(mem_mb, threads):
    exe = find_exe("memcached")
    if not exe:
        raise BenchError("memcached is not installed")
    def launch(port):
        args = [exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                "-m", str(mem_mb), "-t", str(threads), "-c", "4096"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        return spawn(args, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)

    return start_on_free_port("memcached", launch, _wait_connect)


def start_server(binary, db, threads, name, extra=()):
    """hs-server on a free port (it reports "listening on HOST:PORT");
    returns (Popen, port) once /healthz answers."""
    logdir = mkdtemp("hs-bench-server-")
    errpath = os.path.join(logdir, "stderr.log")
    err = open(errpath, "wb")
    p = spawn([binary, "--listen", "127.0.0.1:0", "--db", db,
               "--threads", str(threads), "--id", name,
               "--log-level", "warn"] + list(extra),
              stdout=subprocess.PIPE, stderr=err)
    err.close()
    port = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = p.stdout.readline().decode("utf-8", "replace")
        if not line:
            break
        m = re.search(r"listening on \[?[0-9a-fA-F.:]+?\]?:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        stop(p)
        raise BenchError("hs-server did not report its port:\n" + tail(errpath))
    # Nobody reads stdout from here on; a server that logs there must not
    # block on a full pipe.
    threading.Thread(target=_drain, args=(p.stdout,), daemon=True).start()
    wait_http(port, "/healthz", 60, p)
    return p, port


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
    """stack.db_counts, with a BenchError for a database that is missing,
    unreadable or empty."""
    try:
        p, k = _stack_db_counts(db)
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


# ---------------------------------------------------------------------- wrk

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(text):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    if not m:
        raise BenchError("cannot parse wrk latency %r" % text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk_text(out):
    """Requests/sec, p50/p99 (--latency) and errors from wrk's own report
    (used without a Lua script, where no response() hook slows wrk)."""
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise BenchError("no Requests/sec in wrk output:\n" + out)
    r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    r["requests"] = int(m.group(1)) if m else 0
    for q, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(r"^\s+%s(?:\.0+)?%%\s+(\S+)" % q, out, re.M)
        r[key] = to_us(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                  r"timeout (\d+)", out)
    r["errors"] = sum(int(x) for x in m.groups()) if m else 0
    return r


def parse_hsjson(out):
    """The "HSJSON {...}" line of loadtest/wrk/hslib.lua."""
    for line in out.splitlines():
        if line.startswith("HSJSON "):
            j = json.loads(line[7:])
            return {"rps": j["rps"], "requests": j["requests"],
                    "p50_us": j["p50_us"], "p99_us": j["p99_us"],
                    "non2xx": j["non2xx"], "errors": j["errors"]}
    raise BenchError("no HSJSON line in wrk output:\n" + out)


def run_wrk(port, duration, connections=64, threads=1, path="/",
            script=None, script_args=(), latency=True):
    """One wrk run against 127.0.0.1:port; returns a dict with rps,
    requests, p50_us, p99_us, errors (socket errors) and non2xx.  With a
    script (a name in loadtest/wrk/ or a path) the HSJSON line is used."""
    args = ["wrk", "-t%d" % threads, "-c%d" % connections,
            "-d%gs" % duration]
    if latency:
        args.append("--latency")
    if script:
        if not os.path.isabs(script):
            script = os.path.join(WRK_DIR, script)
        args += ["-s", script]
    args.append("http://127.0.0.1:%d%s" % (port, path))
    if script_args:
        args += ["--"] + list(script_args)
    p = spawn(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=duration * 3 + 60)
    except subprocess.TimeoutExpired:
        stop(p)
        raise BenchError("wrk did not finish: %s" % " ".join(args))
    forget(p)
    out = out.decode("utf-8", "replace")
    if p.returncode != 0:
        raise BenchError("wrk failed (%d):\n%s" % (p.returncode, out))
    return parse_hsjson(out) if script else parse_wrk_text(out)


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


def fmt_row(r):
    s = "%9.0f req/s  p50 %7.0f us  p99 %7.0f us" % (
        r["rps"], r["p50_us"], r["p99_us"])
    if r.get("errors") or r.get("non2xx"):
        s += "  ERRORS %d non-2xx %d" % (r["errors"], r["non2xx"])
    return s


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
