"""poisonscan as a Beam PTransform, for a user's own pipeline.

::

    tables ─► place each table (by a fingerprint of its content) ─► units
    units ─► pass 0, then passes 1 and 2 (:class:`.beam.ScanPasses`, the command line's own core; parts emitted)
          ─► clean parts ──────────────────────────────────────────────┬─► "clean"
          ─► flagged and rejected parts ─► finish (side inputs) ─► trimmed ┘
                                                                ─► "quarantined", "rejected", "summary"

Each input table stands where a read unit of a file would, so the scan reads the
PCollection three times, as the command line reads its files; the runner keeps or
recomputes it. Tables are placed by a fingerprint of their content, not by arrival
order, so the same tables give the same lists whatever the runner, the bundles and the
workers; identical tables are interchangeable, so their order among themselves cannot
change an output.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import apache_beam as beam
import pyarrow as pa

from poisonscan.pipelines.config import ConfigError, ScanConfig
from poisonscan.pipelines.drivers.beam import (
    BatchUnit,
    FindDuplicateIds,
    ScanPasses,
    reference_block,
    reference_side,
)
from poisonscan.pipelines.drivers.run import (
    check_reference,
    load_decisions,
    reference_representer,
)
from poisonscan.pipelines.io.outputs import json_safe
from poisonscan.pipelines.io.parts import MemoryPartStore, PartStore
from poisonscan.pipelines.scan.columns import REJECT_COLUMNS
from poisonscan.pipelines.scan.finish import (
    Passes,
    conform,
    finish,
    strip_candidate_columns,
    strip_internal,
)
from poisonscan.pipelines.scan.plan import PCOLLECTION_SOURCE, ScanPlan, plan_tables
from poisonscan.pipelines.scan.state import scan_state

#: the outputs of :class:`ScanTables` (and :class:`ScanDicts`)
OUTPUTS = ("clean", "quarantined", "rejected", "summary", "state")


def as_table(element: Any, schema: pa.Schema) -> pa.Table:
    """An input element as a table of exactly ``schema`` (a record batch is a table of
    one chunk); a ValueError naming what differs otherwise, which fails the run."""
    if isinstance(element, pa.RecordBatch):
        element = pa.Table.from_batches([element])
    if not isinstance(element, pa.Table):
        raise ValueError(f"ScanTables takes pyarrow Tables or RecordBatches; got {type(element).__name__}")
    if element.schema.equals(schema):
        return element
    missing = [n for n in schema.names if n not in element.column_names]
    extra = [n for n in element.column_names if n not in schema.names]
    if missing or extra:
        raise ValueError(
            "a table's columns differ from the schema given to the scan: "
            + "; ".join(p for p in (missing and f"missing {missing}", extra and f"not in the schema {extra}") if p)
        )
    try:
        return element.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"a table's columns cannot be read as the schema given to the scan: {exc}") from None


def fingerprint(table: pa.Table) -> bytes:
    """A digest of a table's content (its rows and schema, not its chunking)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.blake2b(sink.getvalue().to_pybytes(), digest_size=16).digest()


def _places(counts: list) -> dict:
    """``{fingerprint: (first place, tables with that content)}``, in fingerprint order."""
    out, place = {}, 0
    for fp, n in sorted(counts):
        out[fp] = (place, n)
        place += n
    return out


class _Place(beam.DoFn):
    REPEATED = "repeated"

    def process(self, element, places):
        fp, table = element
        first, n = places[fp]
        if n == 1:
            yield BatchUnit(first, table)
        else:  # identical tables: numbered among themselves after a shuffle
            yield beam.pvalue.TaggedOutput(self.REPEATED, element)


def _keyed(element, schema: pa.Schema) -> tuple[bytes, pa.Table]:
    table = as_table(element, schema)
    return fingerprint(table), table


def _number(element, places):
    fp, tables = element
    first, _ = places[fp]
    return [BatchUnit(first + j, t) for j, t in enumerate(tables)]


class PlaceTables(beam.PTransform):
    """Tables -> :class:`~.beam.BatchUnit` with deterministic places."""

    def __init__(self, schema: pa.Schema):
        super().__init__()
        self.schema = schema

    def expand(self, tables):
        schema = self.schema
        keyed = tables | "Fingerprint" >> beam.Map(_keyed, schema)
        places = (
            keyed
            | "Fingerprints" >> beam.Keys()
            | "CountEach" >> beam.combiners.Count.PerElement()
            | "AllFingerprints" >> beam.combiners.ToList()
            | "Places" >> beam.Map(_places)
        )
        placed = keyed | "Place" >> beam.ParDo(_Place(), places=beam.pvalue.AsSingleton(places)).with_outputs(
            _Place.REPEATED, main="units"
        )
        repeated = (
            placed[_Place.REPEATED]
            | "GroupIdentical" >> beam.GroupByKey()
            | "NumberIdentical" >> beam.FlatMap(_number, places=beam.pvalue.AsSingleton(places))
        )
        return (placed.units, repeated) | "Units" >> beam.Flatten()


