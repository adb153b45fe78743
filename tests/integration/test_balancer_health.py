"""hs-balancer health: a killed backend is skipped within one health
interval and comes back after `rise` good checks, while a client loop of
GETs sees no error; a backend failing its active check is taken out and
put back; a POST to a dying backend is answered 502 and never repeated."""

import threading
import time
import unittest

import hstest
from test_balancer_backend import Backend, Balancer, wait_until

INTERVAL_MS = 200
RISE = 2
FALL = 2


class Health(unittest.TestCase):
    def setUp(self):
        self.bs = [Backend("s%d" % i) for i in (1, 2, 3)]
        self.bal = Balancer(self.bs, [
            "--health-interval-ms", str(INTERVAL_MS), "--rise", str(RISE),
            "--fall", str(FALL), "--connect-timeout-ms", "500"])

    def tearDown(self):
        rc = self.bal.proc.stop()
        for b in self.bs:
            b.cleanup()
        self.assertEqual(rc, 0)

    def up(self, b):
        return self.bal.backend_stats(b.addr)["up"]

    def test_killed_backend_skipped_and_back(self):
        statuses, names = [], []
        stop = threading.Event()

        def client():
            deadline = time.monotonic() + 60 * hstest.SLOW
            conn = None
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    r = hstest.request(self.bal.port, "GET", "/", timeout=10)
                    statuses.append(r.status)
                    names.append(r.header("x-served-by"))
                except OSError as e:
                    statuses.append(repr(e))
                time.sleep(0.005)
            if conn:
                conn.close()

        t = threading.Thread(target=client)
        t.start()
        try:
            time.sleep(0.3)
            victim = self.bs[1]
            port = victim.port
            victim.kill()
            t_kill = time.monotonic()
            self.assertTrue(wait_until(lambda: not self.up(victim), 5))
            took = time.monotonic() - t_kill
            # Passive (connect refused) or active: within one interval,
            # plus slack for a busy machine.
            self.assertLess(took, (INTERVAL_MS / 1000.0) * 2 * hstest.SLOW +
                            0.5)
            n_before = len(names)
            time.sleep(0.5)
            self.assertNotIn("s2", names[n_before + 1:])
            victim.start(port)
            t_back = time.monotonic()
            self.assertTrue(wait_until(lambda: self.up(victim), 10))
            # Not before `rise` checks.
            self.assertGreaterEqual(time.monotonic() - t_back,
                                    (RISE - 1) * INTERVAL_MS / 1000.0 * 0.9)
            n_back = len(names)
            self.assertTrue(wait_until(lambda: "s2" in names[n_back:], 5))
        finally:
            stop.set()
            t.join(30)
        errors = [s for s in statuses if s != 200]
        self.assertEqual(errors, [], "client saw errors")
        self.assertGreater(len(statuses), 20)

    def test_failing_health_check_takes_out(self):
        victim = self.bs[0]
        victim.set_healthy(False)
        self.assertTrue(wait_until(lambda: not self.up(victim), 5))
        victim.clear()
        names = {self.bal.get("/").header("x-served-by") for _ in range(9)}
        self.assertEqual(names, {"s2", "s3"})
        self.assertEqual(victim.requests(), [])
        victim.set_healthy(True)
        self.assertTrue(wait_until(lambda: self.up(victim), 5))
        names = {self.bal.get("/").header("x-served-by") for _ in range(9)}
        self.assertEqual(names, {"s1", "s2", "s3"})

    def test_post_to_dying_backend_not_duplicated(self):
        for b in self.bs:
            b.clear()
        results = [hstest.request(self.bal.port, "POST", "/die",
                                  body=b"once") for _ in range(1)]
        self.assertEqual(results[0].status, 502)
        posts = [r for b in self.bs for r in b.requests()
                 if r["method"] == "POST"]
        self.assertEqual(len(posts), 1, posts)
        # The others keep serving; the dead one is taken out.
        for _ in range(6):
            self.assertEqual(self.bal.get("/").status, 200)

    def test_all_down_then_back(self):
        ports = [b.port for b in self.bs]
        for b in self.bs:
            b.kill()
        r = self.bal.get("/")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.header("retry-after"), "1")
        for b, p in zip(self.bs, ports):
            b.start(p)
        self.assertTrue(wait_until(lambda: self.bal.get("/").status == 200,
                                   10))


if __name__ == "__main__":
    unittest.main()
