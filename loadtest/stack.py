#!/usr/bin/env python3
"""Runs the hammerstack stack on loopback: memcached, N hs-server processes
and hs-balancer, each healthy before the next step, all stopped together.

Every child runs in its own process group with PR_SET_PDEATHSIG, so that if
the supervising process dies (even by SIGKILL) the kernel stops them too: no
orphan keeps a port.  `up --detach` leaves the supervisor in the background
and records it in run/stack.json for `down` and `status`.

--server-cpus, --cache-cpus and --balancer-cpus give each such process a
CPU budget: its own cgroup with that quota (hslab/cgroups.py); as a
library, Stack(db_cpus=F) gives the local PostgreSQL primary and each
replica one too (the walkthrough's step 5).  They are
removed when the stack stops; those of a supervisor killed with SIGKILL
are swept by the next up, down or status.

--hosts puts every child on its own "host": a network namespace with its
own address on a private bridge (hslab/netns.py); `partition HOST` and
`heal HOST` cut one off and bring it back.

Used by `./hammerstack up|down|status|partition|heal` and, as a library, by
the walkthrough.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hslab import (  # noqa: E402,F401  (one copy of each)
    LabError, Proc, children, cpu_seconds, db_counts, free_port, free_ports,
    http_get, pid_alive, port_free, server_counters, start_memcached,
    wait_connect, wait_http)
from hslab import cgroups  # noqa: E402
from hslab import netns  # noqa: E402
from hslab.sampler import Sampler  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("HS_BIN_DIR") or os.path.join(ROOT, "build", "bin")
RUN_DIR = os.environ.get("HS_RUN_DIR") or os.path.join(ROOT, "run")
DEFAULT_DB = os.path.join(ROOT, "data", "hammerstack.db")
# --db postgres: a local PostgreSQL cluster, a child of the stack.
DEFAULT_PG_DIR = os.path.join(ROOT, "data", "pg")
# Its settings: durable (fsync on), sized for a laptop; wal_level minimal
# (hslab.pg's default) as no replica streams from it.
# TCP keepalives: a session whose client vanished in a network partition
# (up --hosts, partition) is ended within about 25 s, not two hours.
PG_SETTINGS = {"fsync": "on", "full_page_writes": "on",
               "shared_buffers": "128MB", "max_connections": "300",
               "tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5",
               "tcp_keepalives_count": "3"}


def is_pg_url(db):
    return db.startswith(("postgres://", "postgresql://"))

StackError = LabError


class CliParser(argparse.ArgumentParser):
    """argparse with the error first: one line naming the command, then a
    one-line hint, exit status 2 (argparse prints the whole usage first)."""

    def error(self, message):
        cmd = ("./" + self.prog) if self.prog.startswith("hammerstack") \
            else self.prog
        self.exit(2, "%s: %s\nRun %s --help for the options.\n" %
                  (self.prog, message, cmd))


def add_check_args(ap):
    """--check-args: check the options, then exit 0 without doing
    anything; ./hammerstack runs it before installing or building."""
    ap.add_argument("--check-args", action="store_true",
                    help=argparse.SUPPRESS)


def log(msg):
    sys.stderr.write("stack: %s\n" % msg)
    sys.stderr.flush()


class Stack:
    """memcached x M, hs-server x N, hs-balancer; ports given or defaults."""

    def __init__(self, servers=2, cache="lease", memcached=1, balancer=True,
                 db=DEFAULT_DB, scale=1.0, balancer_port=8080,
                 server_port=8081, admin_port=8090, memcached_port=21211,
                 logdir=None, server_args=(), balancer_args=(),
                 threads=None, server_ports=None, memcached_ports=None,
                 db_threads=None, server_cpus=0.0, cache_cpus=0.0,
                 balancer_cpus=0.0, pg_dir=None, replicas=0, db_cpus=0.0,
                 replica_delay_ms=0, hosts=False,
                 subnet=netns.DEFAULT_SUBNET):
        if servers < 1:
            raise StackError("--servers must be at least 1")
        if cache not in ("lease", "naive", "off"):
            raise StackError("--cache must be lease, naive or off")
        self.nservers = servers
        self.cache = cache
        # With --cache off, memcached still runs for servers that read
        # from replicas: it holds their read-your-writes markers.
        self.nmemcached = memcached if cache != "off" or (
            replicas and db == "postgres") else 0
        self.balancer = balancer
        # "postgres": a cluster in pg_dir, started first and stopped last;
        # a postgres:// URL: a server run by someone else, maybe elsewhere.
        self.pg = None
        self.pg_dir = pg_dir or DEFAULT_PG_DIR
        self.pg_local = db == "postgres"
        # Streaming replicas of the local cluster (pg_dir/replicaN, made
        # afresh by every up, removed by stop); servers read from them.
        self.nreplicas = replicas if self.pg_local else 0
        self.replicas = []
        self.replica_urls = None     # a detached stack's, from its state
        self.db = db if self.pg_local or is_pg_url(db) else os.path.abspath(db)
        self.scale = scale
        self.balancer_port = balancer_port
        self.server_ports = list(server_ports or
                                 [server_port + i for i in range(servers)])
        self.admin_port = admin_port
        self.memcached_ports = list(memcached_ports or
                                    [memcached_port + i
                                     for i in range(self.nmemcached)])
        self.memcached_ports = self.memcached_ports[:self.nmemcached]
        self.logdir = logdir or os.path.join(RUN_DIR, "logs")
        self.server_args = list(server_args)
        self.balancer_args = list(balancer_args)
        self.threads = threads
        self.db_threads = db_threads
        # CPU budgets in cores (0: none), one cgroup per process.
        self.cpus = {"hs-server": server_cpus, "memcached": cache_cpus,
                     "hs-balancer": balancer_cpus}
        # The local PostgreSQL primary and each replica: a host each.
        if self.pg_local and db_cpus:
            self.cpus["postgres"] = self.cpus["pg-replica"] = db_cpus
        # Replicas apply each commit this late (recovery_min_apply_delay),
        # as a distant or busy replica would: lag a laptop can show.
        self.replica_delay_ms = replica_delay_ms
        self.budgets = cgroups.Budgets()
        self.children = []
        # hosts: every child in its own network namespace (self.net, made
        # by start()), reached at its own address; else all on loopback.
        self.hosts = hosts
        self.subnet = subnet
        self.net = None
        self.net_state = None        # a detached stack's, from its state

    def host_names(self):
        """The hosts of a --hosts stack, as status and partition name
        them, in start order."""
        names = ["postgres"] if self.pg_local else []
        names += ["replica%d" % k for k in range(1, self.nreplicas + 1)]
        names += ["memcached%d" % (i + 1) for i in range(self.nmemcached)]
        names += ["server%d" % (i + 1) for i in range(self.nservers)]
        return names + (["balancer"] if self.balancer else [])

    def addr(self, host):
        """The address host (a host_names() name) listens on."""
        if self.net:
            return self.net.addr(host)
        if self.net_state:
            return self.net_state["hosts"][host]["addr"]
        return "127.0.0.1"

    def _netns(self, host):
        return self.net.netns(host) if self.net else None

    # The ports this stack will listen on, named for error messages.
    def ports(self):
        out = [(p, "memcached %d" % (i + 1))
               for i, p in enumerate(self.memcached_ports)]
        out += [(p, "hs-server %d" % (i + 1))
                for i, p in enumerate(self.server_ports)]
        if self.balancer:
            out += [(self.balancer_port, "hs-balancer"),
                    (self.admin_port, "hs-balancer admin")]
        return out

    def check_ports(self):
        if self.hosts:
            # Fresh namespaces: nothing else listens there.  The subnet
            # is what must be free.
            netns.check_subnet(self.subnet, len(self.host_names()))
            return
        seen = {}
        for port, what in self.ports():
            if port in seen:
                raise StackError("port %d is used twice (%s and %s)" %
                                 (port, seen[port], what))
            seen[port] = what
            if not 0 < port < 65536:
                raise StackError("port %d for %s is out of range" % (port, what))
            if not port_free(port):
                raise StackError(
                    "port %d (%s) is already in use; stop what uses it "
                    "(./hammerstack down, or ss -ltnp 'sport = :%d')" %
                    (port, what, port))

    def start_postgres(self):
        from hslab import pg as hpg
        log("starting PostgreSQL in %s" % self.pg_dir)
        settings = dict(PG_SETTINGS)
        if self.nreplicas:
            settings.update(hpg.REPLICATION_SETTINGS)
        kw = {}
        if self.net:
            kw = {"listen": self.addr("postgres"), "port": 5432,
                  "hba": [str(self.net.net)], "netns": self._netns("postgres")}
        self.pg = hpg.start_postgres(base=self.pg_dir, fsync=True,
                                     settings=settings, db="hammerstack",
                                     **kw)
        self.pg.proc.stop_sig = signal.SIGINT
        self.db = self.pg.url()
        self._started(self.pg.proc, self.pg.port, self._pg_host("postgres",
                                                                self.pg))

    def start_replicas(self):
        from hslab import pg as hpg
        for k in range(1, self.nreplicas + 1):
            log("starting PostgreSQL replica %d" % k)
            kw = {}
            if self.net:
                host = "replica%d" % k
                kw = {"listen": self.addr(host), "port": 5432,
                      "netns": self._netns(host)}
            r = hpg.start_replica(self.pg, base=self.replica_dir(k),
                                  name="pg-replica-%d" % k, **kw)
            r.proc.stop_sig = signal.SIGINT
            self.replicas.append(r)
            if self.replica_delay_ms:
                # A reload is enough: the setting is read on SIGHUP.
                r.psql("ALTER SYSTEM SET recovery_min_apply_delay = '%dms'"
                       % self.replica_delay_ms)
                r.psql("SELECT pg_reload_conf()")
            self._started(r.proc, r.port,
                          self._pg_host("pg-replica-%d" % k, r))

    def _pg_host(self, name, pg):
        """The cgroup of a cluster started by hslab.pg (None: no budget):
        the postmaster and the processes it has started so far join it
        now; the backends it forks for connections later are born in it."""
        if "postgres" not in self.cpus:     # no db_cpus
            return None
        host = self._host(name)
        if host is None:
            return None
        pids = [pg.proc.pid] + children(pg.proc.pid)
        for path in host.procs_files():
            for pid in pids:
                try:
                    with open(path, "w") as f:
                        f.write(str(pid))
                except OSError:
                    pass    # _started() says so for the postmaster
        return host

    def replica_dir(self, k):
        return os.path.join(self.pg_dir, "replica%d" % k)

    def seed(self):
        if is_pg_url(self.db):
            # hs-seed refuses a seeded database: that is the normal case.
            r = subprocess.run([os.path.join(BIN, "hs-seed"), "--db",
                                self.db, "--scale", str(self.scale),
                                "--quiet"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
            if r.returncode != 0 and "already seeded" not in r.stderr:
                raise StackError("seeding %s: %s" % (self.db,
                                                     r.stderr.strip()))
            return
        if os.path.exists(self.db):
            return
        os.makedirs(os.path.dirname(self.db), exist_ok=True)
        log("seeding %s at scale %g" % (self.db, self.scale))
        subprocess.run([os.path.join(BIN, "hs-seed"), "--db", self.db,
                        "--scale", str(self.scale)], check=True,
                       stdout=subprocess.DEVNULL)

    def _logpath(self, name):
        return os.path.join(self.logdir, name + ".log")

    def _host(self, name):
        """The cgroup for child name (None: no budget for it)."""
        return self.budgets.host(name, self.cpus[name.rsplit("-", 1)[0]
                                                 if name[-1].isdigit()
                                                 else name])

    def _spawn(self, name, args, port, where=None):
        host = self._host(name)
        c = Proc(args, name=name, logpath=self._logpath(name),
                 cgroup=host.procs_files() if host else None,
                 netns=self._netns(where) if where else None)
        self._started(c, port, host)
        return c

    def _started(self, c, port, host):
        c.port, c.host = port, host
        self.children.append(c)
        if host and c.pid not in host.pids():
            log("%s could not join its cgroup %s: it runs without its CPU "
                "budget" % (c.name, host.cpu_dir))

    def memcached_list(self):
        return ",".join("%s:%d" % (self.addr("memcached%d" % (i + 1)), p)
                        for i, p in enumerate(self.memcached_ports))

    def start(self):
        os.makedirs(self.logdir, exist_ok=True)
        self.check_ports()
        try:
            if self.hosts:
                netns.sweep()
                self.net = netns.Network(self.host_names(), self.subnet)
                self.net.create()
            if self.pg_local:
                self.start_postgres()
            self.seed()
            if self.nreplicas:
                self.start_replicas()
            for i, port in enumerate(self.memcached_ports):
                name = "memcached-%d" % (i + 1)
                host = self._host(name)
                where = "memcached%d" % (i + 1)
                c, _ = start_memcached(
                    port, mem_mb=256, threads=2, conns=4096, name=name,
                    retry_s=0, ready_timeout=20, logpath=self._logpath(name),
                    cgroup=host.procs_files() if host else None,
                    host=self.addr(where), netns=self._netns(where))
                self._started(c, port, host)
            for i, port in enumerate(self.server_ports):
                where = "server%d" % (i + 1)
                args = [os.path.join(BIN, "hs-server"),
                        "--listen", "%s:%d" % (self.addr(where), port),
                        "--db", self.db,
                        "--id", "s%d" % (i + 1), "--cache", self.cache]
                if self.nmemcached:
                    args += ["--memcached", self.memcached_list()]
                if self.threads:
                    args += ["--threads", str(self.threads)]
                if self.db_threads:
                    args += ["--db-threads", str(self.db_threads)]
                for r in self.replicas:
                    args += ["--db-read", r.url()]
                c = self._spawn("hs-server-%d" % (i + 1),
                                args + self.server_args, port, where)
                wait_http(port, "/healthz", 30, c, host=self.addr(where))
            if self.balancer:
                at = self.addr("balancer")
                args = [os.path.join(BIN, "hs-balancer"),
                        "--listen", "%s:%d" % (at, self.balancer_port),
                        "--admin", "%s:%d" % (at, self.admin_port)]
                for i, port in enumerate(self.server_ports):
                    args += ["--backend", "%s:%d" % (
                        self.addr("server%d" % (i + 1)), port)]
                c = self._spawn("hs-balancer", args + self.balancer_args,
                                self.balancer_port, "balancer")
                wait_connect(c.port, c, 20, host=at)
                wait_http(self.admin_port, "/stats", 30, c, host=at)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        # Front to back: the balancer drains first, memcached goes last.
        for c in reversed(self.children):
            # PostgreSQL: fast shutdown (SIGINT), which ends the sessions;
            # SIGTERM is "smart" and waits for every client, and a client
            # lost in a partition never says goodbye.
            c.stop(sig=getattr(c, "stop_sig", signal.SIGTERM))
        self.children = []
        for k in range(1, len(self.replicas) + 1):
            shutil.rmtree(self.replica_dir(k), ignore_errors=True)
        self.replicas = []
        self.budgets.remove()
        if self.net:
            self.net.remove()
            self.net = None

    def host_usage(self):
        """{child name: {"cpus": budget (0: none), "cpu_s": CPU seconds
        used, "throttled_s", "nr_throttled"}}: from its cgroup, or from
        /proc (never throttled) for a child without a budget."""
        out = {}
        for c in self.children:
            if c.host:
                u = c.host.usage()
            else:
                u = {"cpu_s": cpu_seconds(c.pid), "throttled_s": 0.0,
                     "nr_throttled": 0}
            u["cpus"] = c.host.cpus if c.host else 0
            out[c.name] = u
        return out

    def entry_port(self):
        return self.balancer_port if self.balancer else self.server_ports[0]

    def addr_bridge(self):
        """The root namespace's address on the hosts' bridge."""
        return (self.net.bridge_addr if self.net else
                (self.net_state or {}).get("bridge_addr", "127.0.0.1"))

    def entry_addr(self):
        return self.addr("balancer" if self.balancer else "server1")

    def urls(self):
        u = {}
        if self.balancer:
            at = self.addr("balancer")
            u["api"] = "http://%s:%d/" % (at, self.balancer_port)
            u["admin"] = "http://%s:%d/stats" % (at, self.admin_port)
            u["metrics"] = "http://%s:%d/metrics" % (at, self.admin_port)
        for i, p in enumerate(self.server_ports):
            u["server%d" % (i + 1)] = "http://%s:%d/" % (
                self.addr("server%d" % (i + 1)), p)
        for i, p in enumerate(self.memcached_ports):
            u["memcached%d" % (i + 1)] = "%s:%d" % (
                self.addr("memcached%d" % (i + 1)), p)
        if is_pg_url(self.db or ""):
            u["postgres"] = self.db
        for k, url in enumerate(self.replica_urls or
                                [r.url() for r in self.replicas], 1):
            u["replica%d" % k] = url
        return u

    def state(self):
        st = {"pid": os.getpid(), "started": time.time(),
              "db": self.db, "cache": self.cache, "urls": self.urls(),
              "budgets": self.budgets.describe(),
              "children": [{"name": c.name, "pid": c.pid, "port": c.port,
                            "cgroup": c.host.state() if c.host else None}
                           for c in self.children]}
        if self.net:
            st["hosts"] = self.net.describe()
            for c in st["children"]:
                c["host"] = child_host(c["name"])
                c["addr"] = self.addr(c["host"])
        return st

    def check_children(self):
        """Names of the children that died."""
        return [c.name for c in self.children if not c.alive()]


def child_host(name):
    """A child's host name: hs-server-2 -> server2, memcached-1 ->
    memcached1, hs-balancer -> balancer, pg-replica-1 -> replica1."""
    if name == "hs-balancer":
        return "balancer"
    if name.startswith("pg-replica-"):
        return "replica" + name.rsplit("-", 1)[1]
    if name.startswith("hs-server-"):
        return "server" + name.rsplit("-", 1)[1]
    return name.replace("-", "")


STATE = os.path.join(RUN_DIR, "stack.json")


def read_state():
    try:
        with open(STATE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pid_is_stack(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"stack.py" in f.read()
    except OSError:
        return False


def print_urls(stack, out=sys.stdout):
    u = stack.urls()
    out.write("hammerstack is up (cache: %s, %d server%s%s)\n" % (
        stack.cache, stack.nservers, "" if stack.nservers == 1 else "s",
        ", balancer" if stack.balancer else ""))
    for k, v in u.items():
        out.write("  %-11s %s\n" % (k, v))
    if any(stack.cpus.values()):
        out.write("  %-11s %s\n" % ("cpu budget", ", ".join(
            "%s %g" % (k, v) for k, v in stack.cpus.items() if v)))
    if stack.hosts:
        out.write("  %-11s each its own network namespace on %s, bridge %s;"
                  " ./hammerstack partition HOST / heal HOST (%s)\n" % (
                      "hosts", stack.subnet, stack.addr_bridge(),
                      ", ".join(stack.host_names())))
    port, at = stack.entry_port(), stack.entry_addr()
    out.write("try:  curl -i http://%s:%d/products/1\n" % (at, port))
    out.write("load: wrk -t1 -c64 -d10s -s loadtest/wrk/read-mix.lua "
              "http://%s:%d\n" % (at, port))
    out.flush()


def start_dashboard(stack, spec):
    """A Sampler over the running stack and the live dashboard on spec
    (HOST:PORT); (sampler, dashboard), (None, None) when spec is None.
    A dashboard that cannot listen is said once; the stack runs on."""
    if not spec:
        return None, None
    from hslab.dashboard import serve
    sampler = Sampler(None).start()
    sampler.watch(stack, "up")
    dash = serve(sampler, spec)
    if dash is None:
        sampler.stop()
        return None, None
    return sampler, dash


def stop_dashboard(sampler, dash):
    if dash:
        dash.stop()
    if sampler:
        sampler.stop()


def supervise(stack, ready_fd=None, dashboard=None):
    """Runs until SIGINT/SIGTERM; then stops every child.  dashboard:
    HOST:PORT of the live dashboard, or None."""
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        stack.start()
    except (StackError, subprocess.CalledProcessError, OSError) as e:
        if ready_fd is not None:
            os.write(ready_fd, ("error: %s\n" % e).encode())
            os.close(ready_fd)
        else:
            log(str(e))
        return 1
    os.makedirs(RUN_DIR, exist_ok=True)
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(stack.state(), f, indent=1)
    os.rename(tmp, STATE)
    sampler, dash = start_dashboard(stack, dashboard)
    if ready_fd is not None:
        os.write(ready_fd, b"ok\n")
        os.close(ready_fd)
    else:
        print_urls(stack)
        if dash:
            sys.stdout.write("dashboard: %s\n" % dash.url)
        sys.stdout.write("Ctrl-C stops everything.\n")
        sys.stdout.flush()
    reported = set()
    while not stopping:
        time.sleep(0.2)
        for name in stack.check_children():
            if name not in reported:
                log("%s exited unexpectedly; see %s" %
                    (name, os.path.join(stack.logdir, name + ".log")))
                reported.add(name)
    log("stopping")
    stop_dashboard(sampler, dash)
    stack.stop()
    try:
        if read_state() and read_state().get("pid") == os.getpid():
            os.unlink(STATE)
    except OSError:
        pass
    log("stopped; every port is free")
    return 0


def cmd_up(a):
    st = read_state()
    if st and pid_alive(st["pid"]) and pid_is_stack(st["pid"]):
        raise StackError("a stack is already running (pid %d); "
                         "./hammerstack down first" % st["pid"])
    stack = Stack(servers=a.servers, cache=a.cache, memcached=a.memcached,
                  balancer=not a.no_balancer, db=a.db, scale=a.scale,
                  balancer_port=a.port, server_port=a.server_port,
                  admin_port=a.admin_port, memcached_port=a.memcached_port,
                  threads=a.threads, db_threads=a.db_threads,
                  server_cpus=a.server_cpus, cache_cpus=a.cache_cpus,
                  balancer_cpus=a.balancer_cpus, db_cpus=a.db_cpus,
                  pg_dir=a.pg_dir,
                  replicas=a.replicas, hosts=a.hosts, subnet=a.subnet)
    if a.hosts:
        netns.sweep()
    stack.check_ports()
    if a.hosts and not (stack.pg_local or is_pg_url(stack.db)):
        log("note: with SQLite every server opens the same file on this "
            "machine, so only the network is per host; --hosts is truest "
            "with --db postgres")
    if any(stack.cpus.values()):
        # Said here too, where a detached stack's user sees it.
        problem = cgroups.find_hierarchy()[3]
        if problem:
            cgroups.warn(problem)
    dashboard = None if a.no_dashboard else a.dashboard
    if not a.detach:
        return supervise(stack, dashboard=dashboard)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.makedirs(stack.logdir, exist_ok=True)
        logfd = os.open(os.path.join(stack.logdir, "stack.log"),
                        os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(devnull, 0)
        os.dup2(logfd, 1)
        os.dup2(logfd, 2)
        os._exit(supervise(stack, ready_fd=w, dashboard=dashboard))
    os.close(w)
    msg = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        msg += chunk
    os.close(r)
    if not msg.startswith(b"ok"):
        raise StackError(msg.decode().strip() or "the stack did not start")
    if stack.hosts:
        stack.net_state = (read_state() or {}).get("hosts")
    if stack.pg_local:
        # The cluster's URL (its port) is known to the supervisor only.
        st = read_state() or {}
        stack.db = st.get("db", stack.db)
        stack.replica_urls = [v for k, v in st.get("urls", {}).items()
                              if k.startswith("replica")]
    print_urls(stack)
    if dashboard:
        sys.stdout.write("dashboard: http://%s/\n" % dashboard)
    sys.stdout.write("running in the background; ./hammerstack down stops it\n")
    return 0


def cmd_down(a):
    st = read_state()
    if not st:
        cgroups.sweep()
        netns.sweep()
        print("no stack is running")
        return 0
    pid = st["pid"]
    if pid_alive(pid) and pid_is_stack(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    # Anything recorded that still runs (the supervisor was killed hard).
    for c in st.get("children", []):
        if pid_alive(c["pid"]):
            try:
                os.killpg(c["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    try:
        os.unlink(STATE)
    except OSError:
        pass
    cgroups.sweep()  # those of a supervisor killed hard
    netns.sweep()
    print("stopped")
    return 0


def budget_text(cg):
    """A child's CPU budget for status: "cpu 0.15 (used 1.2 s, throttled
    0.3 s in 12 periods)", or "" without one."""
    if not cg:
        return ""
    h = cgroups.Host(cg["kind"], cg["cpu_dir"], cg["acct_dir"], cg["cpus"])
    u = h.usage()
    return "cpu %g (used %.1f s, throttled %.1f s in %d periods)" % (
        cg["cpus"], u["cpu_s"], u["throttled_s"], u["nr_throttled"])


