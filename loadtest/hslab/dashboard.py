"""The live dashboard: a small threaded HTTP server (standard library) over
one Sampler.

  /             the page (loadtest/dashboard/index.html)
  /static/NAME  its script and style from loadtest/dashboard/, and
                /static/chart.js: Chart.js from the local disk (Debian
                libjs-chart.js), so the page works with no network
  /data.json    {"now", "step", "series": {component: {metric:
                [[t, value], ...]}}}: the sampler's last 120 s
  /events       Server-Sent Events: once a second {"t", "step", "latest":
                {component: {metric: value}}}, the newest point of each
  POST /next    step-through mode (walkthrough --interactive): load the
  POST /quit    step waiting, or stop everything; data.json and /events
                then carry "interactive": true and "waiting": "step 0
                (1/2)" or ""

Dashboard(sampler, host, port).start() ... stop().  The sampler is shared
with whoever records the series (stack.py's `up`, the walkthrough), so the
dashboard never polls a component itself.
"""

import http.server
import json
import os
import socketserver
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE_DIR = os.path.join(os.path.dirname(HERE), "dashboard")

# Where Debian's libjs-chart.js puts Chart.js (3.x: chart.min.js; newer
# packagings name it chart.umd.js).  HS_CHARTJS overrides.
CHARTJS_DIRS = ("/usr/share/javascript/chart.js",
                "/usr/share/nodejs/chart.js/dist")
CHARTJS_NAMES = ("chart.umd.min.js", "chart.umd.js", "chart.min.js",
                 "chart.js")

TYPES = {".html": "text/html; charset=utf-8",
         ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml", ".png": "image/png"}


def chartjs_path():
    """The local Chart.js file, or None when it is not installed."""
    env = os.environ.get("HS_CHARTJS")
    if env:
        return env if os.path.isfile(env) else None
    for d in CHARTJS_DIRS:
        for n in CHARTJS_NAMES:
            p = os.path.join(d, n)
            if os.path.isfile(p):
                return p
    return None


def parse_hostport(text, default_port=8099):
    """"HOST:PORT", ":PORT" or "PORT" -> (host, port); ValueError."""
    host, _, port = text.rpartition(":")
    if not _:
        host, port = "", text
    port = int(port or default_port)
    if not 0 <= port <= 65535:
        raise ValueError("port %d out of range" % port)
    return host or "127.0.0.1", port


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Dashboard:
    """Serves the page and the sampler's series until stop()."""

    def __init__(self, sampler, host="127.0.0.1", port=8099,
                 interval=1.0):
        self.sampler, self.host, self.port = sampler, host, port
        self.interval = interval
        self._stop = threading.Event()
        self._httpd = None
        self._thread = None
        self.pauser = None   # hslab.pauser.Pauser in step-through mode

    def control(self):
        p = self.pauser
        return ({"interactive": True, "waiting": p.waiting} if p else
                {"interactive": False, "waiting": ""})

    @property
    def url(self):
        return "http://%s:%d/" % (self.host, self.port)

    def step(self):
        # The label the sampler writes into series.csv; read under its lock.
        lock = getattr(self.sampler, "_lock", None)
        if lock is None:
            return ""
        with lock:
            return getattr(self.sampler, "_step", "") or ""

    def data(self):
        series = self.sampler.series() if self.sampler else {}
        return dict(self.control(), now=time.time(), step=self.step(),
                    series={c: {m: [[round(t, 3), v] for t, v in pts]
                                for m, pts in ms.items()}
                            for c, ms in series.items()})

    def latest(self):
        series = self.sampler.series() if self.sampler else {}
        out, newest = {}, 0.0
        for c, ms in series.items():
            out[c] = {}
            for m, pts in ms.items():
                if pts:
                    out[c][m] = pts[-1][1]
                    newest = max(newest, pts[-1][0])
        return dict(self.control(), t=newest or time.time(),
                    step=self.step(), latest=out)

    def start(self):
        handler = _handler(self)
        self._httpd = _Server((self.host, self.port), handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        daemon=True, name="hslab-dashboard")
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread:
            self._thread.join(5)


def _handler(dash):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "hs-dashboard"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: the stack logs enough
            pass

        def _send(self, status, body, ctype="application/json"):
            if isinstance(body, str):
                body = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status, msg):
            self._send(status, json.dumps({"error": msg, "status": status}))

        def _file(self, path):
            try:
                with open(path, "rb") as f:
                    body = f.read()
            except OSError:
                return self._error(404, "not found")
            ext = os.path.splitext(path)[1]
            self._send(200, body, TYPES.get(ext, "application/octet-stream"))

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                return self._file(os.path.join(PAGE_DIR, "index.html"))
            if path == "/static/chart.js":
                p = chartjs_path()
                if not p:
                    return self._error(404, "Chart.js is not installed "
                                       "(./hammerstack setup)")
                return self._file(p)
            if path.startswith("/static/"):
                name = path[len("/static/"):]
                if "/" in name or name.startswith("."):
                    return self._error(404, "not found")
                return self._file(os.path.join(PAGE_DIR, name))
            if path == "/data.json":
                return self._send(200, json.dumps(dash.data()))
            if path == "/events":
                return self._events()
            return self._error(404, "not found")

        def do_POST(self):
            n = self.headers.get("Content-Length") or "0"
            if not n.isdigit() or int(n) > 4096:
                return self._error(400, "body too large")
            self.rfile.read(int(n))
            # Another site open in the speaker's browser must not step the
            # talk: a browser names the page's origin on a cross-site POST.
            origin = self.headers.get("Origin")
            host = self.headers.get("Host", "")
            if origin and origin != "http://" + host:
                return self._error(403, "cross-origin request")
            path = self.path.split("?", 1)[0]
            if path not in ("/next", "/quit"):
                return self._error(404, "not found")
            p = dash.pauser
            if p is None:
                return self._error(404, "not in step-through mode "
                                   "(walkthrough --interactive)")
            if path == "/quit":
                p.quit()
                return self._send(200, json.dumps({"stopping": True}))
            label = p.waiting
            if not p.next():
                return self._error(409, "no step is waiting")
            return self._send(200, json.dumps({"next": label}))

        def _events(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                while not dash._stop.is_set():
                    msg = "data: %s\n\n" % json.dumps(dash.latest())
                    self.wfile.write(msg.encode())
                    self.wfile.flush()
                    dash._stop.wait(dash.interval)
            except (OSError, ValueError):
                pass     # the page went away

    return Handler


def serve(sampler, spec, out=sys.stderr, say=False):
    """Starts a Dashboard on spec ("HOST:PORT"); None (said once on out)
    when it cannot listen: the stack runs on without it.  say: print its
    URL on out."""
    try:
        host, port = parse_hostport(spec)
        d = Dashboard(sampler, host, port).start()
    except (OSError, ValueError) as e:
        out.write("dashboard: not served on %s: %s\n" % (spec, e))
        return None
    if not chartjs_path():
        out.write("dashboard: Chart.js is not installed (./hammerstack "
                  "setup installs libjs-chart.js); the page shows numbers "
                  "only\n")
    if say:
        out.write("dashboard: %s\n" % d.url)
    return d
