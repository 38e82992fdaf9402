"""summary.json: the verdicts, counts, decisions and settings of a finished scan."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import pyarrow as pa

from poisonscan.detectors import (
    Detector,
)
from poisonscan.detectors.base import label_sort_key
from poisonscan.pipelines.config import ScanConfig
from poisonscan.pipelines.io.folders import IMAGE_FOLDER
from poisonscan.pipelines.scan.fit import ScanModel
from poisonscan.pipelines.scan.plan import ScanPlan
from poisonscan.pipelines.scan.ranking import rank_classes
from poisonscan.pipelines.scan.rows import small_class_variants, variant_note
from poisonscan.pipelines.scan.score import Counts
from poisonscan.pipelines.scan.values import plain

# pass 0 ---------------------------------------------------------------------------------
#: the verdicts of a scan in which every row was rejected, or none was read (the CLI
#: exits 6 for both)
NOTHING_SCANNED = "nothing scanned: every row was rejected"

NOTHING_READ = "nothing scanned: the input holds no rows"


def summarize(
    plan: ScanPlan,
    model: ScanModel,
    counts: Counts,
    quarantine: pa.Table,
    detectors: Sequence[Detector],
    inputs: Sequence[str],
    own_model: ScanModel | None = None,
) -> dict:
    """summary.json: counts that add up, per-class figures and verdicts, the classes
    ranked by their strongest evidence (:func:`.ranking.rank_classes`), settings. The
    finish step adds the budget. ``own_model``: the rows were scored with a reference
    scan's ``model`` and verdicts, and this is the model of the rows read."""
    cfg = plan.cfg
    rows_q = quarantine.num_rows
    valid = counts.read - counts.rejected
    classes = _classes(model, counts, quarantine, cfg.min_class_rows, reference=own_model is not None)
    _check_accounting(classes, counts, rows_q)
    ranking, near_miss = rank_classes(classes)
    return {
        "verdict": "poison found" if rows_q else (
            "no poison found" if valid else NOTHING_SCANNED if counts.read else NOTHING_READ
        ),
        "rows_read": counts.read,
        "rows_clean": valid - rows_q,
        "rows_quarantined": rows_q,
        "rows_rejected": counts.rejected,
        "classes_poisoned": [c["label"] for c in classes if c.get("poisoned")],
        "budget": None,
        "rejected_by_reason": dict(sorted(counts.by_error.items())),
        "dimension": model.dim,
        "vector_lengths_seen": {str(k): v for k, v in sorted((own_model or model).rows_by_dim.items())},
        "classes": classes,
        "class_ranking": ranking,
        "near_miss": near_miss,
        "detectors": _detectors(model, quarantine, detectors),
        "decision": cfg.build_group_test(detectors).get_params(),
        # the bound on a clean scan's false alarms, split between the families of evidence
        "false_alarms": cfg.false_alarms(detectors),
        "inputs": list(inputs),
        # each input's format, as the scan read it (apply reads the inputs so again)
        "input_formats": {u.path: u.format for u in plan.units},
        "inputs_read_as": read_as(plan.units),
        "settings": cfg.to_dict(),
    }


def read_as(units) -> dict:
    """How each CSV or JSONL file whose reading was told from its contents was read: a
    CSV's separator and decimal point where they are not a comma and a point, and the
    columns read as text because their values do not all fit the type of the first
    rows, and the files of nothing but white space (``empty_file``, no rows); and each
    folder of images, with its images and the other files it holds, passed over
    (``image_folder``) (``{path: {...}}``; files read as written are left out)."""
    out: dict = {}
    for unit in units:
        entry: dict = {}
        if unit.format == IMAGE_FOLDER:
            held = out.setdefault(unit.path, {"image_folder": {"images": 0, "other_files": unit.other_files,
                                                                "listing": unit.listing}})
            held["image_folder"]["images"] += unit.rows or 0
            continue
        if unit.blank:
            out[unit.path] = {"empty_file": True}
            continue
        dialect = unit.dialect
        if unit.format == "csv" and (dialect.delimiter, dialect.decimal_point) != (",", "."):
            entry["separator"] = dialect.delimiter
            entry["decimal_point"] = dialect.decimal_point
        if unit.text_columns:
            entry["text_columns"] = list(unit.text_columns)
        if entry:
            out[unit.path] = entry
    return out


