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
import http.server
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
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

# Processes, ports and readiness: one copy, in loadtest/hslab.
sys.path.insert(0, os.path.join(SRC, "loadtest"))
import hslab  # noqa: E402
from hslab import free_port  # noqa: E402,F401


def binpath(name):
    return os.path.join(BIN, name)


class Proc(hslab.Proc):
    """A child process whose stdout is scanned for "listening on" lines and
    whose stderr goes to a log file kept for failure reports; killed after
    timeout seconds (scaled by SLOW) at the latest."""

    def __init__(self, args, name=None, timeout=300, env=None, cwd=None,
                 **kw):
        name = name or os.path.basename(args[0])
        self.logdir = tempfile.mkdtemp(prefix="hs-%s-" % name)
        self.errpath = os.path.join(self.logdir, "stderr.log")
        super().__init__(args, name=name, logpath=self.errpath,
                         stdout="lines", timeout=timeout * SLOW, env=env,
                         cwd=cwd, **kw)
        self._err = self._log

    def wait_line(self, pattern, timeout=30):
        """Waits for a stdout line matching the regex; returns the match."""
        try:
            return super().wait_line(pattern, timeout * SLOW)
        except hslab.LabError as e:
            raise AssertionError(str(e))

    def listen_port(self, what="listening on"):
        return int(self.wait_line(what + hslab.procs.LISTEN_RX).group(2))

    def stderr(self):
        return self.log_text()

    def stop(self, timeout=15, **kw):
        """SIGTERM, wait; SIGKILL if it does not exit. Returns exit status."""
        return super().stop(timeout * SLOW, **kw)

    def cleanup(self):
        self.kill()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.close()
        shutil.rmtree(self.logdir, ignore_errors=True)


atexit.register(hslab.kill_all)


def start_memcached(extra=(), port=None):
    """A real memcached on loopback: on a free port, or on port (to restart
    one where it was; retried while the old one's port is still taken).
    Returns (Proc, port)."""
    try:
        return hslab.start_memcached(port, mem_mb=64, threads=2, extra=extra,
                                     retry_s=10 * SLOW, make=Proc)
    except hslab.LabError as e:
        raise AssertionError(str(e))


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



def recv_until(sock, done):
    """Reads from sock until done(data) holds or the peer closes; returns
    what was read (the socket's own timeout bounds each wait)."""
    data = b""
    while not done(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class FakeHTTP:
    """A fake HTTP/1.1 peer on a free loopback port: serve(Handler) runs a
    threaded http.server with that handler until close() (or the end of a
    with block).  For peers whose misbehaviour is the point of a test."""

    class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def handle_error(self, request, client_address):
            # A client closing its keep-alive connection is normal.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    def serve(self, handler):
        self.httpd = self._Server(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

def wait_http(port, path="/healthz", timeout=30, want=200):
    try:
        return hslab.wait_http(port, path, timeout * SLOW, want=want,
                               get=lambda port, path: request(
                                   port, "GET", path, timeout=2))
    except hslab.LabError as e:
        raise AssertionError(str(e))


_seeded = {}
_seed_lock = threading.Lock()

# The database engine the tests run against: HS_TEST_DB=postgres makes
# seeded_db() hand out databases on a PostgreSQL cluster this process
# starts (one, on a free port, removed at exit) instead of SQLite files.
DB_ENGINE = os.environ.get("HS_TEST_DB", "sqlite")
_pg = []
_pg_count = [0]


def pg_cluster():
    """The test process's PostgreSQL cluster (an hslab.pg.Postgres),
    started on first use."""
    import hslab.pg
    with _seed_lock:
        if not _pg:
            _pg.append(hslab.pg.start_postgres(timeout=1800 * SLOW,
                                               db=None))
            atexit.register(_pg[0].stop)
        return _pg[0]


def _seeded_pg(scale):
    """A fresh PostgreSQL database seeded at scale: the first one is seeded
    with hs-seed as a template, the others are copies of it (CREATE
    DATABASE ... TEMPLATE, a file copy)."""
    pg = pg_cluster()
    tpl = "tpl_" + str(scale).replace(".", "_")
    with _seed_lock:
        if scale not in _seeded:
            pg.create_db(tpl)
            subprocess.run([binpath("hs-seed"), "--db", pg.url(tpl),
                            "--quiet", "--scale", str(scale)], check=True,
                           stdout=subprocess.DEVNULL, timeout=300 * SLOW)
            _seeded[scale] = tpl
        _pg_count[0] += 1
        name = "hs_%d" % _pg_count[0]
    pg.psql('CREATE DATABASE %s TEMPLATE %s' % (name, tpl))
    return pg.url(name)


def db_scalar(db, sql, *args):
    """The first column of the first row of sql (SQLite's ? placeholders,
    integer arguments) on the database seeded_db() returned, whichever
    the engine."""
    if db.startswith("postgres"):
        for a in args:
            sql = sql.replace("?", str(int(a)), 1)
        out = pg_cluster().psql(sql, db=db.rsplit("/", 1)[1])
        return int(out) if out.lstrip("-").isdigit() else out
    import sqlite3
    con = sqlite3.connect(db, timeout=10)
    try:
        row = con.execute(sql, args).fetchone()
        return row[0] if row else None
    finally:
        con.close()


def seeded_db(scale=0.01, tmpdir=None):
    """Path to a fresh copy of a database seeded at `scale` (seeded once per
    test process with hs-seed, then copied so that tests never share
    writes).  With HS_TEST_DB=postgres, the URL of a fresh database."""
    if DB_ENGINE == "postgres":
        return _seeded_pg(scale)
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
