"""`./hammerstack up --hosts`: every component in its own network namespace
on a private bridge, run for real.  What is checked is what a user relies
on: each host exists with its own address, requests to the printed
balancer address cross the veths, a partitioned server is marked down
and the others carry on, heal brings it back, and nothing is left behind
(namespaces, veths, the bridge): after down, after a SIGKILL of `up` (the
watchdog), and for a dead stack's leftovers (the sweep of status/down).

Each test uses a subnet of its own, picked among those this machine does
not route, and sends traffic only there and to loopback.  Root only:
namespaces cannot be made otherwise (the non-root message is tested by
dropping to nobody)."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import hstest
from hslab import http_get, netns

STACK = os.path.join(hstest.SRC, "loadtest", "stack.py")
ROOT = os.geteuid() == 0 and netns.problem() is None


def wait_until(cond, timeout):
    deadline = time.monotonic() + timeout * hstest.SLOW
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def free_subnet():
    """A 10.213.X.0/24 that this machine does not route."""
    routed = netns.routed_subnets()
    for _ in range(100):
        text = "10.213.%d.0/24" % random.randrange(100, 250)
        if not any(netns.ipaddress.ip_network(text).overlaps(r)
                   for r in routed):
            return text
    raise AssertionError("no free 10.213.X.0/24")


def namespaces():
    return set(os.listdir(netns.NETNS_DIR)) \
        if os.path.isdir(netns.NETNS_DIR) else set()


def records():
    return {r["record"] for r in netns.records()}


def links():
    return set(os.listdir("/sys/class/net"))


def counter(link, what):
    with open("/sys/class/net/%s/statistics/%s" % (link, what)) as f:
        return int(f.read())


def psql(url, sql):
    import hslab.pg
    r = subprocess.run([os.path.join(hslab.pg.pg_bindir(), "psql"), "-X",
                        "-A", "-t", "-d", url, "-c", sql],
                       capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def left_over(rec):
    """What of the record rec still exists: namespaces, links, the
    record file."""
    out = [h["netns"] for h in rec["hosts"].values()
           if h["netns"] in namespaces()]
    out += [n for n in [h["veth"] for h in rec["hosts"].values()] +
            [rec["bridge"]] if n in links()]
    if os.path.exists(rec["record"]):
        out.append(rec["record"])
    return out


@unittest.skipUnless(ROOT, "network namespaces need root and iproute2")
class HostsBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = hstest.seeded_db(0.01)

    def setUp(self):
        self.run_dir = tempfile.mkdtemp(prefix="hs-run-")
        self.env = dict(os.environ, HS_RUN_DIR=self.run_dir)
        self.subnet = free_subnet()
        self.dash = hstest.free_port()
        self.args = ["--hosts", "--subnet", self.subnet, "--servers", "2",
                     "--db", self.db, "--threads", "2",
                     "--dashboard", "127.0.0.1:%d" % self.dash]

    def tearDown(self):
        self.stack("down")
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def stack(self, *args, timeout=120):
        return subprocess.run([sys.executable, STACK] + list(args),
                              env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              timeout=timeout * hstest.SLOW)

    def state(self):
        with open(os.path.join(self.run_dir, "stack.json")) as f:
            return json.load(f)

    def check_hosts(self, st):
        """Every host exists as promised; returns the record."""
        rec = st["hosts"]
        bridge = rec["bridge"]
        self.assertIn(bridge, links())
        r = subprocess.run(["ip", "-br", "-4", "addr", "show", bridge],
                           capture_output=True, text=True)
        self.assertIn(rec["bridge_addr"] + "/24", r.stdout)
        for c in st["children"]:
            h = rec["hosts"][c["host"]]
            self.assertEqual(h["addr"], c["addr"])
            self.assertIn(h["netns"], namespaces())
            self.assertEqual(os.path.basename(os.readlink(
                "/sys/class/net/%s/master" % h["veth"])), bridge)
            # The recorded PID is the real process, and it runs in its
            # namespace (not ip, not a shell in front of it).
            self.assertEqual(
                os.stat("/proc/%d/ns/net" % c["pid"]).st_ino,
                os.stat(os.path.join(netns.NETNS_DIR, h["netns"])).st_ino,
                c["name"])
            r = subprocess.run(["ip", "-n", h["netns"], "-br", "-4", "addr"],
                               capture_output=True, text=True)
            self.assertIn(h["addr"] + "/24", r.stdout)
            self.assertRegex(r.stdout, r"(?m)^lo\s+UNKNOWN")
            r = subprocess.run(["ip", "-n", h["netns"], "route"],
                               capture_output=True, text=True)
            self.assertNotIn("default", r.stdout)   # no way out
        return rec


class HostsTest(HostsBase):
    def test_up_partition_heal_down(self):
        r = self.stack("up", "--detach", *self.args)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("--db postgres", r.stderr)   # the SQLite note
        st = self.state()
        rec = self.check_hosts(st)
        bal = rec["hosts"]["balancer"]["addr"]
        self.assertIn("http://%s:8080/" % bal, r.stdout)
        self.assertEqual(sorted(rec["hosts"]), ["balancer", "memcached1",
                                                "server1", "server2"])

        # Requests to the printed address reach both servers, across the
        # veths of the balancer and of each server.
        veths = {n: rec["hosts"][n]["veth"]
                 for n in ("balancer", "server1", "server2")}
        before = {n: (counter(v, "rx_bytes"), counter(v, "tx_bytes"))
                  for n, v in veths.items()}
        seen = set()
        for i in range(20):
            resp = hstest.request(8080, "GET", "/products/%d" % (i + 1),
                                  host=bal)
            self.assertEqual(resp.status, 200)
            seen.add(resp.header("X-Served-By"))
        self.assertEqual(seen, {"s1", "s2"})
        for n, v in veths.items():
            self.assertGreater(counter(v, "rx_bytes"), before[n][0], n)
            self.assertGreater(counter(v, "tx_bytes"), before[n][1], n)

        # The live dashboard's sampler reads each component at its own
        # address.
        def sampled():
            _, _, body = http_get(self.dash, "/data.json", 5)
            series = json.loads(body)["series"]
            return all(any(v for _, v in series.get(c, {}).get(m, []))
                       for c, m in (("hs-server-1", "requests"),
                                    ("hs-server-2", "requests"),
                                    ("memcached-1", "cmd_get")))
        self.assertTrue(wait_until(sampled, 15))

        def backend_up(name):
            status, _, body = http_get(8090, "/stats", 5 * hstest.SLOW, bal)
            self.assertEqual(status, 200)
            addr = "%s:%d" % (rec["hosts"][name]["addr"],
                              8081 if name == "server1" else 8082)
            for b in json.loads(body)["backends"]:
                if b["name"] == addr:
                    return b["up"]
            self.fail("no backend %s in /stats" % addr)

        r = self.stack("partition", "nosuchhost")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no host 'nosuchhost'", r.stderr)
        self.assertIn("server1", r.stderr)

        r = self.stack("partition", "server1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(wait_until(lambda: not backend_up("server1"), 30),
                        "the balancer still takes server1 as up")
        self.assertIn("PARTITIONED", self.stack("status").stdout)
        for i in range(10):
            resp = hstest.request(8080, "GET", "/products/%d" % (i + 1),
                                  host=bal, timeout=30)
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.header("X-Served-By"), "s2")

        r = self.stack("heal", "server1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(wait_until(lambda: backend_up("server1"), 30))
        self.assertNotIn("PARTITIONED", self.stack("status").stdout)
        seen = {hstest.request(8080, "GET", "/products/1", host=bal)
                .header("X-Served-By") for _ in range(4)}
        self.assertEqual(seen, {"s1", "s2"})

        kids = [c["pid"] for c in st["children"]] + [st["pid"]]
        r = self.stack("down")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(left_over(rec), [])
        self.assertFalse([p for p in kids if pid_alive(p)])
        self.assertEqual(self.stack("partition", "server1").returncode, 1)

    def up_foreground(self):
        """`up --hosts` in the foreground, once it says the stack is up."""
        p = subprocess.Popen([sys.executable, STACK, "up"] + self.args,
                             env=self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        self.addCleanup(self.reap, p)
        line = ""
        deadline = time.monotonic() + 90 * hstest.SLOW
        while "Ctrl-C" not in line and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line and p.poll() is not None:
                break
        self.assertIn("Ctrl-C", line)
        return p

    @staticmethod
    def reap(p):
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()

    def test_ctrl_c_removes_everything(self):
        p = self.up_foreground()
        st = self.state()
        rec = self.check_hosts(st)
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(60 * hstest.SLOW), 0)
        self.assertEqual(left_over(rec), [])
        self.assertFalse([c["pid"] for c in st["children"]
                          if pid_alive(c["pid"])])

    def test_failed_start_removes_everything(self):
        before_ns, before_links = namespaces(), links()
        before_records = records()
        # A database nobody listens for: the seed fails after the hosts
        # are made.
        bridge = str(next(netns.ipaddress.ip_network(self.subnet).hosts()))
        r = self.stack("up", "--detach", "--hosts", "--subnet", self.subnet,
                       "--db", "postgres://hammerstack@%s:1/none" % bridge)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("seeding", r.stderr)
        self.assertTrue(wait_until(lambda: namespaces() <= before_ns and
                                   links() <= before_links, 10),
                        (namespaces() - before_ns, links() - before_links))
        self.assertLessEqual(records(), before_records)

    def test_kill_9_of_up_the_watchdog_removes_everything(self):
        p = self.up_foreground()
        st = self.state()
        rec = self.check_hosts(st)
        self.assertTrue(pid_alive(st["pid"]))
        p.kill()
        p.wait()
        # Nothing else runs the sweep here: what goes is the watchdog's.
        self.assertTrue(wait_until(lambda: not left_over(rec), 30),
                        "left: %s" % left_over(rec))
        self.assertTrue(wait_until(lambda: not any(
            pid_alive(c["pid"]) for c in st["children"]), 20))

    def fake_leftover(self):
        """What a stack killed together with its watchdog leaves: a
        record whose owner is dead, a namespace with its veth on a bridge."""
        dead = subprocess.Popen(["true"])
        dead.wait()
        tag = "hs%d" % dead.pid
        ns, veth, br = tag + "-server1", tag + "-s1", tag + "-br"
        rec = {"owner": dead.pid, "owner_start": 1, "tag": tag,
               "subnet": self.subnet, "bridge": br,
               "record": os.path.join(netns.RECORD_DIR, tag + ".json"),
               "hosts": {"server1": {"netns": ns, "veth": veth,
                                     "addr": "10.0.0.2"}}}
        os.makedirs(netns.RECORD_DIR, exist_ok=True)
        with open(rec["record"], "w") as f:
            json.dump(rec, f)
        for cmd in (["netns", "add", ns],
                    ["link", "add", br, "type", "bridge"],
                    ["link", "add", veth, "type", "veth", "peer", "name",
                     "eth0", "netns", ns],
                    ["link", "set", veth, "master", br]):
            subprocess.run(["ip"] + cmd, check=True)
        self.assertEqual(len(left_over(rec)), 4)
        return rec

    def test_leftovers_of_a_dead_stack_are_swept(self):
        for cmd, rc in (("status", 3), ("down", 0)):
            rec = self.fake_leftover()
            try:
                r = self.stack(cmd)
                self.assertEqual(r.returncode, rc, r.stderr)
                self.assertEqual(left_over(rec), [], cmd)
            finally:
                netns.teardown(rec)

    def test_partition_needs_a_hosts_stack(self):
        r = self.stack("partition", "server1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no stack is running", r.stderr)
        plain = ["--servers", "1", "--db", self.db, "--threads", "2",
                 "--port", str(hstest.free_port()),
                 "--admin-port", str(hstest.free_port()),
                 "--server-port", str(hstest.free_port()),
                 "--memcached-port", str(hstest.free_port()),
                 "--no-dashboard"]
        r = self.stack("up", "--detach", *plain)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.stack("heal", "server1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not started with --hosts", r.stderr)

    def test_bad_subnets_are_refused_before_anything(self):
        for subnet, why in (("10.213.0.0/33", "does not appear to be"),
                            ("10.213.0.1/24", "host bits set"),
                            ("8.8.8.0/24", "private IPv4 subnet"),
                            ("fd00::/64", "private IPv4 subnet"),
                            ("10.213.0.0/30", "room for 2 addresses")):
            r = self.stack("up", "--hosts", "--subnet", subnet,
                           "--check-args")
            self.assertEqual(r.returncode, 2, subnet)
            self.assertIn(why, r.stderr, subnet)

    def test_subnet_already_routed_is_refused(self):
        # The machine's own routes, e.g. the bridge of a running stack.
        r = self.stack("up", "--detach", *self.args)
        self.assertEqual(r.returncode, 0, r.stderr)
        other = dict(self.env, HS_RUN_DIR=tempfile.mkdtemp(prefix="hs-run-"))
        try:
            r = subprocess.run([sys.executable, STACK, "up", "--detach"] +
                               self.args, env=other, capture_output=True,
                               text=True, timeout=60 * hstest.SLOW)
        finally:
            shutil.rmtree(other["HS_RUN_DIR"], ignore_errors=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("which this machine routes already", r.stderr)


@unittest.skipUnless(ROOT and os.path.isdir("/usr/lib/postgresql"),
                     "needs root and PostgreSQL")
class HostsPostgresTest(HostsBase):
    def test_postgres_and_replica_on_their_own_hosts(self):
        pg_dir = tempfile.mkdtemp(prefix="hs-pg-")
        os.chmod(pg_dir, 0o755)    # PostgreSQL runs as nobody
        self.addCleanup(shutil.rmtree, pg_dir, True)
        args = ["--hosts", "--subnet", self.subnet, "--servers", "2",
                "--threads", "2", "--db", "postgres", "--replicas", "1",
                "--pg-dir", os.path.join(pg_dir, "pg"), "--scale", "0.01"]
        r = self.stack("up", "--detach", *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("SQLite", r.stderr)
        st = self.state()
        rec = self.check_hosts(st)
        self.assertIn("postgres", rec["hosts"])
        self.assertIn("replica1", rec["hosts"])
        pga = rec["hosts"]["postgres"]["addr"]
        self.assertEqual(st["db"], "postgres://hammerstack@%s:5432/"
                         "hammerstack" % pga)
        self.assertIn("@%s:5432/" % rec["hosts"]["replica1"]["addr"],
                      st["urls"]["replica1"])
        veth = rec["hosts"]["postgres"]["veth"]
        before = counter(veth, "rx_bytes")
        bal = rec["hosts"]["balancer"]["addr"]
        resp = hstest.request(8080, "PUT", "/products/5",
                              body=json.dumps({"price_cents": 4321}),
                              headers={"Content-Type": "application/json"},
                              host=bal, timeout=30)
        self.assertEqual(resp.status, 200, resp.body)
        # The write is on the primary, and the replica replays it: both
        # asked at their own addresses, from this namespace.
        sql = "SELECT price_cents FROM products WHERE id = 5"
        self.assertEqual(psql(st["db"], sql), "4321")
        self.assertTrue(wait_until(
            lambda: psql(st["urls"]["replica1"], sql) == "4321", 30))
        seen = set()
        for _ in range(4):
            resp = hstest.request(8080, "GET", "/products/9", host=bal)
            self.assertEqual(resp.status, 200)
            seen.add(resp.header("X-Served-By"))
        self.assertEqual(seen, {"s1", "s2"})
        self.assertGreater(counter(veth, "rx_bytes"), before)
        self.check_replica_partition(bal, st)
        self.check_primary_partition(st)
        kids = [c["pid"] for c in st["children"]]
        self.assertEqual(self.stack("down").returncode, 0)
        self.assertEqual(left_over(rec), [])
        self.assertFalse([p for p in kids if pid_alive(p)])

    def replica_stats(self, st):
        """Each server's db.replicas list entry for replica 1."""
        out = []
        for k in ("server1", "server2"):
            url = st["urls"][k].rstrip("/")
            host, port = url.split("//")[1].split(":")
            r = hstest.request(int(port), "GET", "/stats", host=host,
                               timeout=30)
            out.append(r.json()["db"]["replicas"]["list"][0])
        return out

    def check_primary_partition(self, st):
        """The primary cut off: no request hangs on it; reads of products
        no one wrote come from the replica, writes answer 503 with
        Retry-After, and after heal writes succeed again."""
        url = st["urls"]["server1"].rstrip("/")
        host, port = url.split("//")[1].split(":")
        port = int(port)
        # First the replica serves this server again: after the replica's
        # own partition the server may still be leaving it alone (1 s,
        # doubled per failure in a row, up to 8 s).
        self.assertTrue(wait_until(
            lambda: self.reads_from_replica(host, port), 60))
        self.assertEqual(self.stack("partition", "postgres").returncode, 0)
        for pid in range(60, 66):
            resp = hstest.request(port, "GET", "/products/%d" % pid,
                                  host=host, timeout=20 * hstest.SLOW)
            self.assertEqual(resp.status, 200, resp.body)
        put = {"body": json.dumps({"stock": 7}), "host": host,
               "headers": {"Content-Type": "application/json"},
               "timeout": 20 * hstest.SLOW}
        resp = hstest.request(port, "PUT", "/products/61", **put)
        self.assertEqual(resp.status, 503, resp.body)
        self.assertTrue(resp.header("Retry-After"), resp.headers)
        self.assertEqual(self.stack("heal", "postgres").returncode, 0)
        self.assertTrue(wait_until(lambda: hstest.request(
            port, "PUT", "/products/61", **put).status == 200, 30))

    def reads_from_replica(self, host, port):
        """One read of a product not read before, through this server: 1
        when the replica answered it."""
        def reads():
            r = hstest.request(port, "GET", "/stats", host=host, timeout=30)
            return r.json()["db"]["replicas"]["list"][0]["reads"]
        self.fresh = getattr(self, "fresh", 700) + 1
        before = reads()
        hstest.request(port, "GET", "/products/%d" % self.fresh, host=host,
                       timeout=20 * hstest.SLOW)
        return reads() > before

    def check_replica_partition(self, bal, st):
        """A replica cut off mid-load: no read hangs on it (the servers'
        connections time out and skip it), and after heal it serves
        reads again."""
        self.assertEqual(self.stack("partition", "replica1").returncode, 0)
        # Products nobody read yet: cache misses, read from a database.
        for pid in range(20, 40):
            resp = hstest.request(8080, "GET", "/products/%d" % pid,
                                  host=bal, timeout=20 * hstest.SLOW)
            self.assertEqual(resp.status, 200, resp.body)
        reps = self.replica_stats(st)
        self.assertTrue(any(r["errors"] > 0 or not r["up"] for r in reps),
                        reps)
        self.assertEqual(self.stack("heal", "replica1").returncode, 0)
        reads = sum(r["reads"] for r in reps)
        pid = iter(range(40, 10000))

        def replica_serves():
            hstest.request(8080, "GET", "/products/%d" % next(pid),
                           host=bal, timeout=20 * hstest.SLOW)
            return sum(r["reads"] for r in self.replica_stats(st)) > reads
        self.assertTrue(wait_until(replica_serves, 60))


