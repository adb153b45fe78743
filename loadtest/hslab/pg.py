"""PostgreSQL clusters for tests and the stack: initdb into a directory,
postgres on a free loopback port, killed and removed like every other
child (own process group, PR_SET_PDEATHSIG, a hard timeout, stop_all()).

PostgreSQL refuses to run as root: when we are root, initdb and postgres
run as nobody (dropped before exec, like memcached) in a directory chowned
to it.  Trust authentication on 127.0.0.1 only (and on the networks given
as hba=, with listen= an address there: a stack's hosts, hslab/netns.py),
no Unix socket; the superuser is "hammerstack", so a URL is
postgres://hammerstack@127.0.0.1:PORT/DB.  fsync off by default (tests):
a kill -9 of postgres still loses no acknowledged commit (the WAL is
written before the commit returns), only a crash of the machine would.

  python3 -m hslab.pg run [--db NAME] -- CMD ARGS...
runs CMD with HS_TEST_PG_URL set to a fresh cluster's database NAME
(default hammerstack), and exits with CMD's status: how ctest runs the C
unit tests of the PostgreSQL engine.

Streaming replicas: a primary started with REPLICATION_SETTINGS serves
start_replica() (pg_basebackup -R over loopback, then a hot standby on its
own free port, as the same user, stopped by stop_all() like the primary).
pause_replay()/resume_replay() on a replica make replication lag on
demand, which is how the tests show stale reads.
"""

import glob
import os
import shutil
import subprocess
import sys
import time

from .procs import (NOBODY, LabError, Proc, free_port, mkdtemp, port_free,
                    stop_all, tail)

USER = "hammerstack"


def pg_bindir():
    """The newest /usr/lib/postgresql/N/bin with postgres and initdb."""
    dirs = [d for d in glob.glob("/usr/lib/postgresql/*/bin")
            if os.access(os.path.join(d, "postgres"), os.X_OK)]
    if not dirs:
        raise LabError("PostgreSQL is not installed (Debian: apt-get install "
                       "postgresql)")
    return max(dirs, key=lambda d: int(d.split("/")[-2]))


def _chown_tree(path, uid):
    os.chown(path, uid, uid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), uid, uid)


def _check_reachable(path):
    """Raises LabError unless nobody may traverse every directory down to
    path (postgres runs as nobody when we are root)."""
    import stat
    p = os.path.abspath(path)
    while True:
        st = os.stat(p)
        if not (st.st_mode & stat.S_IXOTH or
                (st.st_uid == NOBODY and st.st_mode & stat.S_IXUSR)):
            raise LabError("PostgreSQL runs as nobody here (PostgreSQL "
                           "refuses root) and cannot enter %s: chmod o+x "
                           "it, or choose a directory elsewhere" % p)
        if p == "/":
            return
        p = os.path.dirname(p)