def cmd_status(a):
    cgroups.sweep()
    netns.sweep()
    st = read_state()
    if not st or not pid_alive(st["pid"]):
        print("no stack is running")
        return 3
    print("stack pid %d, cache %s, db %s" % (st["pid"], st["cache"], st["db"]))
    print("  %s" % st.get("budgets", "no CPU budgets asked for"))
    net = st.get("hosts")
    cut = netns.partitioned(net) if net else []
    if net:
        print("  hosts: network namespaces on %s, bridge %s at %s%s" % (
            net["subnet"], net["bridge"], net["bridge_addr"],
            "; partitioned: " + ", ".join(cut) if cut else ""))
    bad = 0
    for c in st["children"]:
        alive = pid_alive(c["pid"])
        health = ""
        if alive and c["name"].startswith("hs-"):
            try:
                status, _, _ = http_get(c["port"], "/healthz", 1.0,
                                        c.get("addr", "127.0.0.1"))
                health = "HTTP %d" % status
            except OSError as e:
                health = "unreachable (%s)" % e
        bad += not alive
        where = ""
        if c.get("host"):
            where = "%-11s %-15s %-12s" % (
                c["host"], c["addr"],
                "PARTITIONED" if c["host"] in cut else "")
        print("  %-14s %spid %-7d port %-5d %s %s %s" % (
            c["name"], where, c["pid"], c["port"],
            "up" if alive else "DOWN", health,
            budget_text(c.get("cgroup"))))
    for k, v in st["urls"].items():
        print("  %-11s %s" % (k, v))
    return 1 if bad else 0


