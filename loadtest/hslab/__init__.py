"""hslab: the one copy of what hammerstack's Python tools share.

  procs    child processes (own process group, PR_SET_PDEATHSIG, a hard
           timeout, killed by recorded PID), free ports, readiness by
           "listening on" lines, by connect or by HTTP, memcached
  wrk      wrk runs and their results (wrk's report or the HSJSON line)
  hsload   hs-load (open-loop) runs: the HSJSON line and hs-load's own CPU
  stats    /stats and memcached `stats`, counters, deltas, medians, ratios
  sampler  per-second series of every component's counters (CSV and the
           last 120 s in memory)
  netns    each component on its own host: network namespaces on a
           private bridge, partition/heal, the watchdog and the sweep
  cgroups  CPU budgets: a process in its own cgroup with a CPU quota
           (v2 cpu.max or v1 cfs quota), its CPU use and throttled time
  dashboard  the live dashboard over a Sampler (HTTP, SSE, data.json)
  report   the walkthrough's report as slides, from its out dir's files
  browser  headless Chromium: screenshots, a page driven over CDP
  pauser   step-through mode: wait for Enter or the dashboard's "next"
(netns, dashboard, report, browser and pauser are imported by name, not
here.)

Used by loadtest/stack.py (./hammerstack up|down|status), benchlib.py and
the bench scripts, walkthrough.py and tests/integration/hstest.py.
Standard library only.
"""

from .procs import (  # noqa: F401
    LabError, Proc, children, cpu_seconds, find_exe, free_port, free_ports,
    http_get, install_cleanup, kill_all, mkdtemp, pid_alive, port_free,
    start_listening, start_memcached, start_on_free_port, stop_all, tail,
    wait_connect, wait_http)
from .wrk import (  # noqa: F401
    WRK_DIR, hsjson, parse_hsjson, parse_wrk_text, run_wrk, run_wrk_cmd,
    to_us, wrk_args)
from .hsload import run_hsload  # noqa: F401
from .stats import (  # noqa: F401
    counters_sum, db_counts, delta, flatten, get_json, goal_met, median_of,
    memcached_stats, ratio, ratio_text, round_order, server_counters)
from . import cgroups  # noqa: F401,E402
from .cgroups import Budgets, Host  # noqa: F401,E402
from .sampler import Sampler  # noqa: F401,E402