class HostsNotRootTest(unittest.TestCase):
    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"),
                         "needs root to drop to nobody")
    def test_not_root_gets_one_clear_line(self):
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") \
            else sys.executable
        # A copy nobody can read: the checkout may be in a directory
        # only root can enter (mktemp -d makes them 0700).
        tmp = tempfile.mkdtemp(prefix="hs-nonroot-")
        self.addCleanup(shutil.rmtree, tmp, True)
        os.chmod(tmp, 0o755)
        src = os.path.join(hstest.SRC, "loadtest")
        shutil.copy(STACK, tmp)
        shutil.copytree(os.path.join(src, "hslab"),
                        os.path.join(tmp, "hslab"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for d, _, files in os.walk(tmp):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                            "--clear-groups", python,
                            os.path.join(tmp, "stack.py"), "up",
                            "--hosts"], capture_output=True, text=True,
                           timeout=60, cwd=tmp,
                           env=dict(os.environ, HOME="/"))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        self.assertIn("--hosts needs root", r.stderr)


@unittest.skipUnless(ROOT, "network namespaces need root and iproute2")
class HostsLibraryTest(unittest.TestCase):
    """Stack(hosts=True) as the walkthrough would use it, with the
    balancer's active checks slowed down so that what marks the silent
    host down is the traffic itself: failed connects, counted."""

    def test_partitioned_server_is_skipped_by_passive_checks(self):
        sys.path.insert(0, os.path.join(hstest.SRC, "loadtest"))
        import stack as hstack
        logdir = tempfile.mkdtemp(prefix="hs-logs-")
        self.addCleanup(shutil.rmtree, logdir, True)
        s = hstack.Stack(
            servers=2, db=hstest.seeded_db(0.01), hosts=True,
            subnet=free_subnet(), threads=2, logdir=logdir,
            balancer_args=["--health-interval-ms", "600000",
                           "--connect-timeout-ms", "300",
                           "--backend-timeout-ms", "1000"])
        s.start()
        rec = s.net.describe()
        try:
            bal = s.addr("balancer")
            netns.set_link(rec, "server1", False)
            self.assertEqual(netns.partitioned(rec), ["server1"])
            got = []
            for i in range(8):
                resp = hstest.request(8080, "GET", "/products/%d" % (i + 1),
                                      host=bal, timeout=30)
                got.append((resp.status, resp.header("X-Served-By")))
            # At most the request in flight on a kept-alive connection to
            # server1 fails (504: the balancer cannot know whether it ran);
            # every later one goes to server2.
            self.assertEqual(got[-6:], [(200, "s2")] * 6, got)
            _, _, body = http_get(8090, "/stats", 5 * hstest.SLOW, bal)
            b1 = json.loads(body)["backends"][0]
            self.assertEqual(b1["name"], "%s:8081" % s.addr("server1"))
            self.assertFalse(b1["up"])
            self.assertGreater(b1["failures"], 0)
        finally:
            s.stop()
        self.assertEqual(left_over(rec), [])


if __name__ == "__main__":
    unittest.main()
