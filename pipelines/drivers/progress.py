"""Progress of a scan: rows read, valid, flagged per pass, with rate and time left.

The steps count rows in Beam metrics (namespace ``poisonscan``), so every runner has the
same counters: a cluster's own interface shows them live, and the driver prints them
when the pipeline ends. Beam's embedded runner reports metrics only when the pipeline
ends, so workers on the driver's machine also leave their running counts in a folder
(the output's staging area) that the driver reads a few times a second: a progress bar
per pass on a terminal (tqdm), a line every ``interval`` seconds otherwise, nothing with
``-q``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import uuid
from typing import IO, Mapping

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

NAMESPACE = "poisonscan"

#: the passes, in order, with what the display calls them and the counts each keeps
PASSES = {
    "sample": ("sampling", ("read",)),
    "pass0": ("pass 0, ids", ("read",)),
    "pass1": ("pass 1, fit", ("read", "valid")),
    # classes fitted (each in its own element); "read" counts the rows of those classes,
    # out of pass 1's valid rows
    "fit": ("fitting classes", ("read", "classes")),
    "pass2": ("pass 2, score", ("read", "rejected", "flagged")),
}

#: what a pass's main count is called on a line (default: rows read)
_ROWS = {"fit": "rows in classes fitted"}


class RowCounts:
    """A step's row counts: Beam counters ``<pass>_<count>``, and, with a ``folder``,
    the running totals of this instance in a file there (written at most twice a
    second, and when a bundle ends)."""

    def __init__(self, stage: str, folder: str | None):
        self.stage, self.folder = stage, folder
        self.names = PASSES[stage][1]
        self.counters = {n: Metrics.counter(NAMESPACE, f"{stage}_{n}") for n in self.names}
        self.totals = dict.fromkeys(self.names, 0)
        self.path = None
        self.written = 0.0

    def add(self, **counts: int) -> None:
        for name, n in counts.items():
            if n:
                self.counters[name].inc(int(n))
                self.totals[name] += int(n)
        if self.folder is not None and time.monotonic() - self.written > 0.5:
            self.flush()

    def flush(self) -> None:
        if self.folder is None:
            return
        self.written = time.monotonic()
        if self.path is None:
            self.path = os.path.join(self.folder, f"{self.stage}-{uuid.uuid4().hex}.json")
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.totals, f)
            os.replace(tmp, self.path)
        except OSError:  # a display aid: a full disk or a vanished folder must not fail the scan
            pass


def read_folder(folder: str) -> dict:
    """``{pass: {count: total}}`` summed over the files workers left in ``folder``."""
    out: dict = {}
    try:
        names = os.listdir(folder)
    except OSError:
        return out
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name)) as f:
                counts = json.load(f)
        except (OSError, ValueError):
            continue  # being replaced
        stage = out.setdefault(name.split("-", 1)[0], {})
        for k, v in counts.items():
            stage[k] = stage.get(k, 0) + int(v)
    return out


def beam_counts(result) -> dict:
    """``{pass: {count: total}}`` from a finished pipeline's Beam metrics (committed
    values where the runner has them)."""
    out: dict = {}
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except Exception:  # a runner without metrics: nothing to show
        return out
    for c in counters:
        stage, _, name = c.key.metric.name.partition("_")
        if stage not in PASSES:
            continue
        value = c.committed if c.committed is not None else c.attempted
        out.setdefault(stage, {})
        out[stage][name] = out[stage].get(name, 0) + int(value or 0)
    return out


def describe(stage: str, counts: Mapping[str, int], total: int | None, seconds: float | None = None) -> str:
    """One line: ``pass 2, score: 12,000 of 20,000 rows read (60%), 3 rejected, ...``."""
    read = counts.get("read", 0)
    text = f"{PASSES[stage][0]}: {read:,}" + (f" of {total:,}" if total else "") + " " + _ROWS.get(stage, "rows read")
    if total:
        text += f" ({read / total:.0%})"
    extras = [f"{counts.get(n, 0):,} {n}" for n in PASSES[stage][1][1:]]
    if extras:
        text += ", " + ", ".join(extras)
    if seconds and read:
        rate = read / seconds
        text += f"; {rate:,.0f} rows/s"
        if total and read < total:
            text += f", about {(total - read) / rate:,.0f} s left"
    return text


class ProgressView:
    """The driver's display of the workers' counts (see the module's docstring).

    ``mode``: ``"bar"`` (a terminal), ``"log"`` (a line every ``interval`` seconds) or
    ``"off"``. ``totals``: rows each pass will read, where known (Parquet metadata)."""

    def __init__(self, folder: str | None, totals: Mapping[str, int | None], mode: str,
                 interval: float = 10.0, stream: IO | None = None):
        self.folder, self.totals, self.mode = folder, dict(totals), mode
        self.interval = interval
        self.stream = stream or sys.stderr
        self.bars: dict = {}
        self.first_seen: dict = {}
        self.last_log = time.monotonic()
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def mode_for(quiet: bool, stream: IO | None = None) -> str:
        stream = stream or sys.stderr
        if quiet:
            return "off"
        return "bar" if getattr(stream, "isatty", lambda: False)() else "log"

    def start(self) -> "ProgressView":
        if self.mode != "off" and self.folder is not None:
            self._thread = threading.Thread(target=self._run, name="poisonscan-progress", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.show(read_folder(self.folder))

    def show(self, counts: dict) -> None:
        now = time.monotonic()
        for stage in PASSES:
            if counts.get(stage, {}).get("read"):
                self.first_seen.setdefault(stage, now)
        if self.mode == "bar":
            self._bars(counts)
        elif self.mode == "log" and now - self.last_log >= self.interval:
            self.last_log = now
            for stage in PASSES:
                if stage in counts and not self._done(stage, counts):
                    self._line(describe(stage, counts[stage], self._total(stage, counts), now - self.first_seen[stage]))

    def _total(self, stage: str, counts: Mapping) -> int | None:
        if stage == "fit":  # the classes hold pass 1's valid rows, known once it has ended
            return counts.get("pass1", {}).get("valid") if self._done("pass1", counts) else None
        return self.totals.get(stage)

    def _done(self, stage: str, counts: Mapping) -> bool:
        total = self._total(stage, counts)
        return bool(total) and counts.get(stage, {}).get("read", 0) >= total

    def _bars(self, counts: dict) -> None:
        # tqdm: imported when a terminal shows the bars
        from tqdm import tqdm

        for stage, (title, names) in PASSES.items():
            c = counts.get(stage)
            if not c:
                continue
            bar = self.bars.get(stage)
            total = self._total(stage, counts)
            if bar is not None and bar.total != total:
                bar.total = total  # known once pass 1 has ended (fitting classes)
            if bar is None:
                size = shutil.get_terminal_size((100, 24))
                bar = self.bars[stage] = tqdm(
                    total=total, desc=title.split(",")[0], unit=" rows", unit_scale=True,
                    file=self.stream, leave=True, mininterval=0.2,
                    # a terminal that reports no size (0 x 0) gets 100 x 24: tqdm would
                    # hide every bar below its last row
                    ncols=size.columns, nrows=size.lines,
                )
            bar.update(c.get("read", 0) - bar.n)
            if len(names) > 1:
                bar.set_postfix({n: f"{c.get(n, 0):,}" for n in names[1:]}, refresh=False)
            bar.refresh()

    def _line(self, text: str) -> None:
        self.stream.write(f"poisonscan: {text}\n")
        self.stream.flush()

    def close(self, result=None) -> None:
        """Stop; the last counts shown, then the pipeline's Beam metrics (``result``)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            if self.mode == "bar":
                self.show(read_folder(self.folder))
        for bar in self.bars.values():
            bar.close()
        self.bars = {}
        if self.mode == "off" or result is None:
            return
        counts = beam_counts(result)
        if counts:
            self._line("Beam metrics: " + "; ".join(
                describe(stage, counts[stage], None) for stage in PASSES if stage in counts
            ))