def rejected_schema(schema: pa.Schema) -> pa.Schema:
    """The rejected output's columns: the reasons first, then the row as read."""
    types = {"source_row": pa.int64()}
    return pa.schema([pa.field(c, types.get(c, pa.string())) for c in REJECT_COLUMNS] + list(schema))


class _FinishTables(beam.DoFn):
    """The budget, the quarantine list, the rejected rows and the summary, emitted."""

    def __init__(self, plan: ScanPlan, schema: pa.Schema):
        self.plan = plan
        self.schema = schema

    def process(self, unit_result, model, rows, content, candidates, rejected, partials, new_model, reference=None):
        store = MemoryPartStore()
        for kind, key, table in [*candidates, *rejected]:
            store.write(kind, key, table)
        passes = Passes(store, model, unit_result, row_sample=rows.frame(), content=content,
                        reference=reference_block(self.plan, reference, partials, new_model),
                        own_model=new_model if reference is not None else None)
        fin = finish(self.plan, passes, [PCOLLECTION_SOURCE], {"runner": "ScanTables"})
        yield beam.pvalue.TaggedOutput("quarantined", fin.quarantine)
        yield beam.pvalue.TaggedOutput("rejected", conform(fin.rejected, rejected_schema(self.schema)))
        yield beam.pvalue.TaggedOutput("summary", json_safe(fin.summary))
        plan = self.plan
        yield beam.pvalue.TaggedOutput("state", scan_state(
            plan.kinds.input.kind, dict(partials), new_model, plan.cfg, plan.layout, plan.representer
        ))
        if fin.trimmed is not None and fin.trimmed.num_rows:
            # flagged, but beyond the budget: clean
            yield beam.pvalue.TaggedOutput("clean", _clean(strip_candidate_columns(fin.trimmed), self.schema))


