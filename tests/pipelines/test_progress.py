"""Progress on long work: bars on a terminal, log lines otherwise, nothing with -q."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from poisonscan.pipelines.demo import make_poisoned_digits
from poisonscan.pipelines.drivers.progress import ProgressView, RowCounts, describe, read_folder

EXE = os.path.join(os.path.dirname(sys.executable), "poisonscan")


@pytest.fixture(scope="module")
def rows20k(tmp_path_factory):
    rng = np.random.default_rng(0)
    n, d = 20_000, 32
    y = rng.integers(0, 5, n)
    X = (rng.normal(size=(n, d)) + y[:, None]).astype(np.float32)
    path = tmp_path_factory.mktemp("progress") / "rows.parquet"
    pq.write_table(pa.table({"id": np.arange(n), "label": y, "features": pa.array(list(X), pa.list_(pa.float32()))}),
                   path, row_group_size=2000)
    return str(path)


def _in_terminal(args, cwd):
    """Run ``args`` with stdin, stdout and stderr on a pseudo-terminal; (rc, output)."""
    master, slave = pty.openpty()
    env = dict(os.environ, COLUMNS="120", LINES="24")  # a terminal's size (a new one reports 0 x 0)
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, close_fds=True, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            ready, _, _ = select.select([master], [], [], 1)
        except OSError:
            break
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal closed: the process ended
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=60), out.decode("utf-8", "replace")


def test_a_20k_row_scan_shows_progress_bars_in_a_terminal(rows20k, tmp_path):
    rc, out = _in_terminal([EXE, "scan", rows20k, "--features-column", "features", "--out", "out", "--no-data-docs"],
                           tmp_path)
    assert rc == 0, out[-2000:]
    # a bar per pass, with the total from the Parquet metadata, the rate and the counts
    assert "pass 1: 100%" in out and "pass 2: 100%" in out
    # the classes' fits between the passes, out of pass 1's valid rows
    assert "fitting classes: 100%" in out and "classes=5" in out
    for part in ("20.0k/20.0k", "rows/s", "valid=20,000", "rejected=0", "flagged="):
        assert part in out, (part, out[-3000:])
    # and the counts again from Beam's metrics, as any runner has them
    assert ("poisonscan: Beam metrics: pass 1, fit: 20,000 rows read, 20,000 valid; fitting classes: 20,000 rows "
            "in classes fitted, 5 classes; pass 2, score: 20,000 rows read") in out
    assert "scanned 20,000 rows" in out


def test_log_lines_when_not_a_terminal_and_nothing_with_quiet(rows20k, tmp_path):
    run = subprocess.run([EXE, "scan", rows20k, "--features-column", "features", "--out", "a", "--no-data-docs"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr and "%|" not in run.stderr  # no bar in a log
    assert run.stderr.splitlines()[-1].startswith("poisonscan: Beam metrics: pass 1, fit: 20,000 rows read")
    quiet = subprocess.run([EXE, "scan", rows20k, "--features-column", "features", "--out", "b", "--no-data-docs", "-q"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_workers_leave_counts_that_the_view_sums_into_lines(tmp_path):
    a, b = RowCounts("pass2", str(tmp_path)), RowCounts("pass2", str(tmp_path))
    a.add(read=6_000, rejected=2, flagged=5)
    b.add(read=4_000, flagged=1)
    a.flush()
    b.flush()
    counts = read_folder(str(tmp_path))
    assert counts == {"pass2": {"read": 10_000, "rejected": 2, "flagged": 6}}
    stream = io.StringIO()
    view = ProgressView(str(tmp_path), {"pass2": 40_000}, "log", interval=0, stream=stream)
    view.first_seen["pass2"] = view.last_log - 2.0  # two seconds in
    view.show(counts)
    line = stream.getvalue()
    assert line.startswith("poisonscan: pass 2, score: 10,000 of 40,000 rows read (25%), 2 rejected, 6 flagged; ")
    assert "rows/s, about" in line and "s left" in line
    assert describe("pass1", {"read": 5, "valid": 4}, None) == "pass 1, fit: 5 rows read, 4 valid"
    # the fits' total is pass 1's valid rows, once pass 1 has read every row
    stream = io.StringIO()
    view = ProgressView(str(tmp_path), {"pass1": 10_000}, "log", interval=0, stream=stream)
    view.first_seen["fit"] = view.last_log - 2.0
    view.show({"pass1": {"read": 10_000, "valid": 9_990}, "fit": {"read": 4_000, "classes": 2}})
    assert "poisonscan: fitting classes: 4,000 of 9,990 rows in classes fitted (40%), 2 classes; " in stream.getvalue()


def test_proxy_training_shows_its_epochs(tmp_path):
    table, _ = make_poisoned_digits(seed=0)
    pq.write_table(table.drop_columns(["original_label"]), tmp_path / "digits.parquet")
    run = subprocess.run([EXE, "scan", "digits.parquet", "--image-column", "image", "--out", "out", "--no-data-docs",
                          "--no-report", "--proxy-epochs", "2", "--progress", "log"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if "training the image proxy" in ln]
    assert "network 1 of 1, epoch 1 (at most 2) done, 1,797/3,594 rows" in lines[0]
    assert "network 1 of 1, epoch 2 (at most 2) done, 3,594/3,594 rows" in lines[-1]
    assert "sampling: 1,797 rows read" in run.stderr  # the sampling pipeline's metrics


def _training_log(epochs: int, interval: float) -> list[str]:
    from poisonscan.pipelines.represent.proxy import Progress

    stream = io.StringIO()
    shown = Progress("training the image proxy", 100 * epochs, stream=stream, mode="log", interval=interval)
    for run in range(1, epochs + 1):
        shown.epoch(run, epochs, 1, 1)
        shown.add(100)
    shown.close()
    return stream.getvalue().splitlines()


def test_proxy_training_log_is_not_a_line_per_epoch():
    lines = _training_log(30, 3600.0)
    # the first epoch and the last; the 28 between fell within the interval
    assert len(lines) == 2
    assert "epoch 1 (at most 30) done, 100/3,000 rows" in lines[0]
    assert "epoch 30 (at most 30) done, 3,000/3,000 rows" in lines[1]
    assert len(_training_log(3, 0.0)) == 3  # no interval: every epoch
