"""CPU budgets: a process in its own cgroup with a CPU quota, like a small
VM of that many cores.

cgroup v2 (cpu.max) where a v2 hierarchy with the cpu controller is
usable, cgroup v1 (cpu.cfs_quota_us / cpu.cfs_period_us, and cpuacct for
the CPU used, wherever that controller is mounted) otherwise.  A stack's
cgroups are named after it, hammerstack-PID.N/NAME (PID the process that
made them, N a count within it), so that several stacks never collide.

Removal: Budgets.remove() when the stack stops (also on Ctrl-C).  When the
owner is killed with SIGKILL its children die by PR_SET_PDEATHSIG, and
the empty cgroups it leaves are removed by sweep(), which every new
Budgets (./hammerstack up, each walkthrough stack) and `down` and
`status` run: hammerstack-* cgroups whose owner PID is no longer alive.

When no cgroup is writable (not root, no cpu controller), warn() says so
once per process and the processes run without budgets;
Budgets.problem keeps the reason for reports.

HS_CGROUP_ROOT (for tests only) replaces the hierarchies found in
/proc/mounts with that one folder.
"""

import os
import re
import sys
import time

from .procs import pid_alive

PERIOD_US = 100000
MIN_CPUS = 0.01          # the kernel's smallest quota is 1 ms a period
NAME_RX = re.compile(r"^hammerstack-(\d+)\.\d+$")

_warned = []
_seq = [0]


def _mounts():
    """[(type, mount point, options)] of the cgroup file systems."""
    out = []
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                    out.append((parts[2], parts[1],
                                set(parts[3].split(","))))
    except OSError:
        pass
    return out


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _stat(path):
    """A cgroup's "key value" file as a dict of ints."""
    out = {}
    for line in _read(path).splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def _probe(base):
    """True when a child cgroup can be made and removed under base."""
    d = os.path.join(base, "hammerstack-probe-%d" % os.getpid())
    try:
        os.mkdir(d)
    except OSError:
        return False
    try:
        os.rmdir(d)
    except OSError:
        pass
    return True


def find_hierarchy(mounts=None):
    """(kind, cpu base, cpuacct base or None, problem): kind "v2" or "v1",
    or None with problem saying why there is no usable hierarchy.  v2 wins
    where a cgroup2 hierarchy has the cpu controller and is writable; else
    v1's cpu hierarchy (cpuacct for the CPU used, wherever mounted).
    mounts: [(fs type, mount point, options)] in place of /proc/mounts
    (tests)."""
    root = os.environ.get("HS_CGROUP_ROOT")
    if mounts is not None:
        cands = mounts
    elif root:
        if os.path.exists(os.path.join(root, "cgroup.controllers")):
            cands = [("cgroup2", root, set())]
        else:
            cands = [("cgroup", root, {"cpu", "cpuacct"})]
    else:
        cands = _mounts()
    why = []
    for kind, path, opts in cands:
        if kind != "cgroup2":
            continue
        if "cpu" not in _read(os.path.join(path, "cgroup.controllers")).split():
            why.append("the cgroup v2 hierarchy at %s has no cpu controller"
                       % path)
            continue
        try:
            if "cpu" not in _read(os.path.join(
                    path, "cgroup.subtree_control")).split():
                _write(os.path.join(path, "cgroup.subtree_control"), "+cpu")
        except OSError as e:
            why.append("cannot enable cpu in %s: %s" % (path, e.strerror))
            continue
        if _probe(path):
            return "v2", path, None, None
        why.append("%s is not writable" % path)
    cpu = [p for k, p, o in cands if k == "cgroup" and "cpu" in o]
    acct = [p for k, p, o in cands if k == "cgroup" and "cpuacct" in o]
    if cpu:
        if not os.path.isdir(cpu[0]):
            why.append("%s does not exist" % cpu[0])
        elif _probe(cpu[0]):
            return "v1", cpu[0], (acct[0] if acct else None), None
        else:
            why.append("%s is not writable%s" % (
                cpu[0], "" if os.geteuid() == 0 else " (not root)"))
    elif not why:
        why.append("no cgroup cpu controller is mounted")
    return None, None, None, "; ".join(why)


def warn(problem, out=None):
    """Says once per process that there are no CPU budgets, and why."""
    if _warned:
        return
    _warned.append(problem)
    (out or sys.stderr).write(
        "hammerstack: WARNING: no CPU budgets: %s; every process runs "
        "without a CPU limit\n" % problem)
    (out or sys.stderr).flush()


def _rmtree_cgroup(path, wait=2.0):
    """Removes a cgroup and its children (empty ones: their processes are
    gone or going); retries briefly while the last ones exit."""
    deadline = time.monotonic() + wait
    while True:
        try:
            for name in os.listdir(path):
                sub = os.path.join(path, name)
                if os.path.isdir(sub):
                    _rmtree_cgroup(sub, 0)
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def sweep():
    """Removes the hammerstack-* cgroups whose owner is no longer alive;
    returns the paths removed."""
    kind, cpu, acct, _ = find_hierarchy()
    gone = []
    for base in (cpu, acct):
        if not base:
            continue
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            m = NAME_RX.match(name)
            if m and not pid_alive(int(m.group(1))):
                path = os.path.join(base, name)
                if _rmtree_cgroup(path):
                    gone.append(path)
    return gone


