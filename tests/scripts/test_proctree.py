"""The benchmark's CPU sum over a process and its descendants (the gateway's worker processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from scripts.harness.proctree import cpu_between, descendants, snapshot

#: A parent that starts a grandchild-holding child: the grandchild burns CPU until killed.
BURN = "import time\nwhile True:\n    pass\n"
PARENT = (
    "import subprocess, sys, time\n"
    f"child = subprocess.Popen([sys.executable, '-c', {BURN!r}])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def test_the_sum_includes_a_grandchild_burning_cpu() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    burner = 0
    try:
        assert parent.stdout is not None
        burner = int(parent.stdout.readline())
        assert descendants(parent.pid) == [burner]
        first = snapshot(parent.pid)
        assert {pid for pid, _ in first} == {parent.pid, burner}
        time.sleep(1.0)
        second = snapshot(parent.pid)
        tree = cpu_between(first, second, parent.pid)
        # The burner had most of a core for a second; the sleeping parent almost nothing.
        assert tree.seconds > 0.3
        assert tree.root_seconds < 0.1
        assert (tree.before, tree.after, tree.exited, tree.started) == (2, 2, 0, 0)
    finally:
        if burner:
            os.kill(burner, signal.SIGKILL)
        parent.kill()
        parent.wait()


def test_a_child_reaped_during_the_run_is_counted_through_its_parent() -> None:
    # The child burns for about 0.6 s and exits; the parent waits for it (its cutime grows).
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time\\nend = time.monotonic() + 0.6\\n"
        "while time.monotonic() < end: pass'])\n"
        "print(child.pid, flush=True)\n"
        "sys.stdin.readline()\n"
        "child.wait()\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None and parent.stdin is not None
        int(parent.stdout.readline())
        first = snapshot(parent.pid)
        parent.stdin.write("go\n")
        parent.stdin.flush()
        time.sleep(1.5)
        tree = cpu_between(first, snapshot(parent.pid), parent.pid)
        assert tree.exited == 1 and tree.after == 1
        assert 0.2 < tree.seconds < 1.0
    finally:
        parent.kill()
        parent.wait()
