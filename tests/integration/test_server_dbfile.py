"""hs-server and its database file: a file replaced (hs-seed --force, a
restore by rename) or removed under a running server never takes an
acknowledged write with it (each write is refused with 503 or lands in the
file at the path, read back with plain sqlite3 after the server stopped),
/healthz says so and recovers; and --durability sets PRAGMA synchronous."""

import os
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest

import hstest

SERVER = hstest.binpath("hs-server")
SEED = hstest.binpath("hs-seed")


def hs_seed(path, *extra):
    subprocess.run([SEED, "--db", path, "--quiet", "--scale", "0.01",
                    "--seed", "7"] + list(extra), check=True,
                   stdout=subprocess.DEVNULL, timeout=120 * hstest.SLOW)


def remove_side_files(path):
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)


def replace_by_seed(path):
    hs_seed(path, "--force")


def replace_by_rename(path):
    """A restore: a complete database renamed over the path, its stale
    -wal and -shm removed first (what hs-seed --force does too)."""
    new = path + ".restore"
    hs_seed(new)
    remove_side_files(path)
    os.rename(new, path)


def read_rows(path, ids):
    """{id: (stock, version)} read with plain sqlite3, not through hs-server."""
    con = sqlite3.connect(path, timeout=10)
    try:
        q = "SELECT id, stock, version FROM products WHERE id IN (%s)" % \
            ",".join("?" * len(ids))
        return {r[0]: (r[1], r[2]) for r in con.execute(q, list(ids))}
    finally:
        con.close()


