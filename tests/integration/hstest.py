"""Shared fixtures for the integration tests: real processes on free loopback
ports, each with a hard timeout, killed by recorded PID at the end.

Conventions every hammerstack daemon follows (the tests rely on them):
  * started with a port of 0 it binds a free port and prints, on stdout, one
    line per listener:  "listening on HOST:PORT"  (the balancer also prints
    "admin on HOST:PORT"), then keeps running;
  * SIGTERM stops it cleanly with exit status 0.
"""

import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

BIN = os.environ.get("HS_BIN_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "bin")
SRC = os.environ.get("HS_SOURCE_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..")
SANITIZE = os.environ.get("HS_SANITIZE", "0") in ("1", "ON", "TRUE", "true")
# Sanitizer builds are several times slower: scale waits, not assertions.
SLOW = 4.0 if SANITIZE else 1.0

_procs = []


def binpath(name):
    return os.path.join(BIN, name)


def free_port():
    """A port that was free a moment ago (for servers that cannot bind 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process whose stdout is scanned for "listening on" lines and
    whose stderr goes to a log file kept for failure reports."""

    def __init__(self, args, name=None, timeout=300, env=None, cwd=None):
        self.name = name or os.path.basename(args[0])
        self.args = args
        self.logdir = tempfile.mkdtemp(prefix="hs-%s-" % self.name)
        self.errpath = os.path.join(self.logdir, "stderr.log")
        self._err = open(self.errpath, "wb")
        self.lines = []
        self._cond = threading.Condition()
        e = dict(os.environ)
        if env:
            e.update(env)
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE,
                                  stderr=self._err, stdin=subprocess.DEVNULL,
                                  env=e, cwd=cwd, start_new_session=True)
        _procs.append(self)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # A hard limit on the life of every child.
        self._killer = threading.Timer(timeout * SLOW, self.kill)
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
        """Waits for a stdout line matching the regex; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout * SLOW
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
                    raise AssertionError(
                        "%s: no line matching %r (exit %s)\nstderr:\n%s" %
                        (self.name, pattern, self.p.poll(), self.stderr()))
                self._cond.wait(min(left, 0.2))

    def listen_port(self, what="listening on"):
        m = self.wait_line(what + r" \[?([0-9a-fA-F.:]+?)\]?:(\d+)")
        return int(m.group(2))

    def stderr(self):
        if not self._err.closed:
            self._err.flush()
        try:
            with open(self.errpath, "rb") as f:
                return f.read().decode("utf-8", "replace")[-8000:]
        except OSError:
            return ""

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def stop(self, timeout=15):
        """SIGTERM, wait; SIGKILL if it does not exit. Returns exit status."""
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.kill()
        self._killer.cancel()
        rc = self.p.wait()
        self._err.close()
        return rc

    def kill(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def cleanup(self):
        self.kill()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._killer.cancel()
        shutil.rmtree(self.logdir, ignore_errors=True)


@atexit.register
def _cleanup_all():
    for p in _procs:
        if p.alive():
            p.kill()


def start_memcached(extra=(), port=None):
    """A real memcached on loopback: on a free port, or on port (to restart
    one where it was; retried while the old one's port is still taken).
    Returns (Proc, port)."""
    exe = shutil.which("memcached") or "/usr/bin/memcached"
    fixed = port
    give_up = time.monotonic() + 10 * SLOW
    for _ in range(20):
        port = fixed or free_port()
        args = [exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                "-m", "64", "-t", "2"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        p = Proc(args + list(extra), name="memcached")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and p.alive():
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return p, port
            except OSError:
                time.sleep(0.05)
        p.cleanup()
        if fixed:
            if time.monotonic() > give_up:
                break
            time.sleep(0.2)
    raise AssertionError("could not start memcached%s" %
                         (" on port %d" % fixed if fixed else ""))


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict, lower-case names (last value wins)
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name.lower())


def request(port, method, path, body=None, headers=None, host="127.0.0.1",
            timeout=30, conn=None):
    """One HTTP/1.1 request. Pass conn (http.client.HTTPConnection) to reuse a
    keep-alive connection. body may be bytes, str or a JSON-able object."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(host, port, timeout=timeout * SLOW)
    h = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        return Response(r.status, hdrs, data)
    finally:
        if own:
            conn.close()


def raw(port, data, timeout=5, host="127.0.0.1", shutdown_write=False):
    """Sends raw bytes and reads until the peer closes or timeout.
    Returns (bytes received, closed_by_peer)."""
    s = socket.create_connection((host, port), timeout * SLOW)
    try:
        s.sendall(data)
        if shutdown_write:
            s.shutdown(socket.SHUT_WR)
        out = b""
        closed = False
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            out += chunk
        return out, closed
    finally:
        s.close()


def wait_http(port, path="/healthz", timeout=30, want=200):
    deadline = time.monotonic() + timeout * SLOW
    last = None
    while time.monotonic() < deadline:
        try:
            r = request(port, "GET", path, timeout=2)
            if r.status == want:
                return r
            last = r.status
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError("port %d%s not ready: %s" % (port, path, last))


_seeded = {}
_seed_lock = threading.Lock()


def seeded_db(scale=0.01, tmpdir=None):
    """Path to a fresh copy of a database seeded at `scale` (seeded once per
    test process with hs-seed, then copied so that tests never share
    writes)."""
    with _seed_lock:
        if scale not in _seeded:
            d = tempfile.mkdtemp(prefix="hs-seed-")
            path = os.path.join(d, "template.db")
            subprocess.run([binpath("hs-seed"), "--db", path, "--quiet",
                            "--scale", str(scale)], check=True,
                           stdout=subprocess.DEVNULL, timeout=300 * SLOW)
            _seeded[scale] = path
            atexit.register(shutil.rmtree, d, True)
    d = tmpdir or tempfile.mkdtemp(prefix="hs-db-")
    dst = os.path.join(d, "hs.db")
    shutil.copyfile(_seeded[scale], dst)
    return dst


def start_server(db, *extra, server_id=None, timeout=300):
    """hs-server on a free port over `db`. Returns (Proc, port)."""
    args = [binpath("hs-server"), "--listen", "127.0.0.1:0", "--db", db]
    if server_id:
        args += ["--id", server_id]
    p = Proc(args + list(extra), name=server_id or "hs-server",
             timeout=timeout)
    port = p.listen_port()
    wait_http(port)
    return p, port