def _clean(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return conform(strip_internal(table), schema)


class ScanTables(beam.PTransform):
    """Scan a PCollection of pyarrow Tables (or RecordBatches) for poisoned rows.

    The same scan as ``poisonscan scan`` and :func:`poisonscan.scan_table`: the
    detectors, the decisions, the expectations. Tables of vectors (a features column)
    are scanned as they are; raw images, texts and table columns go through the encoder
    and proxy of an earlier scan of such data (``reference``): the proxy is trained by
    the command line or ``scan_table``, not inside a user's pipeline.

    Parameters
    ----------
    config : ScanConfig
        The settings, validated when the transform is built.
    reference : str, optional
        The output folder of an earlier scan (its ``state.pkl``): score the rows with
        its fitted model, without refitting, and compare them with it (the summary's
        ``reference``), as ``poisonscan scan --reference``. Required for raw inputs:
        the workers read the proxy's weights from its ``proxy.pt``.
    decisions : str, optional
        Earlier reviewers' decisions to carry forward, as ``poisonscan scan
        --decisions``: a decisions.parquet of ``poisonscan apply``, or a folder holding
        them. Released rows (same id, content and label) are not quarantined again;
        confirmed rows are rejected as ``confirmed_poison`` (the summary's
        ``earlier_decisions``).
    schema : pyarrow.Schema
        The schema of every input table (``pyarrow.parquet.read_schema`` of the files a
        pipeline reads). A table with other columns fails the run with a ValueError; one
        whose types differ is cast to it.

    Returns
    -------
    dict of PCollections
        ``"clean"``: pyarrow Tables of ``schema``, the rows that pass, in pieces;
        ``"quarantined"``: one pyarrow Table, the quarantine list (id, label, score,
        detectors, reason, source_file, source_row, content, each detector's score; as
        quarantine.parquet); ``"rejected"``: one pyarrow Table, the rows that could not
        be scanned with their reason (error, error_code, expectation, source_file,
        source_row, then the row as read); ``"summary"``: one dict, as summary.json.
        ``"state"``: one :class:`~poisonscan.pipelines.scan.state.ScanState`, what the
        scan fitted (mergeable with other scans' states).
        ``source_file`` names an input table by its place (``table N``) among the tables
        ordered by content; ``source_row`` is the row within it. Every row read is in
        exactly one of clean, quarantined and rejected.

    Examples
    --------
    ::

        outputs = (
            p
            | beam.io.ReadFromParquetBatched("data/*.parquet")
            | ScanTables(ScanConfig(features_column="embedding"), schema)
        )
        outputs["clean"] | beam.io.WriteToParquetBatched("clean", schema)
    """

    def __init__(self, config: ScanConfig, schema: pa.Schema, reference: str | None = None, decisions: str | None = None):
        super().__init__()
        if not isinstance(config, ScanConfig):
            raise TypeError(f"config must be a ScanConfig; got {type(config).__name__}")
        if not isinstance(schema, pa.Schema):
            raise TypeError(f"schema must be a pyarrow.Schema; got {type(schema).__name__}")
        self.plan = plan_tables(schema, config)
        if self.plan.raw and reference is None:
            raise ConfigError(
                f"ScanTables represents {self.plan.kinds.input.kind} input with an earlier scan's proxy: "
                "give reference= the output folder of `poisonscan scan` (or poisonscan.scan_table) on such data"
            )
        if reference is not None:
            self.plan = dataclasses.replace(self.plan, reference=check_reference(self.plan, reference))
            if self.plan.raw:  # the reference's encoder and proxy; workers read its proxy.pt
                self.plan = reference_representer(self.plan, None)
        if decisions is not None:
            self.plan = dataclasses.replace(self.plan, decisions=load_decisions(decisions))
        self.schema = schema

    @property
    def quarantine_schema(self) -> pa.Schema:
        """The schema of the ``"quarantined"`` table (for a Parquet sink)."""
        # the scan core's schema, built from the plan's detectors
        from poisonscan.pipelines.scan.finish import quarantine_schema

        return quarantine_schema(self.plan.kinds, [d.name for d in self.plan.detectors()])

    @property
    def rejected_schema(self) -> pa.Schema:
        """The schema of the ``"rejected"`` table (for a Parquet sink)."""
        return rejected_schema(self.schema)

    def expand(self, tables):
        plan, schema = self.plan, self.schema
        units = tables | "PlaceTables" >> PlaceTables(schema)
        dups = units | "Pass0DuplicateIds" >> FindDuplicateIds(plan)
        scan = (units, dups) | "Scan" >> ScanPasses(plan)
        clean, candidates, rejected = scan["parts"] | "PartsByKind" >> beam.Partition(
            lambda part, n: PartStore.kinds.index(part[0]), len(PartStore.kinds)
        )
        finished = scan["results"] | "Finish" >> beam.ParDo(
            _FinishTables(plan, schema),
            model=beam.pvalue.AsSingleton(scan["model"]),
            new_model=beam.pvalue.AsSingleton(scan["new_model"]),
            **reference_side(scan.get("reference")),
            rows=beam.pvalue.AsSingleton(scan["rows"]),
            content=beam.pvalue.AsSingleton(scan["content"]),
            candidates=beam.pvalue.AsList(candidates),
            rejected=beam.pvalue.AsList(rejected),
            partials=beam.pvalue.AsList(scan["partials"]),
        ).with_outputs(*OUTPUTS)
        kept = clean | "CleanParts" >> beam.Map(lambda part: _clean(part[2], schema))
        return {
            "clean": (kept, finished.clean) | "Clean" >> beam.Flatten(),
            "quarantined": finished.quarantined,
            "rejected": finished.rejected,
            "summary": finished.summary,
            "state": finished.state,
        }


class ScanDicts(beam.PTransform):
    """:class:`ScanTables` for a PCollection of dicts (one per row): rows are gathered
    into tables of ``schema`` (``batch_rows`` at most), and the outputs come back as dicts:
    ``"clean"``, ``"quarantined"`` and ``"rejected"`` one per row, ``"summary"`` one.
    ``reference`` and ``decisions`` are :class:`ScanTables`'."""

    def __init__(self, config: ScanConfig, schema: pa.Schema, batch_rows: int = 10_000,
                 reference: str | None = None, decisions: str | None = None):
        super().__init__()
        self.scan = ScanTables(config, schema, reference=reference, decisions=decisions)
        self.schema = schema
        self.batch_rows = int(batch_rows)

    def expand(self, rows):
        schema = self.schema
        tables = (
            rows
            | "Gather" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.batch_rows)
            | "ToTables" >> beam.Map(lambda batch: pa.Table.from_pylist(list(batch), schema=schema))
        )
        out = tables | "ScanTables" >> self.scan
        dicts = {
            name: out[name] | f"{name.capitalize()}Rows" >> beam.FlatMap(lambda t: t.to_pylist())
            for name in ("clean", "quarantined", "rejected")
        }
        dicts["summary"], dicts["state"] = out["summary"], out["state"]
        return dicts