def cmd_link(a, up):
    """partition HOST (up=False) / heal HOST (up=True)."""
    netns.sweep()
    st = read_state()
    if not st or not pid_alive(st["pid"]):
        raise StackError("no stack is running")
    net = st.get("hosts")
    if not net:
        raise StackError("the running stack was not started with --hosts: "
                         "./hammerstack down, then ./hammerstack up --hosts")
    netns.set_link(net, a.host, up)
    print("%s (%s) is %s" % (a.host, net["hosts"][a.host]["addr"],
                             "back on the network" if up else
                             "cut off: its packets are dropped silently"))
    return 0


def add_dashboard_args(ap):
    """--dashboard HOST:PORT and --no-dashboard (up and the walkthrough)."""
    ap.add_argument("--dashboard", default="127.0.0.1:8099",
                    metavar="HOST:PORT",
                    help="serve the live dashboard there (default "
                    "127.0.0.1:8099)")
    ap.add_argument("--no-dashboard", action="store_true",
                    help="no live dashboard")


def add_cpu_args(ap, default=0.0):
    """--server-cpus, --cache-cpus, --balancer-cpus: a CPU budget in cores
    for each such process, in its own cgroup (0: none)."""
    for opt, what in (("--server-cpus", "each hs-server"),
                      ("--cache-cpus", "each memcached"),
                      ("--balancer-cpus", "hs-balancer")):
        ap.add_argument(opt, type=float, default=default, metavar="F",
                        help="CPU budget of %s in cores, a cgroup CPU quota "
                        "like a VM of that size (default %g: none)" %
                        (what, default))


