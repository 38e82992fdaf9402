"""The finish step: the budget, the quarantine list, the clean split and the rejected
rows, from the part files of pass 2."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from poisonscan.detectors import (
    Detector,
    budget_cap,
    select_within_budget,
)
from poisonscan.detectors.base import group_rows_by_label
from poisonscan.expectations.results import (
    ScanFacts,
    expectation_results,
    summary_block,
)
from poisonscan.pipelines.config import ScanConfig
from poisonscan.pipelines.io.columns import ColumnKinds
from poisonscan.pipelines.io.parts import PartStore
from poisonscan.pipelines.io.sources import decode_position
from poisonscan.pipelines.scan.cells import key_values, normalize_key
from poisonscan.pipelines.scan.columns import (
    CAND_CONTENT,
    CAND_SCORE,
    POS,
    REJECT_COLUMNS,
    raw_column,
    strength_column,
    why_column,
)
from poisonscan.pipelines.scan.fit import ScanModel
from poisonscan.pipelines.scan.plan import ScanPlan
from poisonscan.pipelines.scan.ranking import evidence_ratio
from poisonscan.pipelines.scan.review import build_review
from poisonscan.pipelines.scan.score import UnitResult
from poisonscan.pipelines.scan.summary import budget_block, summarize
from poisonscan.pipelines.scan.values import fmt_label, plain


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (missing ones null), cast to its types."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def unified_schema(schemas: Sequence[pa.Schema], drop: Sequence[str] = ()) -> pa.Schema | None:
    """One schema for the outputs of files whose schemas differ: types promoted (int64
    and double: double), and a column of numbers, dates or booleans in one file and of
    text in another (a word among its numbers made the reader take it as text there)
    is text. Other disagreements are an error that names the column."""
    schemas = [pa.schema([f for f in s if f.name not in drop]) for s in schemas]
    if not schemas:
        return None
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    fields = []
    for name in dict.fromkeys(f.name for s in schemas for f in s):
        types = list(dict.fromkeys(s.field(name).type for s in schemas if name in s.names))
        try:
            one = [pa.schema([pa.field(name, t)]) for t in types]
            fields.append(pa.unify_schemas(one, promote_options="permissive").field(name))
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            if not all(_writes_as_text(t) for t in types):
                raise ValueError(
                    f"the column {name!r} holds {' in some inputs, '.join(map(str, types))} in others; "
                    "write it one way in every input"
                ) from None
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


def _writes_as_text(t: pa.DataType) -> bool:
    """Whether a column of type ``t`` casts to text (a scalar: number, boolean, date, text)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)
            or pa.types.is_temporal(t) or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t))


