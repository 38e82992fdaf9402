"""Helpers shared by the benchmarks: timed subprocess runs and docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs", "benchmarks.md")
BIN = os.path.dirname(sys.executable)


@dataclass
class Run:
    command: list
    seconds: float
    peak_mb: float
    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # user + system time of the process and all it waited for


def _proportional_bytes(p: psutil.Process) -> int:
    """The process's proportional set size (a page shared by k processes counts 1/k to
    each), from /proc/PID/smaps_rollup (0.5 ms for a 1.7 GB process); its RSS where the
    kernel has no such file. Summed RSS counts shared pages once per process: a child
    started by vfork, before its exec, can show all of its parent's memory as its own: a
    1M-vector scan's tree once peaked at 2,176 MB summed where the scan alone peaks at
    1.66-1.74 GB and its only child is ``lscpu`` (started by a library counting cores)."""
    try:
        with open(f"/proc/{p.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return p.memory_info().rss


def run_measured(command: list, env: dict | None = None, poll: float = 0.25) -> Run:
    """Run a command; wall time, CPU time and its peak memory (one command at a time: the
    CPU time is this process's children's, before and after).

    The peak is the larger of the kernel's own figure, the largest RSS any one process of
    the tree reached (``wait4``'s ``ru_maxrss``: exact, free, blind to a sum over
    processes), and the largest sum of the tree's proportional set sizes
    (:func:`_proportional_bytes`) sampled every ``poll`` seconds. The sampling is slow on
    purpose: every 20 ms it made a 1M-vector scan 30 % slower (27-28 s against 21-22 s
    at 250 ms, runs in turn), and with it every ratio to the floor."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        try:
            parent = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.wait(poll):
            try:
                procs = [parent] + parent.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        total += _proportional_bytes(p)
                    except psutil.NoSuchProcess:
                        pass
                peak = max(peak, total)
            except psutil.NoSuchProcess:
                return

    streams = {}

    def read(name, stream):
        streams[name] = stream.read()

    threads = [threading.Thread(target=sample, daemon=True)] + [
        threading.Thread(target=read, args=(n, s), daemon=True) for n, s in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    for t in threads:
        t.join()
    proc.stdout.close()
    proc.stderr.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak = max(peak, usage.ru_maxrss * 1024)  # Linux: kilobytes
    return Run(command, seconds, peak / 2**20, proc.returncode, streams.get("out", ""), streams.get("err", ""), cpu)


def machine() -> str:
    return (
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )


def write_section(name: str, text: str, path: str = DOCS) -> None:
    """Replace (or append) the section between markers ``name`` in ``path``
    (docs/benchmarks.md unless given)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.strip()}\n{end}"
    doc = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    doc = pattern.sub(lambda _: block, doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)


def best_f1(separation: float, share: float) -> float:
    """The best F1 any detector can reach on a class in which ``share`` of the rows are
    shifted ``separation`` (Mahalanobis units) from the rest, both groups Gaussian with
    the class's covariance: the F1 of the best cut along the true discriminant, with the
    shift, the covariance and the share all known (the F1 in expectation over rows).

    Two Gaussians that close overlap: whatever a detector does, some shifted rows look
    like clean ones and some clean rows like shifted ones. For 4 SD the limit is 0.82 at
    0.5 % of a class, 0.88 at 2 %, 0.94 at 10 % and 0.96 at 20 % (benchmarks' shift
    conditions report it beside the detector's F1)."""
    from scipy.stats import norm

    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}")
    cut = np.linspace(-6.0, separation + 6.0, 40_001)
    tp = share * norm.sf(cut - separation)
    fp = (1 - share) * norm.sf(cut)
    return float((2 * tp / (tp + fp + share)).max())
