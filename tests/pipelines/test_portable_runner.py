"""The scan on Beam's portable runner, out of process: the Job API service and an SDK
worker pool run as separate processes on free local ports, as a Flink, Spark or
Dataflow job server and its workers would, and the outputs must equal the embedded
run's byte for byte.

This covers the Job API, the portable pipeline graph, every step pickled into another
process and run there, and the driver-side shortcuts being off (pass 0 in the
pipeline, not on the driver). It does not cover a distributed file system or more than
one machine (docs/running-at-scale.md).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from poisonscan import ScanConfig
from poisonscan.pipelines.demo import make_poisoned_digits
from poisonscan.pipelines.drivers.run import Runner, run_scan

from ..conftest import as_table
from ..planted import planted

OUTPUTS = ("quarantine.parquet", "rejected.parquet", "clean.parquet", "review.parquet")
COUNTS = ("rows_read", "rows_clean", "rows_quarantined", "rows_rejected", "classes_poisoned",
          "rejected_by_reason", "classes", "expectations")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_for(port: int, proc: subprocess.Popen, log: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log) as f:
                raise RuntimeError(f"exited with {proc.returncode}: {f.read()[-2000:]}")
        try:
            with socket.create_connection(("localhost", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing listens on port {port} after {seconds:.0f} s")


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    """A Job API service and an SDK worker pool, each its own process. Yields the
    runner and the worker pool's log (which names every worker it starts)."""
    logs = tmp_path_factory.mktemp("portable")
    env = dict(os.environ)
    # the worker pool starts each SDK worker as `python -c ...`: this interpreter's
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    job_port, pool_port = _free_port(), _free_port()
    procs = []
    try:
        for module, args, name in (
            ("apache_beam.runners.portability.local_job_service_main", ["--port", str(job_port)], "job"),
            ("apache_beam.runners.worker.worker_pool_main", ["--service_port", str(pool_port)], "pool"),
        ):
            log = str(logs / f"{name}.log")
            with open(log, "w") as f:
                procs.append((subprocess.Popen([sys.executable, "-m", module, *args], stdout=f,
                                               stderr=subprocess.STDOUT, env=env), log))
        for (proc, log), port in zip(procs, (job_port, pool_port)):
            _wait_for(port, proc, log)
        runner = Runner("PortableRunner", None, (
            f"--job_endpoint=localhost:{job_port}", "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{pool_port}",
        ))
        yield runner, procs[1][1]
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _scan_both(portable, sources, cfg, tmp_path):
    runner, pool_log = portable
    with open(pool_log) as f:
        started_before = f.read().count("Starting worker")
    run_scan(sources, str(tmp_path / "embedded"), cfg)
    run_scan(sources, str(tmp_path / "portable"), cfg, runner)
    with open(pool_log) as f:
        assert f.read().count("Starting worker") > started_before, "no SDK worker ran the portable scan"
    summaries = []
    for side in ("embedded", "portable"):
        with open(tmp_path / side / "summary.json") as f:
            summaries.append(json.load(f))
    emb, port = summaries
    assert emb["settings"]["runner"] == "FnApiRunner" and port["settings"]["runner"] == "PortableRunner"
    for key in COUNTS:
        assert emb[key] == port[key], key
    for name in OUTPUTS:
        a = pq.read_table(tmp_path / "embedded" / name)
        b = pq.read_table(tmp_path / "portable" / name)
        assert a.equals(b), name
    with open(tmp_path / "embedded" / "quarantine.csv", "rb") as a, open(tmp_path / "portable" / "quarantine.csv", "rb") as b:
        assert a.read() == b.read()
    return emb


def test_feature_scan_on_the_portable_runner_equals_the_embedded_run(tmp_path, portable):
    X, y, poison = planted(n_per_class=300, seed=4)
    table = as_table(X, y)
    # rows to reject: a repeated id, a missing label, a vector of the wrong length
    bad = pa.table({
        "id": pa.array([5, 10_001, 10_002]),
        "label": pa.array([0, None, 2]),
        "features": pa.array([list(map(float, X[0])), list(map(float, X[1])), [1.0, 2.0]], pa.list_(pa.float32())),
    })
    table = pa.concat_tables([table.cast(bad.schema), bad])
    half = table.num_rows // 2
    sources = []
    for i, part in enumerate((table.slice(0, half), table.slice(half))):
        sources.append(str(tmp_path / f"part-{i}.parquet"))
        pq.write_table(part, sources[-1], row_group_size=300)
    cfg = ScanConfig(features_column="features", write_clean=True, data_docs=False, report=False)
    s = _scan_both(portable, sources, cfg, tmp_path)
    assert s["rows_read"] == table.num_rows
    assert s["rows_rejected"] == 4  # both copies of id 5, the missing label, the short vector
    q = pq.read_table(tmp_path / "portable" / "quarantine.parquet")
    assert set(q["id"].to_pylist()) == set(poison.tolist())


@pytest.mark.slow
def test_raw_image_scan_on_the_portable_runner_equals_the_embedded_run(tmp_path, portable):
    """Proxy training on the driver, RunInference on the SDK worker, twice."""
    table, truth = make_poisoned_digits(seed=0)
    table = table.drop_columns(["original_label"])
    broken = pa.table({"id": ["broken"], "label": [3], "image": pa.array([b"\x89PNG broken"], pa.binary())})
    table = pa.concat_tables([table, broken.cast(table.schema)])
    src = str(tmp_path / "digits.parquet")
    pq.write_table(table, src, row_group_size=600)
    cfg = ScanConfig(image_column="image", write_clean=True, data_docs=False, report=False)
    s = _scan_both(portable, [src], cfg, tmp_path)
    assert s["rejected_by_reason"] == {"bad_image": 1}
    q = pq.read_table(tmp_path / "portable" / "quarantine.parquet")
    assert q.num_rows and set(q["id"].to_pylist()) <= set(truth)