class Postgres:
    """A running cluster: proc (the postmaster's Proc), port, datadir."""

    def __init__(self, datadir, port, settings, logpath, timeout, name,
                 netns=None):
        self.datadir = datadir
        # Where it listens (the first of listen_addresses) and the network
        # namespace it runs in (hslab/netns.py; None: this one).
        self.host = settings.get("listen_addresses",
                                 "127.0.0.1").split(",")[0].strip()
        self.netns = netns
        self.port = port
        self.settings = dict(settings)
        self.logpath = logpath
        self.timeout = timeout
        self.name = name
        self.proc = None

    def url(self, db="hammerstack"):
        return "postgres://%s@%s:%d/%s" % (USER, self.host, self.port, db)

    def _args(self):
        args = [os.path.join(pg_bindir(), "postgres"), "-D", self.datadir,
                "-p", str(self.port)]
        for k, v in sorted(self.settings.items()):
            args += ["-c", "%s=%s" % (k, v)]
        return args

    def launch(self, ready_timeout=30):
        """Starts postgres on self.port and waits until it accepts queries."""
        self.proc = Proc(self._args(), name=self.name, logpath=self.logpath,
                         timeout=self.timeout, netns=self.netns,
                         drop_privileges=os.geteuid() == 0)
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout=30):
        isready = os.path.join(pg_bindir(), "pg_isready")
        deadline = time.monotonic() + timeout
        while True:
            if not self.proc.alive():
                raise LabError("postgres exited (status %s):\n%s" % (
                    self.proc.poll(), tail(self.logpath)))
            r = subprocess.run([isready, "-q", "-h", self.host, "-p",
                                str(self.port), "-U", USER, "-t", "2"],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise LabError("postgres on port %d not ready within %.0fs:"
                               "\n%s" % (self.port, timeout,
                                         tail(self.logpath)))
            time.sleep(0.1)

    def psql(self, sql, db="postgres", timeout=60):
        """Runs sql through psql; returns its stdout (unaligned, no header)."""
        r = subprocess.run([os.path.join(pg_bindir(), "psql"), "-X", "-q",
                            "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d",
                            self.url(db), "-c", sql],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise LabError("psql %r: %s" % (sql, r.stderr.strip()))
        return r.stdout.strip()

    def create_db(self, db):
        """A new empty database (UTF-8, as the cluster); returns its URL."""
        self.psql('CREATE DATABASE "%s"' % db.replace('"', '""'))
        return self.url(db)

    def kill9(self):
        """SIGKILL to the postmaster and its backends (one process group)."""
        self.proc.kill()
        self.proc.wait(10)

    def restart(self, ready_timeout=30, retry_s=20):
        """Starts it again on the same port and data directory (after a
        kill9 the port may stay taken for a moment; crash recovery replays
        the WAL)."""
        give_up = time.monotonic() + retry_s
        while not port_free(self.port) and time.monotonic() < give_up:
            time.sleep(0.1)
        self.launch(ready_timeout)

    def stop(self, timeout=15):
        """Fast shutdown (SIGINT: ends sessions, checkpoints), then kill."""
        if self.proc is not None:
            self.proc.stop(timeout, sig=2)


def allow_hba(datadir, cidrs):
    """Trust connections (and replication) from the networks cidrs too:
    lines added to pg_hba.conf once each (the file keeps its owner)."""
    path = os.path.join(datadir, "pg_hba.conf")
    with open(path) as f:
        have = f.read()
    with open(path, "a") as f:
        for cidr in cidrs:
            for what in ("all", "replication"):
                line = "host %s all %s trust" % (what, cidr)
                if line not in have:
                    f.write(line + "\n")


def _cluster_dir(base, root):
    """A cluster's data directory and log under base (the log created);
    as root, base goes to the user postgres runs as, which must own its
    files and reach them."""
    datadir = os.path.join(base, "data")
    logpath = os.path.join(base, "postgres.log")
    open(logpath, "a").close()
    if root:
        _check_reachable(os.path.dirname(base))
        os.chmod(base, 0o700)
        _chown_tree(base, NOBODY)
    return datadir, logpath


def start_postgres(base=None, port=None, fsync=False, settings=None,
                   name="postgres", timeout=None, ready_timeout=60,
                   db="hammerstack", listen="127.0.0.1", hba=(), netns=None):
    """initdb into base/data (unless a cluster is there already) and
    postgres on listen:port (listen default 127.0.0.1; port a free one
    when None, 5 tries; trust from 127.0.0.1 and the networks in hba; in
    the network namespace netns when given),
    logging to base/postgres.log, with a database db created when missing
    (None: none).  Without base the cluster lives in a temp dir removed by
    stop_all().  timeout: a hard limit on the postmaster's life.  Returns
    a Postgres."""
    bindir = pg_bindir()
    root = os.geteuid() == 0
    if base is None:
        base = mkdtemp("hs-pg-")
    else:
        base = os.path.abspath(base)
        os.makedirs(base, exist_ok=True)
    datadir, logpath = _cluster_dir(base, root)
    if not os.path.exists(os.path.join(datadir, "PG_VERSION")):
        init = Proc([os.path.join(bindir, "initdb"), "-D", datadir, "-U",
                     USER, "-A", "trust", "-E", "UTF8", "--locale=C",
                     "--no-sync", "--no-instructions"], name="initdb",
                    logpath=logpath, timeout=120, drop_privileges=root)
        if init.wait(120) != 0:
            raise LabError("initdb failed:\n%s" % tail(logpath))
    conf = {
        "listen_addresses": listen,
        "unix_socket_directories": "",
        "fsync": "on" if fsync else "off",
        "full_page_writes": "on" if fsync else "off",
        "synchronous_commit": "on",
        "max_connections": "200",
        "shared_buffers": "64MB",
        "max_wal_size": "1GB",
        # No WAL for a COPY into a table created in the same transaction:
        # the seed at scale 1 took 5.7 s instead of 6.9 s (db/README.md).
        # Streaming replicas need "replica" (pass it in settings).
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "log_min_messages": "warning",
        "log_line_prefix": "%m [%p] ",
    }
    conf.update(settings or {})
    if hba:
        allow_hba(datadir, hba)
    pg = _launch(Postgres(datadir, port, conf, logpath, timeout, name,
                          netns), port, ready_timeout, "postgres")
    if db and pg.psql("SELECT 1 FROM pg_database WHERE datname = '%s'" %
                      db.replace("'", "''")) != "1":
        pg.create_db(db)
    return pg


def _launch(pg, port, ready_timeout, what):
    """Starts pg on port, or on a free port with up to 5 tries (another
    process may take a free port between the choice and the bind)."""
    last = None
    for _ in range(1 if port else 5):
        pg.port = port or free_port()
        try:
            pg.launch(ready_timeout)
            return pg
        except LabError as e:
            last = e
            pg.stop()
    raise LabError("could not start %s: %s" % (what, last))


# What a primary needs to serve streaming replicas: WAL with enough detail
# for a standby to replay it, and walsenders (one per replica, plus one
# for each pg_basebackup running).
REPLICATION_SETTINGS = {"wal_level": "replica", "max_wal_senders": "10",
                        "hot_standby": "on"}


def start_replica(primary, base=None, port=None, name="pg-replica",
                  timeout=None, ready_timeout=60, listen="127.0.0.1",
                  netns=None):
    """A hot standby of primary (started with REPLICATION_SETTINGS):
    pg_basebackup -R from it into base/data (a temp dir removed by
    stop_all() without base; with base, whatever was there is removed
    first: a replica is a copy, never worth keeping), then postgres on
    listen:port (a free one when None; in the network namespace netns
    when given) streaming from the primary.
    Returns a Postgres whose url() reads what the primary committed once
    it is replayed."""
    if primary.settings.get("wal_level") == "minimal":
        raise LabError("the primary runs with wal_level=minimal: start it "
                       "with settings=REPLICATION_SETTINGS for replicas")
    bindir = pg_bindir()
    root = os.geteuid() == 0
    if base is None:
        base = mkdtemp("hs-pgr-")
    else:
        base = os.path.abspath(base)
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
    datadir, logpath = _cluster_dir(base, root)
    bb = Proc([os.path.join(bindir, "pg_basebackup"), "-D", datadir, "-R",
               "-X", "stream", "-c", "fast", "--no-sync", "-h", primary.host,
               "-p", str(primary.port), "-U", USER], name="pg_basebackup",
              logpath=logpath, timeout=300, drop_privileges=root,
              netns=netns)
    if bb.wait(300) != 0:
        raise LabError("pg_basebackup failed:\n%s" % tail(logpath))
    conf = dict(primary.settings)
    conf["hot_standby"] = "on"
    conf["listen_addresses"] = listen
    return _launch(Postgres(datadir, port, conf, logpath, timeout, name,
                            netns),
                   port, ready_timeout, "the replica")


def start_replicas(primary, n, base=None, **kw):
    """n replicas of primary (base/replicaK with base, else temp dirs)."""
    return [start_replica(primary, base=os.path.join(base, "replica%d" % k)
                          if base else None, name="pg-replica-%d" % k, **kw)
            for k in range(1, n + 1)]


def wait_replayed(primary, replicas, db="postgres", timeout=30):
    """Waits until every replica has replayed the primary's WAL up to its
    position now; raises LabError past timeout."""
    target = primary.psql("SELECT pg_current_wal_lsn()", db=db)
    deadline = time.monotonic() + timeout
    for r in replicas:
        while r.psql("SELECT pg_last_wal_replay_lsn() >= '%s'" % target,
                     db=db) != "t":
            if time.monotonic() > deadline:
                raise LabError("replica on port %d has not replayed %s "
                               "within %.0fs" % (r.port, target, timeout))
            time.sleep(0.05)


def pause_replay(replica):
    """Stops WAL replay on a replica (it still receives WAL): what it
    serves stays as it is now, however much the primary commits."""
    replica.psql("SELECT pg_wal_replay_pause()")


def resume_replay(replica):
    replica.psql("SELECT pg_wal_replay_resume()")


def _main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="python3 -m hslab.pg")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a command against a fresh cluster")
    run.add_argument("--db", default="hammerstack")
    run.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("run needs a command after --")
    try:
        pg = start_postgres(db=a.db, timeout=900)
        env = dict(os.environ, HS_TEST_PG_URL=pg.url(a.db))
        rc = subprocess.call(cmd, env=env)
        if rc != 0:
            sys.stderr.write("postgres log (end):\n%s\n" % tail(pg.logpath))
        return rc
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
