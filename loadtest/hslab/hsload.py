"""hs-load runs (loadtest/hsload, the open-loop generator) and their
results: the "HSJSON {...}" line, plus the CPU hs-load itself used."""

import json
import os
import subprocess
import tempfile
import time

from .procs import LabError, Proc


def run_hsload(exe, url, rate, duration, warmup=1.0, connections=64,
               mix=None, extra=(), timeout=None):
    """One hs-load point: rate req/s offered to url for duration seconds
    after warmup seconds.  Returns its HSJSON object (offered_rps,
    achieved_rps, p50_us..max_us corrected, uncorrected_*, late, errors,
    non2xx...) with four more keys: achieved_share (achieved / offered),
    cpu_s (hs-load's user + system CPU, from its own rusage as it is
    reaped), wall_s (start to exit) and cpu_share (cpu_s / wall_s, the
    share of one core; hs-load is one thread, so near 1.0 means the
    generator, not the target, set the pace).  LabError when hs-load
    fails, hangs or prints no HSJSON line."""
    args = [exe, url, "--rate", "%g" % rate, "--duration", "%g" % duration,
            "--warmup", "%g" % warmup, "--connections", str(connections),
            "--quiet"]
    if mix:
        args += ["--mix", mix]
    args += list(extra)
    if timeout is None:
        # The measured time, the warm-up, the drain (--timeout, 5 s).
        timeout = duration + warmup + 30
    with tempfile.TemporaryFile() as out_f:
        t0 = time.monotonic()
        p = Proc(args, name="hs-load", stdout=out_f,
                 stderr=subprocess.STDOUT)
        # wait4 rather than Popen.wait: the rusage is hs-load's alone,
        # whatever other children the caller reaps meanwhile.
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                p.stop(group=True)
                raise LabError("hs-load did not finish in %.0f s: %s" %
                               (timeout, " ".join(args)))
            time.sleep(0.02)
        wall = time.monotonic() - t0
        p.p.returncode = os.waitstatus_to_exitcode(status)
        p.close()
        out_f.seek(0)
        out = out_f.read().decode("utf-8", "replace")
    j = None
    for line in out.splitlines():
        if line.startswith("HSJSON "):
            j = json.loads(line[len("HSJSON "):])
    if p.p.returncode != 0 or j is None:
        raise LabError("hs-load failed (exit %d): %s\n%s" % (
            p.p.returncode, " ".join(args), out[-2000:]))
    j["achieved_share"] = (j["achieved_rps"] / j["offered_rps"]
                           if j.get("offered_rps") else 0.0)
    j["cpu_s"] = ru.ru_utime + ru.ru_stime
    j["wall_s"] = wall
    j["cpu_share"] = j["cpu_s"] / wall if wall > 0 else 0.0
    return j
