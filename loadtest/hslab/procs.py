"""Child processes, ports and HTTP readiness: the one copy that the stack
supervisor, the benchmarks, the walkthrough and the integration tests use.

Every child runs in its own process group (so that its own children, e.g.
nginx workers, are signalled with it) and, when started from the main
thread, with PR_SET_PDEATHSIG: if the process that started it dies, even by
SIGKILL, the kernel stops it too, so no orphan keeps a port.  (The signal
follows the *thread* that forked: a child started from a short-lived
thread would die with that thread, so those children go without it.)
A child can be put into a cgroup before it execs (cgroup=, see
cgroups.py), so that every thread it creates is in it from the start.

Each Proc is recorded until it is stopped; kill_all() / stop_all() (run at
exit after install_cleanup()) end whatever is left, by recorded PID.
"""

import atexit
import ctypes
import os
import re
import shutil
import signal
from signal import SIGTERM
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000
NOBODY = 65534

_libc = ctypes.CDLL(None, use_errno=True)
_live = []          # Procs started and not yet stopped
_live_lock = threading.Lock()
_tmpdirs = []

LISTEN_RX = r" \[?([0-9a-fA-F.:]+?)\]?:(\d+)"


class LabError(Exception):
    """A process did not start, did not become ready, or a tool failed."""


# ------------------------------------------------------------- processes

def _preexec(parent, cgroup_procs=None, pdeathsig=True, drop=False,
             netns=None):
    """Runs in the child between fork and exec: joins the cgroup first
    (threads created later inherit it; root may still write the file),
    then the network namespace netns (which needs root, so before the
    drop), drops to nobody when asked, then asks for SIGTERM when the
    parent dies, and exits if the parent is already gone."""
    def run():
        for path in cgroup_procs:
            try:
                with open(path, "w") as f:
                    f.write("%d\n" % os.getpid())
            except OSError:
                pass    # the parent sees it (not in cgroup.procs) and says so
        if netns:
            # No import here: another thread may hold the import lock.
            fd = os.open("/run/netns/" + netns, os.O_RDONLY)
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                os._exit(126)   # never run on the wrong network
            os.close(fd)
        if drop:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        # Set after any credential change: a change of uid clears it (so a
        # daemon must not switch users itself, e.g. memcached -u).
        if pdeathsig:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)
    return run


