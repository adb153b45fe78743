"""A small self-naming HTTP/1.1 backend for the balancer tests, run as its
own process (so that tests can really kill it), plus helpers that start it
and hs-balancer.  It holds no test cases itself.

Run: python3 test_balancer_backend.py NAME LOGFILE
  prints "listening on 127.0.0.1:PORT"; every request it receives is
  appended to LOGFILE as one JSON line.  Paths that change its behaviour:
    /slow?ms=N     answer after N ms            /reset   close, no answer
    /chunked?n=K[&size=S] chunked answer      /close   no length, close
    /big?n=BYTES   a body of BYTES bytes        /echo    body echoed back
    /die           exit the process at once, no answer
    /status?code=N answer with status N (204/304 without a body)
  The X-Served-By header and the body name the instance.
"""

import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

import hstest


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test-backend"

    def log_message(self, *args):
        pass

    def _body(self):
        """The request body; self.complete tells whether it all came."""
        self.complete = True
        te = self.headers.get("Transfer-Encoding", "")
        if te.lower() == "chunked":
            out = b""
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        line = self.rfile.readline(1024)
                        if line in (b"\r\n", b""):
                            self.complete = line == b"\r\n"
                            return out
                out += self.rfile.read(size)
                self.rfile.readline(16)
        n = int(self.headers.get("Content-Length") or 0)
        out = self.rfile.read(n) if n else b""
        self.complete = len(out) == n
        return out

    def _record(self, body):
        rec = {"name": self.server.name, "method": self.command,
               "path": self.path, "headers": list(self.headers.items()),
               "body_len": len(body), "complete": self.complete,
               "body_sha": hashlib.sha256(body).hexdigest()}
        with self.server.lock:
            with open(self.server.logfile, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def _send(self, code, body, extra=()):
        self.send_response(code)
        self.send_header("X-Served-By", self.server.name)
        for k, v in extra:
            self.send_header(k, v)
        if code not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code not in (204, 304):
            self.wfile.write(body)

    def _handle(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        body = self._body()
        self._record(body)
        name = self.server.name.encode()
        if u.path == "/die":
            os._exit(3)
        if u.path == "/reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close_connection = True
            return
        if u.path == "/slow":
            time.sleep(int(q.get("ms", "1000")) / 1000.0)
        if u.path == "/healthz" and os.path.exists(self.server.logfile +
                                                   ".unhealthy"):
            return self._send(503, b"unhealthy")
        if u.path == "/echo":
            return self._send(200, body)
        if u.path == "/big":
            return self._send(200, b"x" * int(q.get("n", "1000000")))
        if u.path == "/status":
            return self._send(int(q.get("code", "200")), name)
        if u.path == "/close":
            self.send_response(200)
            self.send_header("X-Served-By", self.server.name)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(name + b" until close")
            self.close_connection = True
            return
        if u.path == "/chunked":
            self.send_response(200)
            self.send_header("X-Served-By", self.server.name)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            size = int(q.get("size", "0"))
            for i in range(int(q.get("n", "3"))):
                part = b"%s-%d;" % (name, i)
                part += b"." * max(0, size - len(part))
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        return self._send(200, name)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _handle
    do_PATCH = _handle


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def serve(name, logfile, port=0):
    srv = _Server(("127.0.0.1", port), _Handler)
    srv.name = name
    srv.logfile = logfile
    srv.lock = threading.Lock()
    print("listening on 127.0.0.1:%d" % srv.server_address[1], flush=True)
    srv.serve_forever()


class Backend:
    """A test backend process: .port, .name, .requests(), .kill()."""

    def __init__(self, name, port=0):
        self.name = name
        self.logdir = hstest.tempfile.mkdtemp(prefix="hs-be-")
        self.log = os.path.join(self.logdir, "requests.jsonl")
        open(self.log, "w").close()
        self.start()

    def start(self, port=0):
        """Starts (or restarts, on the same port when given) the process."""
        self.proc = hstest.Proc(
            [sys.executable, os.path.abspath(__file__), self.name, self.log,
             str(port)], name=self.name)
        self.port = self.proc.listen_port()

    def requests(self, health=False):
        """What the backend received (health checks left out unless asked)."""
        with open(self.log) as f:
            recs = [json.loads(line) for line in f if line.strip()]
        return [r for r in recs if health or r["path"] != "/healthz"]

    def clear(self):
        open(self.log, "w").close()

    def set_healthy(self, ok):
        flag = self.log + ".unhealthy"
        if ok and os.path.exists(flag):
            os.unlink(flag)
        elif not ok:
            open(flag, "w").close()

    def kill(self):
        self.proc.kill()
        self.proc.p.wait(10)

    def cleanup(self):
        self.proc.cleanup()
        hstest.shutil.rmtree(self.logdir, ignore_errors=True)

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port


class Balancer:
    """hs-balancer on free ports: .port, .admin, .proc."""

    def __init__(self, backends=(), extra=(), timeout=300):
        args = [hstest.binpath("hs-balancer"), "--listen", "127.0.0.1:0",
                "--admin", "127.0.0.1:0"]
        for b in backends:
            args += ["--backend", b if isinstance(b, str) else b.addr]
        self.proc = hstest.Proc(args + list(extra), name="hs-balancer",
                                timeout=timeout)
        self.port = self.proc.listen_port()
        self.admin = self.proc.listen_port("admin on")

    def get(self, path="/", **kw):
        return hstest.request(self.port, "GET", path, **kw)

    def stats(self):
        return hstest.request(self.admin, "GET", "/stats").json()

    def backend_stats(self, addr):
        for b in self.stats()["backends"]:
            if b["name"] == addr:
                return b
        raise KeyError(addr)


def wait_until(pred, timeout=10, step=0.02):
    deadline = time.monotonic() + timeout * hstest.SLOW
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3
          else 0)
