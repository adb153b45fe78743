"""A fake memcached for fault tests: a small, correct text-protocol server
(get, gets, add, set, cas, delete) whose answers can be replaced, per
command, by scripted bad replies.

    fake = FakeMemcached()          # listens on a free loopback port
    fake.script("add", b"END\\r\\n")  # every add is answered END
    fake.script("get", fake_value)  # a callable: (fake, cmd, args) -> bytes
    fake.good()                     # behave again
    fake.close()

A scripted reply may be bytes (sent as they are), HANG (read, never answer),
CLOSE (close the connection without a word), a 1-tuple of bytes (sent,
then the connection is closed) or a list of bytes (sent one by one,
TRICKLE_S apart); a callable returns one of those.  Commands are counted in fake.calls.
"""

import socket
import threading
import time

HANG = object()
CLOSE = object()
TRICKLE_S = 0.03


class FakeMemcached:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = {}          # key -> (flags, value, cas)
        self.expires = {}        # key -> time.monotonic() deadline
        self.next_cas = 1
        self.scripts = {}        # command -> reply
        self.calls = {}
        self.conns = []
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.closed = False
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    # --- control ---------------------------------------------------------

    def script(self, cmd, reply):
        with self.lock:
            self.scripts[cmd] = reply

    def good(self):
        with self.lock:
            self.scripts.clear()

    def drop_clients(self):
        """Closes every open client connection (a restart, for the client)."""
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def close(self):
        self.closed = True
        try:
            self.ls.close()
        except OSError:
            pass
        self.drop_clients()

    def put(self, key, flags, value):
        with self.lock:
            self.items[key] = (flags, value, self.next_cas)
            self.next_cas += 1

    # --- server ----------------------------------------------------------

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,),
                             daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                line, buf = buf.split(b"\r\n", 1)
                parts = line.split()
                if not parts:
                    continue
                cmd = parts[0].decode("latin-1")
                data = None
                if cmd in ("set", "add", "cas", "replace"):
                    n = int(parts[4])
                    while len(buf) < n + 2:
                        chunk = c.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    data, buf = buf[:n], buf[n + 2:]
                with self.lock:
                    self.calls[cmd] = self.calls.get(cmd, 0) + 1
                    reply = self.scripts.get(cmd)
                if callable(reply):
                    reply = reply(self, cmd, parts[1:])
                if reply is None:
                    reply = self._answer(cmd, parts[1:], data)
                if reply is HANG:
                    continue
                if reply is CLOSE:
                    return
                if isinstance(reply, tuple):
                    c.sendall(reply[0])
                    return
                if isinstance(reply, list):
                    for chunk in reply:
                        c.sendall(chunk)
                        time.sleep(TRICKLE_S)
                    continue
                if reply:
                    c.sendall(reply)
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _answer(self, cmd, args, data):
        noreply = args and args[-1] == b"noreply"
        with self.lock:
            out = self._do(cmd, args, data)
        return b"" if noreply else out

    def _do(self, cmd, args, data):
        now = time.monotonic()
        for k in [k for k, t in self.expires.items() if t <= now]:
            del self.expires[k]
            self.items.pop(k, None)
        if cmd in ("get", "gets"):
            out = b""
            for k in args:
                it = self.items.get(k)
                if it is None:
                    continue
                flags, v, cas = it
                out += b"VALUE %s %d %d" % (k, flags, len(v))
                if cmd == "gets":
                    out += b" %d" % cas
                out += b"\r\n" + v + b"\r\n"
            return out + b"END\r\n"
        if cmd in ("set", "add", "cas", "replace"):
            k, flags = args[0], int(args[1])
            it = self.items.get(k)
            if cmd == "add" and it is not None:
                return b"NOT_STORED\r\n"
            if cmd == "cas":
                if it is None:
                    return b"NOT_FOUND\r\n"
                if it[2] != int(args[4]):
                    return b"EXISTS\r\n"
            self.items[k] = (flags, data, self.next_cas)
            self.next_cas += 1
            exp = int(args[2])
            if exp > 0:
                self.expires[k] = now + exp
            else:
                self.expires.pop(k, None)
            return b"STORED\r\n"
        if cmd == "delete":
            if self.items.pop(args[0], None) is None:
                return b"NOT_FOUND\r\n"
            return b"DELETED\r\n"
        if cmd == "version":
            return b"VERSION 1.6.18\r\n"
        return b"ERROR\r\n"
