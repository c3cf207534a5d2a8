"""CPU time of a process and all its descendants, read from /proc (Linux only).

The gateway's worker processes are children of ``python -m server``; its CPU per reading is the
whole tree's. A process that exits between two snapshots takes its CPU since the first one out
of /proc with it, unless a process of the tree that is still there waited for it (then its whole
lifetime is in that parent's ``cutime``/``cstime``): :func:`cpu_between` adds the reaped
children's time and reports how many processes came and went, so that a reader can tell when
the sum may be short.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcCpu", "TreeCpu", "cpu_between", "cpu_seconds", "descendants", "snapshot"]

_TICK = os.sysconf("SC_CLK_TCK")
#: Kernels without CONFIG_PROC_CHILDREN have no such file: their children are found by ppid.
_HAS_CHILDREN_FILE = Path(f"/proc/self/task/{os.getpid()}/children").exists()


@dataclass(frozen=True)
class ProcCpu:
    """One process's CPU seconds: its own (all threads), and that of the children it has waited for."""

    own: float
    reaped: float


def _stat(pid: int) -> tuple[int, int, ProcCpu] | None:
    """(ppid, starttime, cpu) of ``pid``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # fields[0] is the state (field 3 of proc(5))
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return int(fields[1]), int(fields[19]), ProcCpu((utime + stime) / _TICK, (cutime + cstime) / _TICK)


def cpu_seconds(pid: int) -> float:
    """``pid``'s own CPU seconds, all threads (raises ``ProcessLookupError`` when it is gone)."""
    st = _stat(pid)
    if st is None:
        raise ProcessLookupError(pid)
    return st[2].own


def _children(pid: int) -> list[int]:
    """``pid``'s children: from /proc/<pid>/task/<tid>/children, or by scanning every process's ppid."""
    if _HAS_CHILDREN_FILE:
        found: list[int] = []
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except (FileNotFoundError, ProcessLookupError):
            return []
        for task in tasks:
            try:
                found.extend(int(x) for x in (task / "children").read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that ended
        return found
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[0] == pid:
                out.append(int(entry.name))
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), not ``pid`` itself."""
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in _children(todo.pop()):
            if child not in out:
                out.append(child)
                todo.append(child)
    return out


def snapshot(pid: int) -> dict[tuple[int, int], ProcCpu]:
    """CPU of ``pid`` and its descendants, keyed by (pid, start time) so that a reused pid is not
    taken for the same process."""
    out = {}
    for p in [pid, *descendants(pid)]:
        st = _stat(p)
        if st is not None:
            out[(p, st[1])] = st[2]
    return out


@dataclass(frozen=True)
class TreeCpu:
    """CPU seconds a process tree spent between two snapshots, and how its membership changed."""

    seconds: float
    #: Processes in the tree at the first and at the second snapshot (the root included).
    before: int
    after: int
    #: In the first snapshot only: their CPU after it counts only if a process of the tree reaped them.
    exited: int
    #: In the second snapshot only: counted whole (they started after the first one).
    started: int
    #: The root's own CPU seconds alone.
    root_seconds: float


def cpu_between(first: dict[tuple[int, int], ProcCpu], second: dict[tuple[int, int], ProcCpu],
                root: int) -> TreeCpu:
    """What the tree spent from ``first`` to ``second`` (two :func:`snapshot` of ``root``).

    The sum of every process's own CPU growth (a process new in ``second`` counts whole) plus the
    growth of the CPU of the children each has waited for. A process in ``first`` that was reaped
    before ``second`` has its whole lifetime in its parent's reaped time: the part before
    ``first`` is taken off again. One that exited and was not reaped by the tree (or was reaped
    by init after its parent died) loses its CPU after ``first``: ``exited`` says how many
    processes might have.
    """
    zero = ProcCpu(0.0, 0.0)
    total = 0.0
    for key, cpu in second.items():
        prior = first.get(key, zero)
        total += (cpu.own - prior.own) + (cpu.reaped - prior.reaped)
    gone = [key for key in first if key not in second]
    reaped_growth = sum(cpu.reaped - first.get(key, zero).reaped for key, cpu in second.items())
    # Take off what a reaped process had spent before ``first``, at most what reaping added.
    total -= min(reaped_growth, sum(first[key].own + first[key].reaped for key in gone))
    root_cpu = [cpu.own - first.get(key, zero).own for key, cpu in second.items() if key[0] == root]
    return TreeCpu(seconds=total, before=len(first), after=len(second), exited=len(gone),
                   started=sum(1 for key in second if key not in first), root_seconds=sum(root_cpu))