def check_cpus(ap, a):
    for name in ("server_cpus", "cache_cpus", "balancer_cpus"):
        v = getattr(a, name)
        if not (v == 0 or cgroups.MIN_CPUS <= v <= 1024):
            ap.error("--%s must be 0 (no budget) or in %g..1024" %
                     (name.replace("_", "-"), cgroups.MIN_CPUS))


def check_up(up, a):
    """The checks argparse cannot do alone; errors exit 2."""
    for name, v, lo, hi in (("--servers", a.servers, 1, 64),
                            ("--memcached", a.memcached, 1, 16),
                            ("--port", a.port, 1, 65535),
                            ("--server-port", a.server_port, 1, 65535),
                            ("--admin-port", a.admin_port, 1, 65535),
                            ("--memcached-port", a.memcached_port, 1, 65535),
                            ("--threads", a.threads, 1, 1024),
                            ("--db-threads", a.db_threads, 0, 1024)):
        if v is not None and not lo <= v <= hi:
            up.error("%s must be in %d..%d" % (name, lo, hi))
    if not 0 <= a.replicas <= 8:
        up.error("--replicas must be in 0..8")
    if a.replicas and a.db != "postgres":
        up.error("--replicas needs --db postgres (a local cluster)")
    if not 0.0001 <= a.scale <= 100:
        up.error("--scale must be in 0.0001..100")
    if a.hosts:
        why = netns.problem()
        if why:
            # Said before anything slow (install, build, seed).
            sys.stderr.write("hammerstack up: %s\n" % why)
            sys.exit(2)
        try:
            netns.check_subnet(a.subnet, a.servers + (
                a.memcached if a.cache != "off" else 0) + (
                not a.no_balancer) + (
                1 + a.replicas if a.db == "postgres" else 0))
        except netns.NetnsError as e:
            up.error(str(e))
    check_cpus(up, a)
    if not (a.db_cpus == 0 or cgroups.MIN_CPUS <= a.db_cpus <= 1024):
        up.error("--db-cpus must be 0 (no budget) or in %g..1024" %
                 cgroups.MIN_CPUS)
    if a.db_cpus and a.db != "postgres":
        up.error("--db-cpus needs --db postgres (a local cluster)")
    if a.server_port + a.servers - 1 > 65535:
        up.error("--server-port leaves no room for %d servers" % a.servers)
    if not a.no_dashboard:
        from hslab.dashboard import parse_hostport
        try:
            parse_hostport(a.dashboard)
        except ValueError:
            up.error("--dashboard must be HOST:PORT, not '%s'" % a.dashboard)