class Proc:
    """One child process.

    stdout: "lines" reads it in a thread, one string per line, for
    wait_line() / listen_port(); otherwise any Popen stdout value (default
    DEVNULL, or the log when logpath is given).  stderr: a Popen value;
    default the log file at logpath (opened for append), else DEVNULL.
    timeout: a hard limit in seconds on the child's life (killed after).
    cgroup: a path (or a list) of cgroup.procs files the child joins before
    it execs.  drop_privileges: run as nobody (when started by root).
    netns: the name of a network namespace (hslab/netns.py) it runs in.
    The child gets a new session; args[0] is run as given."""

    def __init__(self, args, name=None, logpath=None, stdout=None,
                 stderr=None, timeout=None, env=None, cwd=None,
                 cgroup=None, pdeathsig=None, drop_privileges=False,
                 netns=None):
        self.name = name or os.path.basename(args[0])
        self.args = list(args)
        self.logpath = logpath
        self.lines = []
        self._cond = threading.Condition()
        self._log = open(logpath, "ab") if logpath else None
        if stderr is None:
            stderr = self._log or subprocess.DEVNULL
        lines = stdout == "lines"
        if lines:
            stdout = subprocess.PIPE
        elif stdout is None:
            stdout = self._log or subprocess.DEVNULL
        if pdeathsig is None:
            pdeathsig = threading.current_thread() is threading.main_thread()
        e = None
        if env:
            e = dict(os.environ)
            e.update(env)
        self.p = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=stdout,
            stderr=stderr, env=e, cwd=cwd, start_new_session=True,
            preexec_fn=_preexec(os.getpid(), [cgroup] if isinstance(
                cgroup, str) else list(cgroup or ()), pdeathsig,
                                drop_privileges, netns))
        self.pid = self.p.pid
        with _live_lock:
            _live.append(self)
        self._reader = None
        if lines:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        self._killer = None
        if timeout:
            self._killer = threading.Timer(timeout, self.kill)
            self._killer.daemon = True
            self._killer.start()

    def _read(self):
        for raw in self.p.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, pattern, timeout=30):
        """Waits for a stdout line matching the regex (stdout="lines");
        returns the match; LabError after timeout or when the child ends
        without one."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            i = 0
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and
                                 not self._reader.is_alive()):
                    raise LabError(
                        "%s: no line matching %r (exit %s)\n%s" %
                        (self.name, pattern, self.p.poll(), self.log_text()))
                self._cond.wait(min(left, 0.2))

    def listen_port(self, what="listening on", timeout=30):
        """The port of a "listening on HOST:PORT" line (or another
        prefix, e.g. "admin on")."""
        return int(self.wait_line(what + LISTEN_RX, timeout).group(2))

    def log_text(self, n=8000):
        """The last n characters of the log file."""
        if self._log and not self._log.closed:
            self._log.flush()
        return tail(self.logpath, n) if self.logpath else ""

    def tail(self, n=15):
        """The last n lines of the log file."""
        return "\n".join(self.log_text(1 << 20).splitlines()[-n:])

    def alive(self):
        return self.p.poll() is None

    def poll(self):
        return self.p.poll()

    def __getattr__(self, name):
        # The rest of the Popen: stdout, communicate(), returncode...
        p = self.__dict__.get("p")
        if p is None:
            raise AttributeError(name)
        return getattr(p, name)

    def signal(self, sig, group=False):
        if self.alive():
            try:
                if group:
                    os.killpg(self.pid, sig)
                else:
                    os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self):
        """SIGKILL to the child's process group (its pgid is its PID)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout=15, sig=SIGTERM, group=False):
        """sig to the child (group=True: to its process group), a wait of
        timeout seconds, then SIGKILL to the group for anything left.
        Returns the exit status."""
        if self.alive():
            self.signal(sig, group)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # stragglers in the group
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.close()
        return self.p.returncode

    def wait(self, timeout=None):
        rc = self.p.wait(timeout)
        self.close()
        return rc

    def close(self):
        """Forgets the child (it has ended) and closes its log."""
        if self._killer:
            self._killer.cancel()
        with _live_lock:
            if self in _live:
                _live.remove(self)
        if self._log:
            self._log.close()


def kill_all():
    """SIGKILL to every child still recorded."""
    with _live_lock:
        procs = list(_live)
    for p in procs:
        if p.alive():
            p.kill()


def stop_all(timeout=5):
    """Stops every recorded child, newest first (SIGTERM to the group, then
    SIGKILL), and removes the temp dirs made by mkdtemp()."""
    with _live_lock:
        procs = list(reversed(_live))
    for p in procs:
        p.stop(timeout, group=True)
    for d in _tmpdirs:
        shutil.rmtree(d, ignore_errors=True)
    _tmpdirs.clear()


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


def install_cleanup():
    """SIGINT/SIGTERM/SIGHUP end the program through SystemExit, so that
    finally blocks and stop_all() run; stop_all() also runs at exit."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    atexit.register(stop_all)


def mkdtemp(prefix):
    """A temp dir removed by stop_all()."""
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


def tail(path, n=2000):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")
    except (OSError, TypeError):
        return ""


def find_exe(name):
    """The path of a system tool (also in /usr/sbin, often not in PATH)."""
    exe = shutil.which(name)
    if exe:
        return exe
    for d in ("/usr/sbin", "/usr/bin", "/sbin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def children(pid):
    """The live (not zombie) PIDs whose parent is pid: a postmaster's
    backends, walsender, walreceiver, startup process ..."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read().rsplit(")", 1)[1].split()
            if int(st[1]) == pid and st[0] != "Z":
                out.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return out


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


# ------------------------------------------------------------------ ports

def port_free(port, host="127.0.0.1"):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port():
    """A port that was free a moment ago (for servers that cannot bind 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    """n distinct ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _log_tail(proc):
    t = proc.tail() if isinstance(proc, Proc) else ""
    return ":\n" + t if t else ""


def _poll(proc):
    return proc.p.poll() if isinstance(proc, Proc) else proc.poll()


def _check_alive(proc, what):
    if proc is not None and _poll(proc) is not None:
        raise LabError("%s exited (status %s)%s" % (
            what, _poll(proc), _log_tail(proc)))