class Host:
    """One process's cgroup: its budget, where to join, its counters."""

    def __init__(self, kind, cpu_dir, acct_dir=None, cpus=0, create=False):
        """create: make the cgroup(s) and set the quota of cpus cores;
        else describe existing ones (e.g. from a stack's state file)."""
        self.name = os.path.basename(cpu_dir)
        self.kind, self.cpus = kind, cpus
        self.cpu_dir, self.acct_dir = cpu_dir, acct_dir
        self.dirs = [d for d in (cpu_dir, acct_dir) if d]
        if not create:
            return
        for d in self.dirs:
            os.mkdir(d)
        quota = int(round(cpus * PERIOD_US))
        if self.kind == "v2":
            _write(os.path.join(self.cpu_dir, "cpu.max"),
                   "%d %d" % (quota, PERIOD_US))
        else:
            _write(os.path.join(self.cpu_dir, "cpu.cfs_period_us"),
                   str(PERIOD_US))
            _write(os.path.join(self.cpu_dir, "cpu.cfs_quota_us"), str(quota))

    def procs_files(self):
        """The files the child writes its PID into before it execs."""
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def state(self):
        """What Host(**state) needs to read this cgroup again."""
        return {"kind": self.kind, "cpu_dir": self.cpu_dir,
                "acct_dir": self.acct_dir, "cpus": self.cpus}

    def pids(self):
        return [int(x) for x in
                _read(os.path.join(self.cpu_dir, "cgroup.procs")).split()]

    def quota(self):
        """(quota_us, period_us) as the kernel has it; quota -1: none."""
        if self.kind == "v2":
            q, p = (_read(os.path.join(self.cpu_dir, "cpu.max")).split()
                    + ["max", "100000"])[:2]
            return (-1 if q == "max" else int(q)), int(p)
        return (int(_read(os.path.join(self.cpu_dir, "cpu.cfs_quota_us"))),
                int(_read(os.path.join(self.cpu_dir, "cpu.cfs_period_us"))))

    def usage(self):
        """{"cpu_s": CPU seconds used, "throttled_s": seconds throttled,
        "nr_throttled": periods throttled, "nr_periods": periods}."""
        st = _stat(os.path.join(self.cpu_dir, "cpu.stat"))
        if self.kind == "v2":
            return {"cpu_s": st.get("usage_usec", 0) / 1e6,
                    "throttled_s": st.get("throttled_usec", 0) / 1e6,
                    "nr_throttled": st.get("nr_throttled", 0),
                    "nr_periods": st.get("nr_periods", 0)}
        used = 0
        if self.acct_dir:
            try:
                used = int(_read(os.path.join(self.acct_dir,
                                              "cpuacct.usage")) or 0)
            except ValueError:
                used = 0
        return {"cpu_s": used / 1e9,
                "throttled_s": st.get("throttled_time", 0) / 1e9,
                "nr_throttled": st.get("nr_throttled", 0),
                "nr_periods": st.get("nr_periods", 0)}


class Budgets:
    """The cgroups of one stack.  host(name, cpus) makes one (None for
    cpus 0 or without a usable hierarchy: then warn() has said so once);
    remove() removes them all.  kind: "v2", "v1" or None; problem: why
    there are no budgets (None when there are, or none were asked for)."""

    def __init__(self):
        self.kind = None
        self.problem = None
        self.hosts = {}
        self.cpu_dir = self.acct_dir = None
        self._tried = False

    def _setup(self):
        self._tried = True
        sweep()
        kind, cpu, acct, problem = find_hierarchy()
        if not kind:
            self.problem = problem
            warn(problem)
            return
        _seq[0] += 1
        name = "hammerstack-%d.%d" % (os.getpid(), _seq[0])
        try:
            self.cpu_dir = os.path.join(cpu, name)
            os.mkdir(self.cpu_dir)
            if kind == "v2":
                _write(os.path.join(self.cpu_dir, "cgroup.subtree_control"),
                       "+cpu")
            if acct:
                self.acct_dir = os.path.join(acct, name)
                os.mkdir(self.acct_dir)
        except OSError as e:
            self.problem = "cannot make %s: %s" % (name, e.strerror)
            self.remove()
            warn(self.problem)
            return
        self.kind = kind

    def host(self, name, cpus):
        if not cpus:
            return None
        if not self._tried:
            self._setup()
        if not self.kind:
            return None
        try:
            h = Host(self.kind, os.path.join(self.cpu_dir, name),
                     (os.path.join(self.acct_dir, name)
                      if self.acct_dir else None), cpus, create=True)
        except OSError as e:
            self.problem = "cannot make the cgroup of %s: %s" % (
                name, e.strerror)
            warn(self.problem)
            return None
        self.hosts[name] = h
        return h

    def remove(self):
        """Removes every cgroup of this stack (its processes have ended)."""
        for d in (self.cpu_dir, self.acct_dir):
            if d:
                _rmtree_cgroup(d)
        self.hosts = {}
        self.cpu_dir = self.acct_dir = None

    def describe(self):
        """One line: what kind of budgets these are, or why none."""
        if self.problem:
            return "no CPU budgets: " + self.problem
        if self.kind:
            return "CPU budgets in cgroup %s (%s)" % (self.kind, self.cpu_dir)
        return "no CPU budgets asked for"
