"""Step 3 of the walkthrough, the profile: perf samples a running hs-server
under the update mix and the summary names our own functions with their
modules, the share of samples without a function name and what to do next.
The summary's arithmetic is also checked on a fixed perf script text, so
that part runs where perf cannot; and our functions keep frame pointers."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
import unittest

import hstest

sys.path.insert(0, os.path.join(hstest.SRC, "loadtest"))
import stack as hs  # noqa: E402
import walkthrough as wt  # noqa: E402

# Four samples as perf script prints them: SQLite under our query, a
# memcached send in the kernel under our cache client, an unnamed frame in
# SQLite, and one in the balancer.
SCRIPT = """\
hs-server  101  10.000001:    2004008 cpu-clock:
\t  f194e sqlite3VdbeExec+0x727e (/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6)
\t  f339e sqlite3_step+0x13e (/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6)
\t   dad8 db_product_detail+0xc8 (/x/build/bin/hs-server)
\t   97cc srv_product_body+0x3c (/x/build/bin/hs-server)

hs-server  101  10.000002:    2004008 cpu-clock:
\tffffffff8206b15a tcp_sendmsg+0x3a ([kernel.kallsyms])
\tffffffff8225a101 __sys_sendmsg+0x71 ([kernel.kallsyms])
\tffffffff8225a101 do_syscall_64+0x71 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe+0x76 ([kernel.kallsyms])
\t 108ef3 __libc_sendmsg+0x13 (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t  13f1c cache_mc_gets+0xfc (/x/build/bin/hs-server)
\t  14027 cache_batcher_run+0x57 (/x/build/bin/hs-server)

hs-server  101  10.000003:    2004008 cpu-clock:
\t  f7ccf [unknown] (/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6)
\t  f339e sqlite3_step+0x13e (/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6)
\t   e0fe db_category_top+0x2ae (/x/build/bin/hs-server)

hs-balancer  102  10.000004:    2004008 cpu-clock:
\t   444c bal_io_flush+0x1c (/x/build/bin/hs-balancer)
\t   444c main+0xd1c (/x/build/bin/hs-balancer)
"""


class ProfileSummaryTest(unittest.TestCase):
    def test_summary_of_a_fixed_script(self):
        summ = wt.profile_summary(wt.parse_perf_script(SCRIPT))
        self.assertEqual(summ["samples"], 4)
        self.assertEqual(summ["unresolved_pct"], 25.0)
        self.assertEqual(summ["unresolved_by_module"], [("SQLite", 25.0)])
        self.assertIn(("sqlite3VdbeExec", "SQLite", 25.0), summ["top"])
        self.assertIn(("tcp_sendmsg", "kernel", 25.0), summ["top"])
        self.assertIn(("bal_io_flush", "hs-balancer", 25.0), summ["top"])
        self.assertEqual(dict(summ["modules"]),
                         {"SQLite": 50.0, "kernel": 25.0,
                          "hs-balancer": 25.0})
        # Our callers of the libraries and the kernel, from the stacks.
        ours = {x[0]: x[2] for x in summ["ours_top"]}
        self.assertEqual(ours["db_product_detail"], 25.0)
        self.assertEqual(ours["cache_mc_gets"], 25.0)
        self.assertNotIn("main", ours)
        self.assertEqual(summ["ours_self_pct"], 25.0)
        self.assertEqual(summ["ours_on_stack_pct"], 100.0)
        self.assertEqual(dict(summ["layers"]),
                         {"database": 50.0, "cache client": 25.0,
                          "balancer": 25.0})
        self.assertEqual(summ["kernel"], [("socket send", 25.0)])
        self.assertTrue(summ["next"].startswith(
            "database holds 50% of the samples, 25% under db_category_top "
            "and 25% under db_product_detail"), summ["next"])

    def test_report_shows_the_summary(self):
        out = tempfile.mkdtemp(prefix="hs-prof-")
        self.addCleanup(shutil.rmtree, out, True)
        summ = wt.profile_summary(wt.parse_perf_script(SCRIPT))
        rows = [{"step": "3", "setup": "profile", "req_s": 1, "p50_ms": 1,
                 "p99_ms": 1, "errors": 0, "db_queries_s": 1,
                 "cache_hit_pct": "", "stale_reads": 0, "checker_reads": 1,
                 "checker_writes": 1}]
        meta = {"date": "d", "wrk_threads": 1, "connections": 1,
                "duration": 1, "put": 0, "review": 0, "products": 1,
                "categories": 1, "machine": "m"}
        wt.write_report(out, rows, {"3": "lesson"},
                        ({"server total (per request)": 1.0}, "<svg></svg>",
                         None, summ), meta)
        for name in ("results.md", "report.html"):
            with open(os.path.join(out, name)) as f:
                page = f.read()
            self.assertIn("25.0% without a function name", page, name)
            self.assertIn("db_product_detail", page, name)
            self.assertIn("sqlite3VdbeExec", page, name)
            self.assertIn("What the profile says", page, name)


class FramePointerTest(unittest.TestCase):
    """Our functions keep frame pointers (CMakeLists.txt), so profilers
    that walk them see the callers."""

    def test_functions_set_up_a_frame_pointer(self):
        if os.uname().machine != "x86_64":
            self.skipTest("the prologue check is for x86-64")
        if not shutil.which("objdump"):
            self.skipTest("objdump is not installed (binutils)")
        for fn in ("srv_on_access", "db_product_detail", "cache_mc_gets"):
            r = subprocess.run(
                ["objdump", "-d", "--no-show-raw-insn",
                 "--disassemble=" + fn, hstest.binpath("hs-server")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            text = r.stdout.decode()
            start = text.find("<%s>:" % fn)
            self.assertGreaterEqual(start, 0, "%s not found" % fn)
            prologue = [x.split("\t")[-1].split() for x in
                        text[start:].splitlines()[1:10]]
            self.assertIn(["push", "%rbp"], prologue, (fn, prologue))
            self.assertIn(["mov", "%rsp,%rbp"], prologue, (fn, prologue))


class ProfileRunTest(unittest.TestCase):
    """The walkthrough's profile() against a real hs-server and memcached."""

    def setUp(self):
        why = wt.perf_problem()
        if why:
            self.skipTest("perf cannot profile on this machine: " + why)
        if not shutil.which("wrk"):
            self.skipTest("wrk is not installed (./hammerstack setup)")

    def test_profile_names_our_functions(self):
        db = hstest.seeded_db(0.01)
        out = tempfile.mkdtemp(prefix="hs-prof-")
        self.addCleanup(shutil.rmtree, out, True)
        ports = hs.free_ports(2)
        stk = hs.Stack(servers=1, cache="lease", memcached=1, balancer=False,
                       db=db, server_ports=ports[:1],
                       memcached_ports=ports[1:], logdir=out + "/logs",
                       threads=2)
        stk.start()
        self.addCleanup(stk.stop)
        a = types.SimpleNamespace(no_perf=False, wrk_threads=1,
                                  connections=8, put=0.05, review=0.01)
        counts = {"products": 1000, "categories": 1}
        w, d, breakdown, svg, bal0, no_graph, summ = wt.profile(
            stk, a, counts, out, 3)
        self.assertIsNone(no_graph)
        self.assertGreater(w["requests"], 0)
        self.assertTrue(summ, "no profile summary")
        self.assertGreater(summ["samples"], 0)
        self.assertIsInstance(summ["unresolved_pct"], float)
        self.assertTrue(0.0 <= summ["unresolved_pct"] <= 100.0)
        # Our own functions are named, from the binary's symbols, and seen
        # above the libraries and the kernel they call.
        ours = [x for x in summ["ours_top"] if x[1] == "hs-server" and
                re.match(r"^(srv|cache|db|hs)_", x[0])]
        self.assertTrue(ours, summ["ours_top"])
        self.assertGreater(summ["ours_on_stack_pct"], summ["ours_self_pct"])
        self.assertTrue(summ["next"])
        for name in ("flamegraph.svg", "perf.folded", "profile.json"):
            self.assertGreater(os.path.getsize(os.path.join(out, name)), 10)
        self.assertFalse(os.path.exists(os.path.join(out, "perf.data")))


if __name__ == "__main__":
    unittest.main()
