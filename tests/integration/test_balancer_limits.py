"""hs-balancer under hostile or unlucky load, each bounded to a few seconds
on loopback: a client that pipelines requests and never reads its answers
(memory stays bounded, others are served), and a descriptor limit of 1,024
with 1,100 idle clients (no spinning, no log flood, excess clients answered
503, the healthy backend stays up)."""

import os
import resource
import socket
import sys
import time
import unittest

import hstest
from test_balancer_backend import wait_until

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


def start_balancer(args):
    """hs-balancer (args: the command, maybe behind a wrapper) on free
    ports.  Returns (Proc, port, admin port)."""
    proc = hstest.Proc(args + ["--listen", "127.0.0.1:0",
                               "--admin", "127.0.0.1:0"],
                       name="hs-balancer", timeout=120, env=sanitizer_env())
    return proc, proc.listen_port(), proc.listen_port("admin on")


class PipelineNoRead(unittest.TestCase):
    """One connection pipelines GETs and never reads: before, every answer
    was buffered (48 MB to 681 MB in 10 s); now reading its next request
    stops while its unread output is above the high-water mark."""

    @classmethod
    def setUpClass(cls):
        db = hstest.seeded_db(0.01)
        cls.srv, cls.srv_port = hstest.start_server(db, "--threads", "2")
        cls.proc, cls.port, _ = start_balancer(
            [hstest.binpath("hs-balancer"), "--backend",
             "127.0.0.1:%d" % cls.srv_port, "--health-interval-ms", "60000"])

    @classmethod
    def tearDownClass(cls):
        rc = cls.proc.stop()
        cls.srv.cleanup()
        assert rc == 0, "balancer exit status %s" % rc

    def get(self, path):
        return hstest.request(self.port, "GET", path, timeout=5)

    def test_unread_pipelined_answers_bounded(self):
        pid = self.proc.p.pid
        req = b"GET /products/1 HTTP/1.1\r\nHost: a\r\n\r\n" * 64
        s = socket.create_connection(("127.0.0.1", self.port))
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
                other = self.get("/products/2")
            time.sleep(0.05)
        peak = max(peak, status_kb(pid))
        print("\npipelined without reading: %d kB sent, %.1f s in all, "
              "balancer peak RSS %d kB" % (sent >> 10,
                                           time.monotonic() - t0, peak))
        self.assertLess(peak, RSS_LIMIT_KB)
        self.assertIsNotNone(other)
        self.assertEqual(other.status, 200)
        self.assertEqual(self.get("/products/3").status, 200)
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
        self.assertTrue(self.proc.alive())


# Runs argv[1:] with RLIMIT_NOFILE soft = hard = 1024, so that it cannot
# raise its own limit.
LIMIT_1024 = ("import os, resource, sys; "
              "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)); "
              "os.execv(sys.argv[1], sys.argv[1:])")


class DescriptorLimit(unittest.TestCase):
    """At a descriptor limit of 1,024, 1,100 idle clients made the balancer
    spin on accept (90% CPU), write 1.5 million identical log lines, serve
    nobody and mark a healthy backend down (its health checks could not
    get a socket)."""

    NIDLE = 1100

    def setUp(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard < self.NIDLE + 200:
            self.skipTest("RLIMIT_NOFILE hard limit %d too low" % hard)
        if soft < self.NIDLE + 200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE,
                            (soft, hard))
        db = hstest.seeded_db(0.01)
        self.srv, self.srv_port = hstest.start_server(db, "--threads", "1")
        self.addCleanup(self.srv.cleanup)

    def start_balancer(self):
        proc, port, admin = start_balancer(
            [sys.executable, "-c", LIMIT_1024,
             hstest.binpath("hs-balancer"), "--backend",
             "127.0.0.1:%d" % self.srv_port,
             "--health-interval-ms", "100", "--fall", "2"])
        self.addCleanup(proc.cleanup)
        return proc, port, admin

    def log_lines(self, proc):
        proc._err.flush()
        with open(proc.errpath, "rb") as f:
            return f.read().count(b"\n")

    def test_1100_idle_clients_at_1024_descriptors(self):
        proc, port, admin = self.start_balancer()
        pid = proc.p.pid
        self.assertEqual(hstest.request(port, "GET", "/json").status, 200)
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(self.NIDLE):
            socks.append(socket.create_connection(("127.0.0.1", port), 10))
        # Let it take in the flood, then watch it for 2 s.
        time.sleep(1.0 * hstest.SLOW)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(2.0)
        cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        lines = self.log_lines(proc)
        print("\n%d idle clients at 1024 descriptors: %.0f%% CPU, %d log "
              "lines" % (self.NIDLE, 100 * cpu, lines))
        self.assertLess(cpu, 0.5)
        self.assertLess(lines, 200, proc.stderr()[-2000:])
        # A new client gets an answer: served, or told to come back.
        r = hstest.request(port, "GET", "/json", timeout=5)
        self.assertIn(r.status, (200, 503))
        if r.status == 503:
            self.assertEqual(r.header("retry-after"), "1")
            self.assertEqual(r.json()["status"], 503)
        st = hstest.request(admin, "GET", "/stats", timeout=5).json()
        self.assertTrue(st["backends"][0]["up"], st)
        self.assertGreater(st["rejected"], 0, st)
        # Clients that were let in are served.
        socks[0].sendall(b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n")
        socks[0].settimeout(5 * hstest.SLOW)
        self.assertTrue(socks[0].recv(100).startswith(b"HTTP/1.1 200 "))
        # Once they go, the balancer serves new clients again.
        for s in socks:
            s.close()
        self.assertTrue(wait_until(
            lambda: hstest.request(port, "GET", "/json",
                                   timeout=5).status == 200, 10))
        self.assertLess(self.log_lines(proc), 200)
        self.assertTrue(proc.alive())


    def test_accept_rests_when_descriptors_run_out(self):
        # 600 inherited descriptors leave room for fewer clients than
        # --max-conns allows: accept fails with EMFILE, and the listener
        # must rest instead of spinning; health checks that find no
        # descriptor must not take the backend down.
        hog = ("import os; [os.set_inheritable(os.open('/dev/null', "
               "os.O_RDONLY), True) for _ in range(600)]; ")
        proc, port, admin = start_balancer(
            [sys.executable, "-c", hog + LIMIT_1024,
             hstest.binpath("hs-balancer"), "--backend",
             "127.0.0.1:%d" % self.srv_port,
             "--health-interval-ms", "100", "--fall", "2"])
        self.addCleanup(proc.cleanup)
        pid = proc.p.pid
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(self.NIDLE):
            socks.append(socket.create_connection(("127.0.0.1", port), 10))
        time.sleep(1.0 * hstest.SLOW)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(2.0)
        cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        lines = self.log_lines(proc)
        print("\n%d idle clients, 600 descriptors taken: %.0f%% CPU, %d log "
              "lines" % (self.NIDLE, 100 * cpu, lines))
        self.assertLess(cpu, 0.5)
        self.assertLess(lines, 200, proc.stderr()[-2000:])
        self.assertIn("pausing accepts", proc.stderr())
        for s in socks:
            s.close()
        self.assertTrue(wait_until(
            lambda: hstest.request(port, "GET", "/json",
                                   timeout=5).status == 200, 10))
        st = hstest.request(admin, "GET", "/stats", timeout=5).json()
        self.assertTrue(st["backends"][0]["up"], st)
        self.assertTrue(proc.alive())


if __name__ == "__main__":
    unittest.main()