def quarantine_schema(kinds: ColumnKinds, detectors: Sequence[str]) -> pa.Schema:
    fields = [
        pa.field("id", kinds.id_type),
        pa.field("label", kinds.label_type),
        pa.field("score", pa.float64()),
        pa.field("detectors", pa.list_(pa.string())),
        pa.field("reason", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("source_row", pa.int64()),
        pa.field("content", pa.string()),
    ]
    fields += [pa.field(f"score_{d}", pa.float64()) for d in detectors]
    return pa.schema(fields)


def select_quarantine(
    positions: np.ndarray, strength: np.ndarray, cap: int | None
) -> np.ndarray:
    """Positions of the flagged rows that are quarantined (budget applied), sorted."""
    keep = select_within_budget(strength, positions, cap)
    return np.sort(positions[keep])


def build_quarantine(
    plan: ScanPlan,
    candidates: pa.Table | None,
    selected: np.ndarray,
    model: ScanModel,
    detectors: Sequence[Detector],
) -> tuple[pa.Table, pa.Table | None, pa.Table | None]:
    """(quarantine list, flagged rows not quarantined because of the budget, the
    quarantined rows as read in the list's order)."""
    cfg, kinds = plan.cfg, plan.kinds
    schema = quarantine_schema(kinds, [d.name for d in detectors])
    if candidates is None or candidates.num_rows == 0:
        return schema.empty_table(), None, None
    pos = candidates.column(POS).to_numpy()
    chosen = np.isin(pos, selected)
    trimmed = candidates.filter(pa.array(~chosen)) if not chosen.all() else None
    q = candidates.filter(pa.array(chosen))
    labels_arr = normalize_key(q.column(cfg.label_column), kinds.label_type)
    qpos = q.column(POS).to_numpy()
    # each row's detectors are listed in its reason's order (the strongest verdict first)
    reasons, flagged_by = _reasons(q, [plain(v) for v in key_values(labels_arr)], model, detectors,
                                   _flagged_counts(candidates, cfg, kinds, detectors))
    src = [decode_position(p) for p in qpos]
    table = pa.Table.from_arrays(
        [
            normalize_key(q.column(cfg.id_column), kinds.id_type),
            labels_arr,
            q.column(CAND_SCORE),
            pa.array(flagged_by, pa.list_(pa.string())),
            pa.array(reasons, pa.string()),
            pa.array([plan.file_paths.get(f, str(f)) for f, _ in src], pa.string()),
            pa.array([r for _, r in src], pa.int64()),
            q.column(CAND_CONTENT),
        ]
        + [q.column(raw_column(d.name)) for d in detectors],
        schema=schema,
    )
    order = pa.array(np.lexsort((qpos, -table.column("score").to_numpy())))
    return table.take(order), trimmed, q.take(order)


def _reasons(q: pa.Table, labels: list, model: ScanModel, detectors: Sequence[Detector],
             flagged_counts: dict) -> tuple[list[str], list[list[str]]]:
    """Each quarantined row's reason, and the detectors that flagged it in the reason's
    order. The reason: every detector that flagged the row (each wrote its words for it),
    in its words, with the share of the class it flags and how improbable the class's
    evidence is. The detector whose class verdict a clean class would give least often
    comes first (its p-value furthest below its threshold): where a trigger detector names
    the stamp and a group detector a cluster, the reviewer reads the stronger evidence
    first; ties, and verdicts without a p-value, keep the detectors' order."""
    whys = {d.name: q.column(why_column(d.name)).to_pylist() for d in detectors}
    reasons, names = [], []
    for i, label in enumerate(labels):
        parts = []  # (the class verdict's p / level, detector order, text, detector)
        for det in detectors:
            phrase = whys[det.name][i]
            if phrase is None:
                continue
            verdict = model.verdict(label, det.name)
            group = flagged_counts.get((label, det.name), 0)
            judged = (
                f"; a clean class would show evidence this strong with probability "
                f"{verdict.p_value:.1e} (the scan's threshold: {verdict.level:.1e})"
                if verdict.p_value is not None and verdict.level is not None
                else ""
            )
            ratio = evidence_ratio(verdict.p_value, verdict.level)
            parts.append((
                math.inf if ratio is None else ratio, len(parts),
                f"{det.name}: {phrase}; {det.name} flags {group:,} rows "
                f"({group / max(verdict.class_rows, 1):.1%}) of class {fmt_label(label)}{judged}",
                det.name,
            ))
        parts.sort()
        reasons.append(" | ".join(part[2] for part in parts))
        names.append([part[3] for part in parts])
    return reasons, names


def _flagged_counts(candidates, cfg, kinds, detectors) -> dict:
    labels = key_values(normalize_key(candidates.column(cfg.label_column), kinds.label_type))
    out: dict = {}
    for det in detectors:
        st = candidates.column(strength_column(det.name)).is_valid().to_numpy(zero_copy_only=False)
        for label, idx in group_rows_by_label(labels[st]) if st.any() else []:
            out[(label, det.name)] = len(idx)
    return out


def strip_internal(table: pa.Table) -> pa.Table:
    return table.drop_columns([c for c in table.column_names if c.startswith("__poisonscan_")])


def iter_clean(
    store: PartStore, trimmed: pa.Table | None, schema: pa.Schema, batch_rows: int
) -> Iterator[pa.Table]:
    """The clean split in input order, conformed to ``schema``: the clean parts plus
    the flagged rows that the budget left out."""
    trimmed_by_unit: dict = {}
    if trimmed is not None and trimmed.num_rows:
        tpos = trimmed.column(POS).to_numpy()
        for key in store.keys("candidates"):
            kpos = store.read("candidates", key).column(POS).to_numpy()
            m = np.isin(tpos, kpos)
            if m.any():
                trimmed_by_unit[key] = strip_candidate_columns(trimmed.filter(pa.array(m)))
    clean_keys = set(store.keys("clean"))
    for key in sorted(clean_keys | set(trimmed_by_unit)):
        if key not in trimmed_by_unit:
            for t in store.iter_tables("clean", key, batch_rows):
                yield conform(strip_internal(t), schema)
            continue
        parts = [trimmed_by_unit[key]]
        if key in clean_keys:
            parts.insert(0, store.read("clean", key))
        t = pa.concat_tables(
            [conform(p, schema.append(pa.field(POS, pa.int64()))) for p in parts]
        )
        t = t.take(pa.array(np.argsort(t.column(POS).to_numpy(), kind="stable")))
        yield conform(strip_internal(t), schema)


def strip_candidate_columns(table: pa.Table) -> pa.Table:
    keep = [c for c in table.column_names if not c.startswith("__poisonscan_") or c == POS]
    return table.select(keep)


def rejected_table(store: PartStore, kinds: ColumnKinds, cfg: ScanConfig, expectations=None) -> pa.Table:
    parts = [store.read("rejected", key) for key in store.keys("rejected")]
    if not parts:
        return pa.schema(
            [
                pa.field("error", pa.string()),
                pa.field("error_code", pa.string()),
                pa.field("expectation", pa.string()),
                pa.field("source_file", pa.string()),
                pa.field("source_row", pa.int64()),
                pa.field(cfg.id_column, kinds.id_type),
                pa.field(cfg.label_column, kinds.label_type),
            ]
        ).empty_table()
    schema = unified_schema([p.schema for p in parts])
    t = pa.concat_tables([conform(p, schema) for p in parts])
    t = t.take(pa.array(np.argsort(t.column(POS).to_numpy(), kind="stable")))
    t = strip_internal(t)
    names = [
        expectations.names_of(c) if expectations is not None else None
        for c in t.column("error_code").to_pylist()
    ]
    t = t.append_column("expectation", pa.array(names, pa.string()))
    # the reasons first, then the row as read
    front = list(REJECT_COLUMNS)
    return t.select(front + [c for c in t.column_names if c not in front])


def clean_schema(store: PartStore, trimmed: pa.Table | None) -> pa.Schema | None:
    schemas = [store.schema("clean", k) for k in store.keys("clean")]
    if trimmed is not None and trimmed.num_rows:
        schemas.append(strip_candidate_columns(trimmed).schema)
    s = unified_schema(schemas, drop=[POS])
    return s


@dataclass
class Finished:
    """The scan's results: tables to write or return, and how to stream the clean split."""

    quarantine: pa.Table
    rejected: pa.Table
    summary: dict
    trimmed: pa.Table | None
    clean_schema: pa.Schema | None
    #: (expectations as evaluated, their GX-shaped results), to render
    expectations: tuple | None = None
    #: (review.parquet, review.json): what the report shows beyond the lists
    review: tuple | None = None


@dataclass
class Passes:
    """What the passes leave for the finish step."""

    store: PartStore
    model: ScanModel
    unit_result: UnitResult
    #: a uniform sample of rows (pandas), for the user's aggregate expectations
    row_sample: Any = None
    #: the scan's :class:`~.content.ContentCheck`
    content: Any = None
    #: scoring against a reference scan: :func:`.reference.compare_to_reference`'s block
    reference: dict | None = None
    #: with a reference, the model fitted to this scan's own rows (``model`` is the
    #: reference's): what the rows read were like
    own_model: Any = None


#: the verdict of a scan that quarantined nothing once earlier decisions were carried
#: forward (released rows not quarantined again, confirmed ones rejected)
DECIDED_EARLIER = "no new poison found; the decisions of earlier reviews were applied"


def finish(plan: ScanPlan, passes: Passes, inputs: Sequence[str], extra_settings: Mapping[str, Any] | None = None) -> Finished:
    """Apply the budget and build the quarantine list, rejected rows, expectation
    results and summary."""
    cfg, model, unit_result = plan.cfg, passes.model, passes.unit_result
    detectors = plan.detectors()
    counts = unit_result.counts
    cap = budget_cap(cfg.expected_poison_rate, counts.read - counts.rejected)
    selected = select_quarantine(unit_result.flagged_positions, unit_result.flagged_strength, cap)
    cand_keys = passes.store.keys("candidates")
    candidates = (
        pa.concat_tables([passes.store.read("candidates", k) for k in cand_keys], promote_options="permissive")
        if cand_keys
        else None
    )
    quarantine, trimmed, quarantined = build_quarantine(plan, candidates, selected, model, detectors)
    rejected = rejected_table(passes.store, plan.kinds, cfg, plan.expectations)
    summary = summarize(plan, model, counts, quarantine, detectors, inputs, passes.own_model)
    summary["budget"] = budget_block(cfg, cap, len(unit_result.flagged_positions), quarantine.num_rows)
    if extra_settings:
        summary["settings"].update(extra_settings)
    if passes.content is not None:
        summary["repeated_content"] = passes.content.to_dict()
    if passes.reference is not None:
        summary["reference"] = passes.reference
    if plan.decisions is not None:
        summary["earlier_decisions"] = earlier = earlier_decisions_block(plan.decisions, counts)
        if not quarantine.num_rows and (earlier["rows_released_earlier"] or earlier["rows_rejected_confirmed"]):
            summary["verdict"] = DECIDED_EARLIER
    checked = _expectations(plan, passes, rejected, summary) if plan.expectations is not None else None
    schema = clean_schema(passes.store, trimmed) if cfg.write_clean else None
    review = build_review(plan, model, detectors, (quarantine, quarantined), unit_result, selected)
    return Finished(quarantine, rejected, summary, trimmed, schema, checked, review)


def earlier_decisions_block(remembered, counts) -> dict:
    """summary.json's audit of the earlier decisions the scan carried forward: their
    files, counts and reviewers, and what they did to this scan's rows."""
    return {
        **remembered.audit,
        "rows_released_earlier": counts.decided.get("released_earlier", 0),
        "rows_released_unchanged": counts.decided.get("released_unchanged", 0),
        "rows_released_changed": counts.decided.get("released_changed", 0),
        "rows_rejected_confirmed": counts.by_error.get("confirmed_poison", 0),
    }


def _expectations(plan: ScanPlan, passes: Passes, rejected: pa.Table, summary: dict) -> tuple:
    """The expectations evaluated on the scan's counts and samples: (done, results),
    their summary block added to ``summary``."""
    counts, cfg = passes.unit_result.counts, plan.cfg
    facts = ScanFacts(
        rows_read=counts.read,
        by_error=dict(counts.by_error),
        rejected=rejected,
        id_column=cfg.id_column,
        label_column=cfg.label_column,
        class_rows={label: v[0] for label, v in counts.by_class.items()},
        dimension=passes.model.dim if plan.kinds.input.kind == "features" else None,
        sample=passes.row_sample,
        content=passes.content,
    )
    done, results = expectation_results(plan.expectations.suite, facts)
    summary["expectations"] = summary_block(done, results, plan.expectations.names)
    return done, results
