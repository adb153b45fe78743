"""wrk runs and their results: wrk's own report (req/s, --latency
percentiles, socket errors, non-2xx) or the "HSJSON {...}" line that
loadtest/wrk/hslib.lua prints."""

import json
import os
import re
import subprocess

from .procs import LabError, Proc

WRK_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "wrk")

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(text):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    if not m:
        raise LabError("cannot parse wrk latency %r" % text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk_text(out):
    """Requests/sec, p50/p99 (--latency) and errors from wrk's own report
    (used without a Lua script, where no response() hook slows wrk)."""
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise LabError("no Requests/sec in wrk output:\n" + out)
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


def hsjson(out):
    """The whole "HSJSON {...}" object of loadtest/wrk/hslib.lua, or None."""
    for line in out.splitlines():
        if line.startswith("HSJSON "):
            return json.loads(line[7:])
    return None


def parse_hsjson(out):
    """rps, requests, p50_us, p99_us, non2xx, errors of the HSJSON line."""
    j = hsjson(out)
    if j is None:
        raise LabError("no HSJSON line in wrk output:\n" + out)
    return {k: j[k] for k in ("rps", "requests", "p50_us", "p99_us",
                              "non2xx", "errors")}


def wrk_args(port, duration, connections=64, threads=1, path="/",
             script=None, script_args=(), latency=True):
    """The wrk command line; script is a name in loadtest/wrk/ or a path."""
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
    return args


def run_wrk_cmd(args, timeout, out_path=None):
    """Runs wrk (a recorded child, killed after timeout seconds); returns
    its output (stdout and stderr).  out_path: the command and the output
    are written there.  LabError when wrk fails or hangs."""
    p = Proc(args, name="wrk", stdout=subprocess.PIPE,
             stderr=subprocess.STDOUT)
    try:
        out, _ = p.p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.stop(group=True)
        raise LabError("wrk did not finish: %s" % " ".join(args))
    p.close()
    out = out.decode("utf-8", "replace")
    if out_path:
        with open(out_path, "w") as f:
            f.write("$ %s\n%s" % (" ".join(args), out))
    if p.p.returncode != 0:
        raise LabError("wrk failed (exit %d):\n%s" %
                       (p.p.returncode, out[-2000:]))
    return out


def run_wrk(port, duration, connections=64, threads=1, path="/",
            script=None, script_args=(), latency=True, out_path=None):
    """One wrk run against 127.0.0.1:port; returns a dict with rps,
    requests, p50_us, p99_us, errors (socket errors) and non2xx.  With a
    script (a name in loadtest/wrk/ or a path) the HSJSON line is used."""
    args = wrk_args(port, duration, connections, threads, path, script,
                    script_args, latency)
    out = run_wrk_cmd(args, duration * 3 + 60, out_path)
    return parse_hsjson(out) if script else parse_wrk_text(out)