class ReplacedFileTest(unittest.TestCase):
    WRITERS = 4
    PER_WRITER = 6
    ATTEMPTS = 40

    def check_refusal(self, r):
        """Anything but a 200 must be a well-formed 503 (a refusal)."""
        self.assertEqual(r.status, 503, r.body)
        self.assertEqual(r.header("retry-after"), "1")
        self.assertEqual(r.json()["status"], 503)

    def warm_up(self, port):
        """Writes from several connections at once, so that every thread
        has its connection open on the file that is about to go."""
        def one(t):
            for i in range(8):
                r = hstest.request(port, "PUT", "/products/%d" % (900 + t),
                                   {"stock": i})
                self.assertEqual(r.status, 200, r.body)

        threads = [threading.Thread(target=one, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60 * hstest.SLOW)

    def write_until_acked(self, port, ids):
        """PUTs each id (a fresh connection per request, so they spread
        over the threads) until one is acknowledged.  Returns {id: number
        of 200s} and the number of refusals seen."""
        acked = {pid: 0 for pid in ids}
        refused = [0]
        lock = threading.Lock()
        errors = []

        def writer(mine):
            try:
                for pid in mine:
                    for _ in range(self.ATTEMPTS):
                        r = hstest.request(port, "PUT", "/products/%d" % pid,
                                           {"stock": 50000 + pid})
                        if r.status == 200:
                            with lock:
                                acked[pid] += 1
                            break
                        self.check_refusal(r)
                        with lock:
                            refused[0] += 1
                        time.sleep(0.02)
            except Exception as e:  # reported in the main thread
                errors.append(e)

        chunks = [ids[i::self.WRITERS] for i in range(self.WRITERS)]
        threads = [threading.Thread(target=writer, args=(c,)) for c in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120 * hstest.SLOW)
        if errors:
            raise errors[0]
        return acked, refused[0]

    def check_landed(self, db, acked):
        """Every acknowledged write is in the file at the path (which was
        seeded with version 1 everywhere), and no refused one is."""
        rows = read_rows(db, list(acked))
        for pid, n in acked.items():
            self.assertEqual(n, 1, "product %d never acknowledged" % pid)
            self.assertEqual(rows[pid], (50000 + pid, 2),
                             "product %d: acknowledged write lost" % pid)

    def run_replace(self, replace, extra):
        d = tempfile.mkdtemp(prefix="hs-dbfile-")
        db = hstest.seeded_db(0.01, tmpdir=d)
        p, port = hstest.start_server(db, *extra)
        try:
            self.warm_up(port)
            replace(db)
            acked, refused = self.write_until_acked(
                port, list(range(101, 101 + self.WRITERS * self.PER_WRITER)))
            self.assertEqual(p.stop(), 0)
            self.check_landed(db, acked)
            # At least the threads that had written before refused once.
            self.assertGreaterEqual(refused, 1)
            self.assertIn("deleted or replaced", p.stderr())
            # The rows the warm-up wrote belong to the old file.
            self.assertEqual(read_rows(db, [900])[900][1], 1)
        finally:
            p.cleanup()

    def test_seed_force_two_loops(self):
        self.run_replace(replace_by_seed, ("--threads", "2"))

    def test_rename_two_loops(self):
        self.run_replace(replace_by_rename, ("--threads", "2"))

    def test_seed_force_db_threads(self):
        self.run_replace(replace_by_seed, ("--threads", "1",
                                           "--db-threads", "2"))

    def test_seed_force_while_writing(self):
        """hs-seed --force while writes are in flight: a write acknowledged
        before the swap may go with the old file (the restore replaced it),
        but every write sent after hs-seed returned and acknowledged is in
        the new file, and a write is never applied twice."""
        d = tempfile.mkdtemp(prefix="hs-dbfile-")
        db = hstest.seeded_db(0.01, tmpdir=d)
        p, port = hstest.start_server(db, "--threads", "2")
        results = []  # (product, sent at, status)
        lock = threading.Lock()
        swapped = [None]
        stop = threading.Event()

        def writer(t):
            pid = 300 + t
            while not stop.is_set() and pid < 1000:
                t0 = time.monotonic()
                r = hstest.request(port, "PUT", "/products/%d" % pid,
                                   {"stock": 50000 + pid})
                if r.status != 200:
                    self.check_refusal(r)
                with lock:
                    results.append((pid, t0, r.status))
                pid += 4
                time.sleep(0.01)  # products last past the swap

        try:
            self.warm_up(port)
            threads = [threading.Thread(target=writer, args=(t,))
                       for t in range(4)]
            for t in threads:
                t.start()
            time.sleep(0.2)
            replace_by_seed(db)
            swapped[0] = time.monotonic()
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(60 * hstest.SLOW)
            self.assertEqual(p.stop(), 0)
            rows = read_rows(db, [r[0] for r in results])
            after = [r for r in results if r[1] > swapped[0]]
            self.assertTrue(after)
            for pid, t0, status in results:
                stock, version = rows[pid]
                if status == 200 and t0 > swapped[0]:
                    self.assertEqual((stock, version), (50000 + pid, 2),
                                     "product %d: acknowledged write lost"
                                     % pid)
                elif status != 200:
                    # Refused: never applied to the file at the path.
                    self.assertEqual(version, 1, pid)
                else:
                    self.assertIn(version, (1, 2), pid)
        finally:
            stop.set()
            p.cleanup()

    def test_removed_then_put_back(self):
        """rm: writes are refused, no empty database appears at the path,
        and once a file is put back writes land in it."""
        d = tempfile.mkdtemp(prefix="hs-dbfile-")
        db = hstest.seeded_db(0.01, tmpdir=d)
        p, port = hstest.start_server(db, "--threads", "2")
        try:
            self.warm_up(port)
            os.unlink(db)
            for i in range(10):
                r = hstest.request(port, "PUT", "/products/5",
                                   {"stock": 7})
                self.check_refusal(r)
            r = hstest.request(port, "GET", "/healthz")
            self.assertEqual(r.status, 503, r.body)
            self.assertFalse(os.path.exists(db))
            # hs-seed removes the old file's -wal and -shm before linking.
            hs_seed(db)
            acked, _ = self.write_until_acked(port, list(range(201, 209)))
            hstest.wait_http(port, "/healthz")
            self.assertEqual(p.stop(), 0)
            self.check_landed(db, acked)
        finally:
            p.cleanup()

    def test_healthz_not_ready_until_reopened(self):
        d = tempfile.mkdtemp(prefix="hs-dbfile-")
        db = hstest.seeded_db(0.01, tmpdir=d)
        p, port = hstest.start_server(db, "--threads", "1")
        try:
            self.assertEqual(hstest.request(port, "GET", "/healthz").status,
                             200)
            replace_by_seed(db)
            r = hstest.request(port, "GET", "/healthz")
            self.assertEqual(r.status, 503, r.body)
            self.assertEqual(r.json()["db"], "error")
            self.assertEqual(r.header("retry-after"), "1")
            # The connection was dropped; the next check opens the new file.
            r = hstest.request(port, "GET", "/healthz")
            self.assertEqual(r.status, 200, r.body)
            r = hstest.request(port, "PUT", "/products/3", {"stock": 4242})
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(p.stop(), 0)
            self.assertEqual(read_rows(db, [3])[3], (4242, 2))
        finally:
            p.cleanup()


class DurabilityTest(unittest.TestCase):
    def test_bad_values_exit_2(self):
        for args in (["--durability", "fast"], ["--durability", ""],
                     ["--durability", "FULL"], ["--durability"]):
            with self.subTest(args=args):
                r = subprocess.run([SERVER] + args, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL,
                                   timeout=30 * hstest.SLOW)
                self.assertEqual(r.returncode, 2, r.stderr)
                err = r.stderr.decode().strip()
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertTrue(err.startswith("hs-server: "), err)

    def test_applied(self):
        """/stats reads PRAGMA synchronous back from the connection."""
        self.assertIn("--durability", subprocess.run(
            [SERVER, "--help"], stdout=subprocess.PIPE,
            timeout=30 * hstest.SLOW).stdout.decode())
        for extra, want in (((), "full"), (("--durability", "normal"),
                                           "normal"),
                            (("--durability", "full"), "full")):
            with self.subTest(extra=extra):
                db = hstest.seeded_db(0.01)
                p, port = hstest.start_server(db, "--threads", "1", *extra)
                try:
                    s = hstest.request(port, "GET", "/stats").json()
                    self.assertEqual(s["db"]["durability"], want)
                    self.assertEqual(p.stop(), 0)
                finally:
                    p.cleanup()


if __name__ == "__main__":
    unittest.main()