def main(argv=None):
    ap = CliParser(prog="hammerstack", description="Run the hammerstack stack.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the stack",
                        description="Seed the database if needed, start "
                        "memcached, N hs-server and hs-balancer on loopback, "
                        "print the URLs; Ctrl-C stops everything.")
    up.add_argument("--servers", type=int, default=2, metavar="N",
                    help="hs-server processes (default 2)")
    up.add_argument("--cache", choices=("lease", "naive", "off"),
                    default="lease", help="cache mode (default lease)")
    up.add_argument("--memcached", type=int, default=1, metavar="N",
                    help="memcached servers (default 1)")
    up.add_argument("--no-balancer", action="store_true",
                    help="servers only, no hs-balancer")
    up.add_argument("--scale", type=float, default=1.0,
                    help="seed scale when the database is created (default 1)")
    up.add_argument("--db", default=DEFAULT_DB,
                    help="database file (default data/hammerstack.db), "
                    "'postgres' (a local PostgreSQL cluster in --pg-dir, "
                    "started and stopped with the stack) or a "
                    "postgres://USER@HOST:PORT/DB URL")
    up.add_argument("--pg-dir", default=DEFAULT_PG_DIR,
                    help="the local cluster's directory with --db postgres "
                    "(default data/pg)")
    up.add_argument("--replicas", type=int, default=0, metavar="N",
                    help="with --db postgres: N streaming read replicas "
                    "(pg_basebackup, hot standby); the servers read from "
                    "them with --db-read (default 0)")
    up.add_argument("--port", type=int, default=8080,
                    help="balancer port (default 8080)")
    up.add_argument("--server-port", type=int, default=8081,
                    help="first server port (default 8081)")
    up.add_argument("--admin-port", type=int, default=8090,
                    help="balancer admin port (default 8090)")
    up.add_argument("--memcached-port", type=int, default=21211,
                    help="first memcached port (default 21211)")
    up.add_argument("--threads", type=int, default=None,
                    help="event loop threads per server (default: CPUs)")
    up.add_argument("--db-threads", type=int, default=None,
                    help="database threads per server (default 0: the "
                    "loops run the queries)")
    add_cpu_args(up)
    up.add_argument("--db-cpus", type=float, default=0.0, metavar="F",
                    help="with --db postgres: CPU budget of the primary and "
                    "of each replica in cores, each its own cgroup (default "
                    "0: none)")
    up.add_argument("--hosts", action="store_true",
                    help="every component on its own host: its own network "
                    "namespace and address on a private bridge (root only); "
                    "the client reaches the printed balancer address")
    up.add_argument("--subnet", default=netns.DEFAULT_SUBNET,
                    metavar="CIDR", help="with --hosts: the private subnet "
                    "of the bridge (default %s; one this machine routes "
                    "already is refused)" % netns.DEFAULT_SUBNET)
    add_dashboard_args(up)
    up.add_argument("--detach", action="store_true",
                    help="run in the background (stop with down)")
    cmds = {"up": up,
            "down": sub.add_parser("down", help="stop a detached stack"),
            "status": sub.add_parser("status", help="show the running stack")}
    for name, what in (("partition", "cut HOST off the network (its "
                        "packets dropped silently, as behind a pulled "
                        "cable)"),
                       ("heal", "bring a partitioned HOST back")):
        cmds[name] = sub.add_parser(name, help=what, description=what +
                                    "; a stack started with up --hosts")
        cmds[name].add_argument("host", metavar="HOST",
                                help="as status names it: balancer, "
                                "server1, memcached1, postgres, replica1...")
    for p in cmds.values():
        add_check_args(p)
    a, rest = ap.parse_known_args(argv)
    if rest:
        # Named by the subcommand's parser: "hammerstack up: ...".
        cmds[a.cmd].error("unknown option or argument '%s'" % rest[0])
    if a.cmd == "up":
        check_up(up, a)
    if a.check_args:
        return 0
    try:
        if a.cmd == "up":
            return cmd_up(a)
        if a.cmd == "down":
            return cmd_down(a)
        if a.cmd in ("partition", "heal"):
            if os.geteuid() != 0:
                sys.stderr.write("hammerstack %s: needs root, as up --hosts "
                                 "does\n" % a.cmd)
                return 2
            return cmd_link(a, a.cmd == "heal")
        return cmd_status(a)
    except StackError as e:
        sys.stderr.write("hammerstack: %s\n" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
