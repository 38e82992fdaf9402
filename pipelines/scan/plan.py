"""The scan plan: every check of the inputs that can run before a row is read, and
what the drivers need to know to read, validate and represent rows."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator, Mapping, Sequence

import pyarrow as pa

from poisonscan.expectations import SuiteError, named_columns
from poisonscan.expectations import plan as expectation_plan
from poisonscan.pipelines.config import ScanConfig
from poisonscan.pipelines.io.columns import ColumnKinds, check_columns
from poisonscan.pipelines.io.folders import IMAGE_FOLDER, ImageFolderPath
from poisonscan.pipelines.io.outputs import folder_of, open_read
from poisonscan.pipelines.io.sources import (
    SourceError,
    SourceFile,
    expand_sources,
    file_schema,
    plan_units,
    typed_files,
)
from poisonscan.pipelines.scan.columns import REJECT_COLUMNS
from poisonscan.pipelines.scan.fit import Layout, batch_rows_for
from poisonscan.pipelines.scan.rows import RowChecks, small_class_variants


@dataclasses.dataclass(frozen=True)
class ScanPlan:
    """What the driver worked out before the pipeline starts."""

    cfg: ScanConfig
    kinds: ColumnKinds
    file_paths: dict
    units: tuple
    #: raw inputs: the encoder and proxy fitted on the training sample
    representer: Any = None
    #: where RunInference loads the proxy's weights from
    weights_path: str | None = None
    #: the data-quality expectations (poisonscan.expectations.ExpectationPlan)
    expectations: Any = None
    #: where steps on the driver's machine leave their running row counts for its
    #: progress display (None: nowhere)
    progress_dir: str | None = None
    #: scoring against a reference scan: its output folder (its state.pkl is read where
    #: it is needed, not carried in the pipeline's graph)
    reference: str | None = None
    #: earlier reviewers' decisions carried forward (:class:`.decisions.Remembered`)
    decisions: Any = None

    @property
    def raw(self) -> bool:
        return self.kinds.input.kind != "features"

    @property
    def batch_rows(self) -> int:
        return batch_rows_for(self.cfg, self.kinds.input.kind)

    @property
    def layout(self) -> Layout:
        return self.representer.layout if self.representer else Layout()

    @property
    def input_columns(self) -> list[str]:
        # once each: an image column of paths may be the id too
        return list(dict.fromkeys([self.cfg.id_column, self.cfg.label_column, *self.kinds.input_columns]))

    def detectors(self) -> list:
        labels = self.representer.probability_labels if self.representer else ()
        return self.cfg.build_detectors(self.kinds.input.kind, labels)

    @functools.cached_property
    def folders(self) -> dict:
        """Images: each input file's folder, which relative image paths are read from
        (none for tables in memory or of a PCollection: there, from the working
        directory)."""
        if self.kinds.input.kind != "image" or not isinstance(self.file_paths, dict):
            return {}
        image_folders = {u.file_index for u in self.units if u.format == IMAGE_FOLDER}  # the folder itself
        return {
            i: ImageFolderPath(p) if i in image_folders else folder_of(p)
            for i, p in self.file_paths.items() if p not in (MEMORY_SOURCE, PCOLLECTION_SOURCE)
        }

    def checks(self, **changes: Any) -> RowChecks:
        base = RowChecks(
            self.kinds,
            self.cfg.id_column,
            self.cfg.label_column,
            self.file_paths,
            self.folders,
            seed=self.cfg.seed,
            min_class_rows=self.cfg.min_class_rows,
            encoder=self.representer.encoder if self.representer else None,
            declared_labels=self.expectations.declared_labels if self.expectations else None,
            feature_range=self.expectations.feature_range if self.expectations else None,
            validator=self.expectations.validator if self.expectations else None,
        )
        return dataclasses.replace(base, **changes)

    def scoring_checks(self, duplicates: Mapping, model, content, reference: bool) -> RowChecks:
        """Pass 2's checks, once pass 1 has fitted ``model`` and judged the repeated
        ``content`` (:class:`.content.ContentCheck`): the vector length and the classes
        it can judge, the repeats to reject, the earlier decisions; scoring with a
        ``reference``'s model, the classes it fitted (rows of others are rejected)."""
        return self.checks(
            duplicates=duplicates,
            expected_dim=model.dim,
            small_classes=model.small_classes,
            label_variants=small_class_variants(model.small_classes, model.scorable_classes),
            content_duplicates=content.rejections(),
            reference_classes=model.scorable_classes if reference else None,
            remembered=self.decisions,
            content_rule=content.rule() if self.decisions is not None else None,
        )


