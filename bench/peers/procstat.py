"""CPU time and peak memory of a target's whole process tree, from /proc.

A proxy may fork workers (LiteLLM's `--num_workers`, hybridgate's `--workers`), so what it
costs is summed over the root process and every descendant alive at the time.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree(root: int) -> list[int]:
    """`root` and its descendants, by parent pid."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat_fields(int(entry))[1])
            except (OSError, IndexError, ValueError):
                continue  # gone since listdir
            children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> dict[int, float]:
    """utime + stime of each process of the tree, so a delta survives workers coming and going."""
    out: dict[int, float] = {}
    for pid in tree(root):
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        out[pid] = (int(f[11]) + int(f[12])) / TICKS
    return out


def peak_rss_kb(root: int) -> tuple[int, int]:
    """(sum of VmHWM over the tree in KiB, number of processes)."""
    pids = tree(root)
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total, len(pids)