def budget_block(cfg: ScanConfig, cap: int | None, flagged: int, quarantined: int) -> dict:
    """The budget's part of the summary: how many rows it allowed and left in the clean split."""
    return {
        "expected_poison_rate": cfg.expected_poison_rate,
        "max_rows": cap,
        "rows_flagged": flagged,
        "rows_left_in_clean_by_budget": flagged - quarantined,
    }


def _classes(model: ScanModel, counts: Counts, quarantine: pa.Table, min_class_rows: int,
             reference: bool = False) -> list[dict]:
    """One entry per class: its rows, and its verdicts or why it was not judged. With a
    ``reference`` (its model and verdicts scored the rows), a class is poisoned here
    only where this scan has valid rows of it."""
    q_labels = Counter(
        plain(v) for v in quarantine.column("label").to_pylist()
    ) if quarantine.num_rows else Counter()
    classes = []
    labels = set(counts.by_class) | set(model.classes) | set(model.small_classes)
    variants = small_class_variants(model.small_classes, model.scorable_classes)
    for label in sorted(labels, key=label_sort_key):
        read, v, _flag, rej = counts.by_class.get(label, [0, 0, 0, 0])
        entry = {
            "label": label,
            "rows_read": read,
            "rows_valid": v,
            "rows_quarantined": q_labels.get(label, 0),
            "rows_rejected": rej,
            "rows_clean": v - q_labels.get(label, 0),
        }
        if label in model.classes:
            cm = model.classes[label]
            entry["status"] = "scanned"
            entry["poisoned"] = any(cm.active.values()) and (v > 0 or not reference)
            entry["sample_rows"] = cm.sample_rows
            entry["verdicts"] = {
                name: {**vd.to_dict(), "counted": bool(cm.active.get(name))}
                for name, vd in cm.verdicts.items()
            }
        elif label in model.small_classes:
            entry["status"] = (
                f"too few valid rows to judge ({model.small_classes[label]} < {min_class_rows}); rejected"
                + variant_note(variants.get(label))
            )
            entry["poisoned"] = None
        else:
            entry["status"] = "no valid rows"
            entry["poisoned"] = None
        classes.append(entry)
    return classes


def _detectors(model: ScanModel, quarantine: pa.Table, detectors: Sequence[Detector]) -> dict:
    """Per detector: its parameters, the classes it judged poisoned, the rows it flags."""
    lists = quarantine.column("detectors").to_pylist() if quarantine.num_rows else []
    return {
        det.name: {
            "params": det.get_params(),
            "classes_poisoned": [label for label, cm in model.classes.items() if cm.active.get(det.name)],
            "rows_quarantined": int(sum(1 for ds in lists if det.name in ds)),
        }
        for det in detectors
    }


def _check_accounting(classes: list[dict], counts: Counts, rows_q: int) -> None:
    """Every row read is accounted for, class by class; fail the scan if not."""
    unlabelled = sum(counts.by_error.get(code, 0) for code in ("missing_label", "bad_label_encoding", "non_integer_label", "unreadable_row"))
    if (
        sum(c["rows_read"] for c in classes) + unlabelled != counts.read
        or sum(c["rows_quarantined"] for c in classes) != rows_q
        or any(c["rows_clean"] < 0 for c in classes)
        or rows_q > counts.flagged
    ):
        raise RuntimeError(
            f"row accounting failed: read {counts.read}, quarantined {rows_q} of "
            f"{counts.flagged} flagged, rejected {counts.rejected}"
        )