#: the name a table scanned in memory goes by, where a file's path would be
MEMORY_SOURCE = "<memory>"

#: the name of the tables of a PCollection, in the summary's inputs
PCOLLECTION_SOURCE = "<pcollection>"


class TableNames(Mapping):
    """Where a file's path would be: the name of each table of a PCollection input,
    by its place among the input's tables (``table N``); any place has one."""

    def __getitem__(self, index: int) -> str:
        return f"table {int(index)}"

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


def plan_scan(sources: Sequence[str], cfg: ScanConfig, format_override: str | None = None) -> ScanPlan:
    """Match and check the inputs; raise :class:`SourceError` before anything runs."""
    files = typed_files(expand_sources(sources, format_override), (cfg.id_column, cfg.label_column))
    if all(f.blank for f in files):
        names = ", ".join(f.path for f in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        raise SourceError(f"nothing to scan: every file is empty ({names})")
    return _plan(files, [file_schema(f) for f in files], cfg, tuple(plan_units(files)))


def plan_table(schema: pa.Schema, cfg: ScanConfig) -> ScanPlan:
    """The plan of a table held in memory (one source, no read units): the same checks
    as :func:`plan_scan` makes of files."""
    return _plan([SourceFile(0, MEMORY_SOURCE, "memory")], [schema], cfg, ())


def plan_tables(schema: pa.Schema, cfg: ScanConfig) -> ScanPlan:
    """The plan of a PCollection of tables of ``schema`` (each table a read unit, placed
    by the driver): the same checks as :func:`plan_scan` makes of files."""
    plan = _plan([SourceFile(0, PCOLLECTION_SOURCE, "memory")], [schema], cfg, ())
    return dataclasses.replace(plan, file_paths=TableNames())


def _plan(files, schemas, cfg: ScanConfig, units: tuple) -> ScanPlan:
    kinds = check_columns(files, schemas, cfg)
    cfg = dataclasses.replace(cfg, features_column=kinds.features_column)
    for f, schema in zip(files, schemas):
        clash = sorted(set(schema.names) & set(REJECT_COLUMNS))
        if clash:
            raise SourceError(
                f"{f.path}: column(s) {', '.join(clash)} clash with the columns poisonscan "
                "adds to rejected rows; rename them"
            )
    expectations = expectation_plan(cfg, kinds, open_read)
    _check_user_columns(files, schemas, expectations.suite, cfg.expectations)
    return ScanPlan(cfg, kinds, {f.index: f.path for f in files}, units, expectations=expectations)


def _check_user_columns(files, schemas, suite, suite_path) -> None:
    """Every column a row expectation of the user's suite names is in every file (of
    any columns): a row of a file without it can neither pass nor fail it (a name
    mistyped in a suite would otherwise only fail the run once its first batch is
    validated, after the proxy was trained). Aggregate expectations are judged on the
    rows of all files: one about a column some file lacks, or one whose point is a
    column's presence (``expect_column_to_exist``), is left to Great Expectations."""
    for f, schema in zip(files, schemas):
        if not len(schema):
            continue
        for e in suite:
            row = e.source == "user" and e.scope == "row"
            missing = [c for c in named_columns(e) if c not in schema.names] if row else []
            if missing:
                raise SuiteError(
                    f"{suite_path}: the expectation {e.name} names {', '.join(map(repr, missing))}, which "
                    f"{f.path} does not have (columns: {', '.join(schema.names)})"
                )
