"""Every component of a stack on its own host: a network namespace per
process, joined by veth pairs to a private bridge in the root namespace,
each with its own address in a private subnet that is routed nowhere else.

Layout (tag = "hs" + the owner's PID, so that stacks never collide):
  bridge  TAG-br        the subnet's first address (the root namespace's
                        own; wrk, hs-load and curl run there)
  host    netns TAG-NAME   eth0 with the next address, lo up, no default
                        route, no forwarding, no NAT: hosts reach each
                        other and the bridge address, nothing else
          veth TAG-CODE  its peer in the root namespace, on the bridge
The processes join their namespace with setns() between fork and exec
(Proc(netns=...)), so their PID is the real one, PR_SET_PDEATHSIG and the
cgroup still hold, and a daemon that drops to nobody before exec
(memcached, PostgreSQL) still gets in; `ip netns exec` could not do that.

partition(NAME) sets the host's root-side veth down: its packets vanish
without an RST or an ICMP error, as behind a pulled cable; heal(NAME)
sets it up again.

Removal, whatever ends the owner:
  - Network.remove() when the stack stops (also on Ctrl-C, a failed start);
  - a watchdog (a process of its own, in its own session, that ignores the
    signals the stack uses) holds a pipe from the owner and removes
    everything when the owner dies, even by SIGKILL (the pipe's EOF);
  - sweep() (run by up, down and status) removes what a record in
    RECORD_DIR names when its owner is gone.
The record is written before anything is made, so a crash half-way is
swept too.  RECORD_DIR is machine-wide (/run, like /run/netns), as
namespaces and links are: a stack started from another checkout is seen.

  python3 -m hslab.netns watchdog RECORD    (started by Network.create())
"""

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time

from .procs import LabError, find_exe

DEFAULT_SUBNET = "10.213.0.0/24"
RECORD_DIR = os.environ.get("HS_NETNS_DIR") or "/run/hammerstack/hosts"
NETNS_DIR = "/run/netns"


class NetnsError(LabError):
    """A namespace, link or address could not be made, or a host is
    unknown."""


def problem():
    """Why --hosts cannot run here (one line), or None."""
    if os.geteuid() != 0:
        return ("--hosts needs root (it creates network namespaces, a "
                "bridge and veth pairs); run it as root, e.g. with sudo")
    if not find_exe("ip"):
        return ("--hosts needs the ip command (Debian: apt-get install "
                "iproute2)")
    return None


def _ip(*args, check=True, netns=None):
    cmd = [find_exe("ip") or "ip"]
    if netns:
        cmd += ["-n", netns]
    r = subprocess.run(cmd + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    if check and r.returncode != 0:
        raise NetnsError("ip %s: %s" % (" ".join(args), r.stderr.strip()))
    return r


def routed_subnets():
    """The IPv4 networks the root namespace routes (not the default)."""
    r = _ip("-j", "-4", "route", "show", "table", "all", check=False)
    out = []
    try:
        routes = json.loads(r.stdout or "[]")
    except ValueError:
        routes = []
    for rt in routes:
        dst = rt.get("dst", "")
        if dst in ("", "default") or rt.get("type") in ("broadcast",
                                                         "local"):
            continue
        try:
            out.append(ipaddress.ip_network(dst, strict=False))
        except ValueError:
            pass
    return out


def check_subnet(text, nhosts):
    """The subnet text as an IPv4Network; NetnsError when it is not a
    private IPv4 subnet, too small for nhosts + the bridge, or routed on
    this machine already (another network, or another stack)."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise NetnsError("--subnet %s: %s" % (text, e))
    if net.version != 4 or not net.is_private or net.is_loopback:
        raise NetnsError("--subnet %s: give a private IPv4 subnet such as "
                         "%s" % (text, DEFAULT_SUBNET))
    if net.num_addresses - 2 < nhosts + 1:
        raise NetnsError("--subnet %s has room for %d addresses, %d are "
                         "needed" % (text, net.num_addresses - 2, nhosts + 1))
    for other in routed_subnets():
        if net.overlaps(other):
            raise NetnsError(
                "--subnet %s overlaps %s, which this machine routes already "
                "(ip route; another stack?): choose another with --subnet"
                % (text, other))
    return net


def short_code(name):
    """balancer -> b, server12 -> s12, memcached3 -> m3, postgres -> pg,
    replica2 -> r2: a link name has 15 characters at most."""
    if name == "postgres":
        return "pg"
    digits = name.lstrip("abcdefghijklmnopqrstuvwxyz")
    return name[0] + digits


def start_time(pid):
    """The process's start time in clock ticks since boot (None: gone),
    which tells a live owner from a reused PID."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def owner_alive(rec):
    return start_time(rec["owner"]) == rec.get("owner_start")


class Network:
    """The hosts of one stack.  Network(["balancer", "server1", ...],
    subnet).create() ... remove().  addr(name) is a host's address."""

    def __init__(self, names, subnet=DEFAULT_SUBNET, owner=None):
        self.owner = owner or os.getpid()
        self.tag = "hs%d" % self.owner
        self.net = check_subnet(subnet, len(names))
        addrs = list(self.net.hosts())
        self.prefixlen = self.net.prefixlen
        self.bridge = self.tag + "-br"
        self.bridge_addr = str(addrs[0])
        self.hosts = {}
        for i, name in enumerate(names):
            self.hosts[name] = {"netns": "%s-%s" % (self.tag, name),
                                "veth": "%s-%s" % (self.tag,
                                                   short_code(name)),
                                "addr": str(addrs[i + 1])}
        self.record = os.path.join(RECORD_DIR, self.tag + ".json")
        self._watch_w = None
        self.watchdog = None

    def addr(self, name):
        return self.hosts[name]["addr"]

    def netns(self, name):
        return self.hosts[name]["netns"]

    def describe(self):
        """What the state file and the sweep need."""
        return {"owner": self.owner, "owner_start": start_time(self.owner),
                "tag": self.tag, "subnet": str(self.net),
                "bridge": self.bridge, "bridge_addr": self.bridge_addr,
                "record": self.record, "hosts": self.hosts}

    def create(self):
        """Writes the record, starts the watchdog, then makes the bridge
        and every host; on failure removes what was made and raises
        NetnsError."""
        os.makedirs(RECORD_DIR, exist_ok=True)
        tmp = self.record + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.describe(), f, indent=1)
        os.rename(tmp, self.record)
        self._start_watchdog()
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", "%s/%d" % (self.bridge_addr, self.prefixlen),
                "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for h in self.hosts.values():
                self._add_host(h)
        except BaseException as e:
            self.remove()
            if isinstance(e, NetnsError):
                raise NetnsError("cannot make the network namespaces: %s"
                                 % e)
            raise

    def _add_host(self, h):
        ns, veth = h["netns"], h["veth"]
        _ip("netns", "add", ns)
        _ip("link", "set", "lo", "up", netns=ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0",
            "netns", ns)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        _ip("addr", "add", "%s/%d" % (h["addr"], self.prefixlen), "dev",
            "eth0", netns=ns)
        _ip("link", "set", "eth0", "up", netns=ns)

    def _start_watchdog(self):
        r, w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))
        # Its own session: a Ctrl-C to the terminal's process group does
        # not reach it; only the pipe's EOF ends it.
        self.watchdog = subprocess.Popen(
            [sys.executable, "-m", "hslab.netns", "watchdog", self.record],
            stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=env)
        os.close(r)
        self._watch_w = w

    def remove(self):
        """Removes every namespace, veth and the bridge (what exists of
        them), the record, and lets the watchdog go."""
        teardown(self.describe())
        if self._watch_w is not None:
            os.close(self._watch_w)
            self._watch_w = None
        if self.watchdog is not None:
            try:
                self.watchdog.wait(30)
            except subprocess.TimeoutExpired:
                pass
            self.watchdog = None


