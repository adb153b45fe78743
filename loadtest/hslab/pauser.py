"""Step-through mode: a pause between bringing a step's stack up and
loading it, so that a speaker can talk, show `curl -i` and the dashboard,
then go on.

  p = Pauser(stdin=sys.stdin)        # or stdin=None: the dashboard only
  dash.pauser = p                    # POST /next, POST /quit
  if not p.wait("step 0 (1/2)"):     # False: stop everything
      ...

Go on: a line on stdin (Enter), or next() (the dashboard's button).
Stop: "q" (or "quit") and Enter, end of file on stdin, or quit().
A line typed while no step waits is dropped: an Enter pressed during a
step's load must not skip the next pause.
"""

import os
import stat
import sys
import threading

QUIT_WORDS = ("q", "quit", "exit")


def stdin_usable(f=None):
    """Whether f (default sys.stdin) can drive the pauses: a terminal, a
    pipe or a file.  /dev/null, a closed descriptor or no stdin cannot:
    each would stop at the first pause (EOF) or wait for nothing."""
    f = sys.stdin if f is None else f
    if f is None:
        return False
    try:
        fd = f.fileno()
        if os.isatty(fd):
            return True
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


class Pauser:
    """Waits at each step for the speaker; see the module's text."""

    def __init__(self, stdin=None):
        self._lock = threading.Lock()
        self._go = threading.Event()
        self._quit = threading.Event()
        self._waiting = ""   # the label of the step waiting, or ""
        self._stdin = stdin
        if stdin is not None:
            threading.Thread(target=self._read, args=(stdin,), daemon=True,
                             name="hslab-pauser").start()

    def _read(self, f):
        while not self._quit.is_set():
            try:
                line = f.readline()
            except (OSError, ValueError):
                line = ""
            if not line:            # end of file: nobody can press Enter
                self.quit()
                return
            if line.strip().lower() in QUIT_WORDS:
                self.quit()
                return
            self.next()

    @property
    def has_stdin(self):
        return self._stdin is not None

    @property
    def waiting(self):
        with self._lock:
            return self._waiting

    @property
    def stopped(self):
        return self._quit.is_set()

    def next(self):
        """Go on with the step waiting; False when none waits."""
        with self._lock:
            if not self._waiting:
                return False
            self._go.set()
            return True

    def quit(self):
        with self._lock:
            self._quit.set()
            self._go.set()

    def wait(self, label):
        """Blocks until next() or quit(); True: load the step."""
        with self._lock:
            if self._quit.is_set():
                return False
            self._go.clear()    # drops an Enter pressed during a load
            self._waiting = label
        try:
            while not self._go.wait(0.5):   # Ctrl-C stays prompt
                pass
        finally:
            with self._lock:
                self._waiting = ""
        return not self._quit.is_set()
