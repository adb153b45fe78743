"""hslab.cgroups without the kernel: the choice between cgroup v2 and v1
from a list of mounts over folders made here, and a v2 host's files
(cpu.max, cpu.stat) read and written as the kernel lays them out.

The machine that runs CI mounts cgroup v1's cpu controller; its cgroup2
hierarchy has no cpu controller (a hybrid systemd layout), and a second
cgroup2 mount shows the same controllers, so the v2 path cannot be run
against the kernel there.  test_stack.py's budget tests run whichever
hierarchy find_hierarchy() picks for real."""

import os
import shutil
import tempfile
import unittest

import hstest  # noqa: F401 (puts loadtest/ on sys.path)
from hslab import cgroups  # noqa: E402


class ChoiceTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="hs-cg-")
        self.addCleanup(shutil.rmtree, self.root, True)
        os.environ.pop("HS_CGROUP_ROOT", None)

    def v2(self, name, controllers, subtree=""):
        d = os.path.join(self.root, name)
        os.makedirs(d)
        with open(os.path.join(d, "cgroup.controllers"), "w") as f:
            f.write(controllers + "\n")
        with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
            f.write(subtree + "\n")
        return d

    def v1(self, name):
        d = os.path.join(self.root, name)
        os.makedirs(d)
        return d

    def test_v2_with_cpu_wins_and_enables_cpu_for_children(self):
        v2 = self.v2("unified", "cpuset cpu io memory pids")
        cpu = self.v1("cpu")
        kind, base, acct, problem = cgroups.find_hierarchy([
            ("cgroup", cpu, {"rw", "cpu"}), ("cgroup2", v2, {"rw"})])
        self.assertEqual((kind, base, acct, problem), ("v2", v2, None, None))
        with open(os.path.join(v2, "cgroup.subtree_control")) as f:
            self.assertEqual(f.read().strip(), "+cpu")
        # The probe's child folder is gone again.
        self.assertEqual(set(os.listdir(v2)), {"cgroup.controllers",
                                               "cgroup.subtree_control"})

    def test_hybrid_without_cpu_in_v2_takes_v1(self):
        # This machine's layout: cgroup2 with only hugetlb, v1 cpu and
        # cpuacct mounted apart.
        v2 = self.v2("unified", "hugetlb")
        cpu, acct = self.v1("cpu"), self.v1("cpuacct")
        kind, base, a, problem = cgroups.find_hierarchy([
            ("cgroup2", v2, {"rw"}), ("cgroup", cpu, {"rw", "cpu"}),
            ("cgroup", acct, {"rw", "cpuacct"})])
        self.assertEqual((kind, base, a, problem), ("v1", cpu, acct, None))

    def test_v1_cpu_and_cpuacct_together(self):
        both = self.v1("cpu,cpuacct")
        kind, base, a, _ = cgroups.find_hierarchy([
            ("cgroup", both, {"rw", "cpu", "cpuacct"})])
        self.assertEqual((kind, base, a), ("v1", both, both))

    def test_v2_without_cpu_and_no_v1_says_why(self):
        v2 = self.v2("unified", "memory pids")
        kind, base, _, problem = cgroups.find_hierarchy([
            ("cgroup2", v2, {"rw"})])
        self.assertIsNone(kind)
        self.assertIn("has no cpu controller", problem)
        self.assertIn(v2, problem)

    def test_nothing_mounted_says_why(self):
        kind, _, _, problem = cgroups.find_hierarchy([])
        self.assertIsNone(kind)
        self.assertEqual(problem, "no cgroup cpu controller is mounted")

    def test_v1_missing_folder_says_why(self):
        gone = os.path.join(self.root, "gone")
        kind, _, _, problem = cgroups.find_hierarchy([
            ("cgroup", gone, {"cpu"})])
        self.assertIsNone(kind)
        self.assertIn("does not exist", problem)


class V2HostTest(unittest.TestCase):
    """A v2 host's files, as the kernel names them (cgroup-v2.rst)."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="hs-cg-")
        self.addCleanup(shutil.rmtree, self.root, True)

    def test_quota_written_and_read_as_cpu_max(self):
        h = cgroups.Host("v2", os.path.join(self.root, "hs-server-1"),
                         cpus=0.15, create=True)
        with open(os.path.join(h.cpu_dir, "cpu.max")) as f:
            self.assertEqual(f.read(), "15000 100000")
        self.assertEqual(h.quota(), (15000, 100000))
        self.assertEqual(h.procs_files(),
                         [os.path.join(h.cpu_dir, "cgroup.procs")])
        # No limit reads as -1, like v1's cfs_quota_us.
        with open(os.path.join(h.cpu_dir, "cpu.max"), "w") as f:
            f.write("max 100000\n")
        self.assertEqual(h.quota(), (-1, 100000))

    def test_usage_from_cpu_stat(self):
        h = cgroups.Host("v2", os.path.join(self.root, "memcached-1"),
                         cpus=0.5, create=True)
        with open(os.path.join(h.cpu_dir, "cpu.stat"), "w") as f:
            f.write("usage_usec 2500000\nuser_usec 2000000\n"
                    "system_usec 500000\nnr_periods 40\nnr_throttled 12\n"
                    "throttled_usec 750000\n")
        self.assertEqual(h.usage(), {"cpu_s": 2.5, "throttled_s": 0.75,
                                     "nr_throttled": 12, "nr_periods": 40})

    def test_budgets_of_a_stack_on_v2(self):
        # HS_CGROUP_ROOT stands for the mount: the stack's folder enables
        # cpu for its children, each host gets its cpu.max.
        root = os.path.join(self.root, "v2")
        os.mkdir(root)
        with open(os.path.join(root, "cgroup.controllers"), "w") as f:
            f.write("cpu memory\n")
        os.environ["HS_CGROUP_ROOT"] = root
        self.addCleanup(os.environ.pop, "HS_CGROUP_ROOT", None)
        b = cgroups.Budgets()
        h = b.host("hs-server-1", 0.15)
        self.assertIsNone(b.problem)
        self.assertEqual(b.kind, "v2")
        self.assertEqual(os.path.dirname(h.cpu_dir), b.cpu_dir)
        self.assertRegex(os.path.basename(b.cpu_dir),
                         r"^hammerstack-%d\.\d+$" % os.getpid())
        with open(os.path.join(b.cpu_dir, "cgroup.subtree_control")) as f:
            self.assertEqual(f.read(), "+cpu")
        self.assertEqual(h.quota(), (15000, 100000))
        self.assertIsNone(b.host("memcached-1", 0))  # 0: no budget
        self.assertIn("cgroup v2", b.describe())

    def test_v1_quota_files(self):
        h = cgroups.Host("v1", os.path.join(self.root, "hs-server-2"),
                         cpus=0.25, create=True)
        self.assertEqual(h.quota(), (25000, 100000))


if __name__ == "__main__":
    unittest.main()
