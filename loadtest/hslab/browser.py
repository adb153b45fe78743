"""Headless Chromium, for the report's PNG exports and the dashboard's
tests: a screenshot from the command line, or a page driven over the
DevTools protocol (CDP) with a minimal standard-library WebSocket client.

  screenshot(url, png, 1280, 720)   one page to one PNG file; False when
                                    Chromium is missing or fails
  with Browser() as b:              a page over CDP: b.open(url),
      b.eval("1+1"), b.errors,      console errors and exceptions as they
      b.screenshot(path)            arrive, a screenshot
"""

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.parse

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-dev-shm-usage", "--mute-audio",
         "--force-device-scale-factor=1"]


def find_chromium():
    """The Chromium binary (Debian: chromium), or None.  HS_CHROMIUM
    overrides."""
    env = os.environ.get("HS_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for n in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(n)
        if p:
            return p
    return None


def screenshot(url, png, width=1280, height=720, timeout=60, wait_ms=1500):
    """Renders url (its scripts run for wait_ms of virtual time) into png;
    True when a non-empty file was written."""
    exe = find_chromium()
    if not exe:
        return False
    prof = tempfile.mkdtemp(prefix="hs-chromium-")
    try:
        subprocess.run([exe] + FLAGS + [
            "--user-data-dir=" + prof, "--window-size=%d,%d" % (width, height),
            "--virtual-time-budget=%d" % wait_ms,
            "--screenshot=" + os.path.abspath(png), url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(prof, ignore_errors=True)
    return os.path.isfile(png) and os.path.getsize(png) > 0


class _WebSocket:
    """Just enough of RFC 6455 for CDP: text frames, client masking."""

    def __init__(self, url, timeout=30):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (
                               u.path, u.hostname, u.port, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise OSError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise OSError("websocket handshake: %r" % head[:80])
        self.buf = head.split(b"\r\n\r\n", 1)[1]

    def send(self, text):
        data = text.encode()
        hdr = bytearray([0x81])
        n = len(data)
        if n < 126:
            hdr.append(0x80 | n)
        elif n < 65536:
            hdr.append(0x80 | 126)
            hdr += struct.pack(">H", n)
        else:
            hdr.append(0x80 | 127)
            hdr += struct.pack(">Q", n)
        mask = os.urandom(4)
        hdr += mask
        self.sock.sendall(bytes(hdr) + bytes(b ^ mask[i % 4]
                                             for i, b in enumerate(data)))

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise OSError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """The next text message (fragments joined)."""
        msg = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7f
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            if b1 & 0x80:
                mask = self._read(4)
                data = bytes(b ^ mask[i % 4]
                             for i, b in enumerate(self._read(n)))
            else:
                data = self._read(n)
            op = b0 & 0x0f
            if op == 8:
                raise OSError("websocket closed by peer")
            if op in (9, 10):
                continue          # ping/pong: Chromium does not need answers
            msg += data
            if b0 & 0x80:
                return msg.decode("utf-8", "replace")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Browser:
    """Headless Chromium with one page, driven over CDP."""

    def __init__(self, width=1280, height=720, timeout=60):
        self.exe = find_chromium()
        if not self.exe:
            raise OSError("chromium is not installed")
        self.width, self.height, self.timeout = width, height, timeout
        self.errors = []          # console errors, exceptions, failed loads
        self.proc = self.ws = None
        self._id = 0
        self.prof = tempfile.mkdtemp(prefix="hs-chromium-")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        self.proc = subprocess.Popen(
            [self.exe] + FLAGS + [
                "--user-data-dir=" + self.prof, "--remote-debugging-port=0",
                "--window-size=%d,%d" % (self.width, self.height),
                "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        portfile = os.path.join(self.prof, "DevToolsActivePort")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if os.path.exists(portfile):
                with open(portfile) as f:
                    lines = f.read().split("\n")
                if len(lines) >= 2 and lines[1]:
                    port = int(lines[0])
                    break
            if self.proc.poll() is not None:
                raise OSError("chromium exited (%d)" % self.proc.returncode)
            time.sleep(0.1)
        else:
            raise OSError("chromium did not open its debugging port")
        ws_url = self._page_ws(port, deadline)
        self.ws = _WebSocket(ws_url, self.timeout)
        for m in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(m)
        # The window's frame takes some of --window-size: the page itself
        # gets exactly width x height.
        self.call("Emulation.setDeviceMetricsOverride", width=self.width,
                  height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    def _page_ws(self, port, deadline):
        import urllib.request
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                        "http://127.0.0.1:%d/json/list" % port, timeout=5) as r:
                    for t in json.loads(r.read()):
                        if t.get("type") == "page":
                            return t["webSocketDebuggerUrl"]
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise OSError("no page target in chromium")

    def _event(self, msg):
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in (
                "error", "assert"):
            self.errors.append("console: " + " ".join(
                str(a.get("value", a.get("description", "")))
                for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append("exception: %s %s" % (
                d.get("text", ""),
                d.get("exception", {}).get("description", "")))
        elif m == "Log.entryAdded" and p.get("entry", {}).get(
                "level") == "error":
            e = p["entry"]
            self.errors.append("log: %s %s" % (e.get("text", ""),
                                               e.get("url", "")))

    def call(self, method, **params):
        self._id += 1
        my = self._id
        self.ws.send(json.dumps({"id": my, "method": method,
                                 "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise OSError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            self._event(msg)

    def pump(self, seconds):
        """Lets the page run for seconds, collecting its events."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.eval("0")
            time.sleep(0.2)

    def open(self, url, settle=1.0):
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.eval("document.readyState") == "complete":
                break
            time.sleep(0.1)
        self.pump(settle)

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr,
                      returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise OSError("eval %r: %s" % (expr, r["exceptionDetails"]))
        return r.get("result", {}).get("value")

    def screenshot(self, path):
        r = self.call("Page.captureScreenshot", format="png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))
        return path

    def close(self):
        if self.ws:
            try:
                self.call("Browser.close")
            except OSError:
                pass
            self.ws.close()
            self.ws = None
        if self.proc:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.prof, ignore_errors=True)
