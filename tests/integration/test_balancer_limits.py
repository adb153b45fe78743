"""hs-balancer under hostile or unlucky load, each bounded to a few seconds
on loopback: a client that pipelines requests and never reads its answers
(memory stays bounded, others are served), and a descriptor limit of 1,024
with 1,100 idle clients (no spinning, no log flood, excess clients answered
503, the healthy backend stays up)."""

import os
import resource
import socket
import time
import unittest

import hstest
from test_balancer_backend import Backend, Balancer, wait_until

RSS_LIMIT_KB = 64 * 1024


def status_kb(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sanitizer_env():
    """A small ASan quarantine, so that RSS measures what we keep, not what
    the sanitizer holds back after free (256 MB by default)."""
    if not hstest.SANITIZE:
        return None
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") +
            "quarantine_size_mb=4:thread_local_quarantine_size_kb=64"}


class PipelineNoRead(unittest.TestCase):
    """One connection pipelines GETs and never reads: before, every answer
    was buffered (48 MB to 681 MB in 10 s); now reading its next request
    stops while its unread output is above the high-water mark."""

    @classmethod
    def setUpClass(cls):
        db = hstest.seeded_db(0.01)
        cls.srv, cls.srv_port = hstest.start_server(db, "--threads", "2")
        cls.bal = Balancer(["127.0.0.1:%d" % cls.srv_port],
                           ["--health-interval-ms", "60000"])

    @classmethod
    def tearDownClass(cls):
        rc = cls.bal.proc.stop()
        cls.srv.cleanup()
        assert rc == 0, "balancer exit status %s" % rc

    def test_unread_pipelined_answers_bounded(self):
        pid = self.bal.proc.p.pid
        req = b"GET /products/1 HTTP/1.1\r\nHost: a\r\n\r\n" * 64
        s = socket.create_connection(("127.0.0.1", self.bal.port))
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        sent, peak, stalled_since = 0, 0, None
        other = None
        t0 = time.monotonic()
        # At most 4 MB of requests (each answer is ~1 kB: 100 MB of
        # answers), sent within 4 s; the kernel's buffers take most of it
        # at once, and the balancer works through them afterwards.
        while sent < (4 << 20) and time.monotonic() - t0 < 4:
            try:
                sent += s.send(req)
                stalled_since = None
            except BlockingIOError:
                now = time.monotonic()
                stalled_since = stalled_since or now
                if now - stalled_since > 0.5:
                    break
                time.sleep(0.01)
        # Then 4 s of watching while the client still reads nothing.
        t1 = time.monotonic()
        while time.monotonic() - t1 < 4:
            peak = max(peak, status_kb(pid))
            if peak > RSS_LIMIT_KB:
                break
            if other is None and time.monotonic() - t1 > 0.5:
                # Another client is served meanwhile.
                other = self.bal.get("/products/2", timeout=5)
            time.sleep(0.05)
        peak = max(peak, status_kb(pid))
        print("\npipelined without reading: %d kB sent in %.1f s, "
              "balancer peak RSS %d kB" % (sent >> 10,
                                           time.monotonic() - t0, peak))
        self.assertLess(peak, RSS_LIMIT_KB)
        self.assertIsNotNone(other)
        self.assertEqual(other.status, 200)
        self.assertEqual(self.bal.get("/products/3", timeout=5).status, 200)
        # The flooding client still gets its answers, in order, when it
        # reads at last.
        s.setblocking(True)
        s.settimeout(5 * hstest.SLOW)
        got = b""
        while len(got) < 65536:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got[:100])
        self.assertTrue(self.bal.proc.alive())


if __name__ == "__main__":
    unittest.main()