def wait_connect(port, proc=None, timeout=10, what=None, host="127.0.0.1"):
    """Waits until host:port accepts a connection; LabError when proc
    (a Proc or Popen) exits first or after timeout seconds."""
    what = what or getattr(proc, "name", None) or "process"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(proc, what)
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise LabError("%s did not listen on port %d within %.0fs%s" %
                   (what, port, timeout, _log_tail(proc)))


# ------------------------------------------------------------------- HTTP

def http_get(port, path, timeout=2.0, host="127.0.0.1"):
    """Returns (status, headers dict, body bytes) of a GET of
    http://host:port/path; raises OSError."""
    url = "http://%s:%d%s" % (host, port, path)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except urllib.error.URLError as e:
        raise OSError(str(e.reason))


def wait_http(port, path="/healthz", timeout=30, proc=None, want=200,
              what=None, get=None, host="127.0.0.1"):
    """Waits for status want from host:port/path; returns the answer
    of get(port, path) (default http_get: (status, headers, body)).
    LabError when proc (a Proc or Popen) exits first or after timeout."""
    get = get or (lambda port, path: http_get(port, path, 2.0, host))
    what = what or getattr(proc, "name", None) or "process"
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        _check_alive(proc, what)
        try:
            r = get(port, path)
            status = r[0] if isinstance(r, tuple) else r.status
            if status == want:
                return r
            last = status
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise LabError("%s: %s:%d%s not ready within %.0fs (%s)%s" %
                   (what, host, port, path, timeout, last, _log_tail(proc)))


# ----------------------------------------------- the processes we start

def start_on_free_port(name, launch, ready, log=None, tries=5):
    """Starts a process told which port to listen on: launch(port) returns
    its Proc, ready(port, proc) raises LabError until it answers.  Tries
    free ports, since another process may take one between our pick and
    the bind.  Returns (Proc, port); the error quotes the end of log."""
    last = None
    for _ in range(tries):
        port = free_port()
        p = launch(port)
        try:
            ready(port, p)
            return p, port
        except LabError as e:
            p.stop(group=True)
            last = e
    raise LabError("could not start %s: %s%s" % (
        name, last, "\n" + tail(log) if log else ""))


def start_memcached(port=None, mem_mb=64, threads=2, conns=None, extra=(),
                    name="memcached", ready_timeout=10, retry_s=10,
                    make=None, host="127.0.0.1", **proc_kw):
    """A real memcached on host, default 127.0.0.1 (as nobody when run as
    root, dropped before exec so that PR_SET_PDEATHSIG holds): on a
    free port (5 tries), or on port (retried for retry_s seconds while an
    old one's port is still taken).  proc_kw go to Proc (logpath, cgroup,
    ...); make: the Proc class (a subclass).  Returns (Proc, port)."""
    exe = find_exe("memcached")
    if not exe:
        raise LabError("memcached is not installed")
    give_up = time.monotonic() + retry_s
    last = None
    for _ in range(20 if port else 5):
        p_port = port or free_port()
        args = [exe, "-l", host, "-p", str(p_port), "-U", "0",
                "-m", str(mem_mb), "-t", str(threads)]
        if conns:
            args += ["-c", str(conns)]
        p = (make or Proc)(args + list(extra), name=name,
                           drop_privileges=os.geteuid() == 0, **proc_kw)
        try:
            wait_connect(p_port, p, ready_timeout, name, host)
            return p, p_port
        except LabError as e:
            last = e
            p.stop(group=True)
        if port:
            if time.monotonic() > give_up:
                break
            time.sleep(0.2)
    raise LabError("could not start memcached%s: %s" %
                   (" on port %d" % port if port else "", last))


def start_listening(args, name=None, ready_path="/healthz", ready_timeout=30,
                    what="listening on", **proc_kw):
    """A hammerstack daemon told to listen on port 0: it prints "listening
    on HOST:PORT" on stdout; waits for that line and then for a 200 from
    ready_path (None: no HTTP check).  proc_kw go to Proc.  Returns
    (Proc, port)."""
    p = Proc(args, name=name, stdout="lines", **proc_kw)
    try:
        port = p.listen_port(what, ready_timeout)
        if ready_path:
            wait_http(port, ready_path, ready_timeout, p)
    except BaseException:
        p.stop()
        raise
    return p, port