def _kill_pids(netns):
    r = _ip("netns", "pids", netns, check=False)
    for word in r.stdout.split():
        try:
            os.kill(int(word), signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def _link_exists(name):
    return os.path.exists(os.path.join("/sys/class/net", name))


def teardown(rec):
    """Removes what the record rec names: the processes still in its
    namespaces (SIGKILL), the namespaces (their veths go with them), any
    root-side veth left, the bridge, the record file.  Quiet about what
    is already gone."""
    hosts = rec.get("hosts", {})
    for h in hosts.values():
        if os.path.exists(os.path.join(NETNS_DIR, h["netns"])):
            _kill_pids(h["netns"])
            _ip("netns", "del", h["netns"], check=False)
    # A namespace is freed (and its veth pair with it) once its last
    # process has exited; a veth left is removed by hand.
    deadline = time.monotonic() + 5
    for h in hosts.values():
        while _link_exists(h["veth"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _link_exists(h["veth"]):
            _ip("link", "del", h["veth"], check=False)
    if rec.get("bridge") and _link_exists(rec["bridge"]):
        _ip("link", "del", rec["bridge"], check=False)
    if rec.get("record"):
        try:
            os.unlink(rec["record"])
        except OSError:
            pass


def records():
    """Every record in RECORD_DIR, as dicts."""
    out = []
    try:
        names = sorted(os.listdir(RECORD_DIR))
    except OSError:
        return out
    for n in names:
        if not n.endswith(".json"):
            continue
        path = os.path.join(RECORD_DIR, n)
        try:
            with open(path) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            continue
        rec["record"] = path
        out.append(rec)
    return out


def sweep():
    """Removes the hosts of every stack whose owner is gone; returns the
    tags removed.  Nothing to do for a non-root user (nothing could have
    been made)."""
    if os.geteuid() != 0:
        return []
    gone = []
    for rec in records():
        if not owner_alive(rec):
            teardown(rec)
            gone.append(rec.get("tag"))
    return gone


def host_names(hosts):
    return ", ".join(hosts)


def set_link(rec, name, up):
    """partition (up=False) or heal (up=True) the host name of the record
    rec (a Network.describe()); NetnsError for an unknown name."""
    hosts = rec.get("hosts", {})
    if name not in hosts:
        raise NetnsError("no host '%s' in this stack; its hosts: %s" %
                         (name, host_names(hosts)))
    _ip("link", "set", hosts[name]["veth"], "up" if up else "down")


def partitioned(rec):
    """The names of the hosts whose link is down."""
    out = []
    for name, h in rec.get("hosts", {}).items():
        try:
            with open("/sys/class/net/%s/flags" % h["veth"]) as f:
                if not int(f.read(), 16) & 1:   # IFF_UP
                    out.append(name)
        except (OSError, ValueError):
            pass
    return out


def _watchdog(record):
    """Waits for EOF on stdin (the owner has ended, however), then removes
    what the record names."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            if not os.read(0, 4096):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    try:
        with open(record) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return 0     # removed by its owner already
    rec["record"] = record
    teardown(rec)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "watchdog":
        sys.exit(_watchdog(sys.argv[2]))
    sys.stderr.write("usage: python3 -m hslab.netns watchdog RECORD\n")
    sys.exit(2)
