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
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # user + system time of the process and all it waited for


def run_measured(command: list, env: dict | None = None, poll: float = 0.02) -> Run:
    """Run a command; wall time, CPU time and the peak of the summed RSS of its process
    tree (one command at a time: the CPU time is this process's children's, before
    and after)."""
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
        while not done.is_set():
            try:
                procs = [parent] + parent.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
                peak = max(peak, total)
            except psutil.NoSuchProcess:
                return
            time.sleep(poll)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    t.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(command, seconds, peak / 2**20, proc.returncode, out, err, cpu)


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
