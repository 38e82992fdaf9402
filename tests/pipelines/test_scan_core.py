"""The scan core and the review data, used directly, without Beam (docs/architecture.md)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa

from poisonscan.pipelines.config import ScanConfig
from poisonscan.pipelines.drivers.memory import scan_table
from poisonscan.pipelines.io.parts import MemoryPartStore
from poisonscan.pipelines.io.sources import table_batches
from poisonscan.pipelines.scan.finish import Passes, finish
from poisonscan.pipelines.scan.fit import class_partials, fit_model
from poisonscan.pipelines.scan.keys import IdKeys, batch_id_keys
from poisonscan.pipelines.scan.plan import MEMORY_SOURCE, plan_table
from poisonscan.pipelines.scan.ranking import rank_classes
from poisonscan.pipelines.scan.review import GALLERY_PER_CLASS
from poisonscan.pipelines.scan.rows import prepare
from poisonscan.pipelines.scan.score import score_batch, store_outcomes

from ..conftest import as_table, planted

ALONE = """
import sys
import numpy as np, pyarrow as pa
from poisonscan import scan_table
rng = np.random.default_rng(0)
y = rng.integers(0, 4, 800)
X = rng.normal(size=(800, 8)) + 3 * y[:, None]
r = scan_table(pa.table({"id": np.arange(800), "label": y, "features": list(X)}))
s = r.summary
assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"] == 800
print(sorted({m.split(".")[0] for m in sys.modules} & {"apache_beam", "torch", "great_expectations"}))
"""


def test_the_in_memory_scan_loads_no_beam_torch_or_gx():
    out = subprocess.run([sys.executable, "-c", ALONE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_core_steps_driven_by_hand_give_the_in_memory_result():
    X, y, poison = planted(seed=61)
    table = as_table(X, y)
    cfg = ScanConfig(features_column="features", batch_rows=500)
    expected = scan_table(table, cfg)

    plan = plan_table(table.schema, cfg)
    keys = [k for b, first in table_batches(table, 500) for _, k in batch_id_keys(b, 0, first, plan.kinds, "id")]
    checks = plan.checks(duplicates=IdKeys.concat(keys).duplicates())
    detectors = plan.detectors()
    partials: dict = {}
    for b, first in table_batches(table, plan.batch_rows):
        for key, part in class_partials(prepare(b, 0, first, checks), detectors, plan.cfg, plan.layout):
            partials[key] = part if key not in partials else partials[key].merge(part, detectors)
    model = fit_model(partials, detectors, plan.cfg, plan.layout)
    store = MemoryPartStore()
    scored_checks = plan.checks(duplicates=checks.duplicates, expected_dim=model.dim, small_classes=model.small_classes)
    outcomes = (
        score_batch(prepare(b, 0, first, scored_checks), model, detectors, MEMORY_SOURCE, keep_clean=True, seed=0)
        for b, first in table_batches(table, plan.batch_rows)
    )
    fin = finish(plan, Passes(store, model, store_outcomes(store, "unit", outcomes)), [MEMORY_SOURCE])

    assert fin.quarantine["id"].to_pylist() == expected.quarantine["id"].to_pylist()
    assert fin.quarantine["reason"].to_pylist() == expected.quarantine["reason"].to_pylist()
    assert set(fin.quarantine["id"].to_pylist()) <= set(poison.tolist()) and fin.quarantine.num_rows >= 25
    for key in ("rows_read", "rows_clean", "rows_quarantined", "rows_rejected", "classes_poisoned"):
        assert fin.summary[key] == expected.summary[key]


def test_review_data_hold_the_gallery_contrast_and_projections():
    X, y, poison = planted(seed=62)
    result = scan_table(as_table(X, y), features_column="features")
    table, data = result.review
    flagged = table.filter(pa.compute.equal(table["role"], "flagged"))
    contrast = table.filter(pa.compute.equal(table["role"], "contrast"))
    q = result.quarantine
    assert data["gallery"]["rows_quarantined"] == q.num_rows > 0
    assert data["gallery"]["rows_shown"] == flagged.num_rows == min(q.num_rows, GALLERY_PER_CLASS)
    assert flagged["id"].to_pylist() == q["id"].to_pylist()[: flagged.num_rows]  # most suspicious first
    assert flagged["rank"].to_pylist() == list(range(1, flagged.num_rows + 1))
    assert contrast.num_rows > 0 and not set(contrast["id"].to_pylist()) & set(q["id"].to_pylist())
    assert set(contrast["label"].to_pylist()) == set(flagged["label"].to_pylist())
    views = {c["label"]: c for c in data["classes"]}
    assert sorted(views) == [0, 1, 2, 3]
    assert data["kind"] == "features" and data["id_column"] == "id"


def test_classes_are_ranked_by_their_strongest_evidence():
    X, y, _ = planted(seed=63)
    result = scan_table(as_table(X, y), features_column="features")
    ranking, _ = rank_classes(result.summary["classes"])
    assert ranking == result.summary["class_ranking"]
    assert ranking[0]["label"] == 1  # the class that holds the planted group
    assert [r["label"] for r in ranking].count(1) == 1 and len(ranking) == 4
