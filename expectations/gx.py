"""Running Great Expectations: user expectations on pandas batches, results and Data Docs.

Great Expectations is imported only here, and only when a user suite is given or the
results are rendered (the import costs about 2 s and 240 MB). Its context is ephemeral;
GX 1.x has no polars support, so batches are pandas.

The Data Docs are made safe to open and offline (:func:`render`): GX writes some values
into its pages unescaped (an observed value list) and loads jQuery, Bootstrap, Vega and
a logo from remote hosts. So GX never sees a markup character from the data (each is
handed over as a private-use stand-in, turned into its HTML entity in the written pages),
and every page loses its scripts and remote resources and gains a Content-Security-Policy
that allows no script and no request (a small inline stylesheet keeps it readable).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Sequence

import numpy as np

from .suite import Expectation


def _context(docs_dir: str | None = None):
    # Great Expectations: about 2 s and 240 MB to import; only where it is used
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.core", "great_expectations.render"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    if docs_dir:
        ctx.add_data_docs_site(
            site_name="poisonscan",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return ctx


def _configuration(e: Expectation):
    # Great Expectations: about 2 s and 240 MB to import; only where it is used
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    return ExpectationConfiguration(type=e.type, kwargs=dict(e.kwargs), meta=dict(e.meta))


class BatchValidator:
    """The user's expectations, run by Great Expectations on one pandas batch at a time.

    Picklable: the GX context is built lazily in each worker process.
    """

    def __init__(self, expectations: Sequence[Expectation]):
        self.expectations = list(expectations)
        self._state = None

    def __getstate__(self):
        return {"expectations": self.expectations, "_state": None}

    def _setup(self):
        # Great Expectations: about 2 s and 240 MB to import; only where it is used
        import great_expectations as gx

        ctx = _context()
        asset = ctx.data_sources.add_pandas("poisonscan").add_dataframe_asset("batch")
        definition = asset.add_batch_definition_whole_dataframe("batch")
        suite = gx.ExpectationSuite(name="user_rows")
        for e in self.expectations:
            suite.add_expectation_configuration(_configuration(e))
        self._state = (definition, suite)

    def validate(self, df):
        """The GX suite validation result for one pandas DataFrame."""
        if self._state is None:
            self._setup()
        definition, suite = self._state
        batch = definition.get_batch(batch_parameters={"dataframe": df})
        return batch.validate(suite, result_format={"result_format": "COMPLETE"})

    def failures(self, df) -> dict[int, list[str]]:
        """{row index of ``df``: names of the expectations it failed}.

        An expectation that cannot be evaluated (a missing column, a bad argument) is an
        error of the run: data never pass an expectation that did not run.
        """
        result = self.validate(df)
        out: dict[int, list[str]] = {}
        for e, r in zip(self.expectations, _in_order(self.expectations, result.results)):
            _check_ran(e, r)
            for i in r.result.get("unexpected_index_list") or []:
                out.setdefault(int(i if not isinstance(i, dict) else next(iter(i.values()))), []).append(e.name)
        return out


def _not_ran(r) -> str | None:
    """Why GX could not evaluate an expectation (its message on one line), or None.
    GX reports that in ``exception_info``, either flat (``raised_exception``,
    ``exception_message``) or, where a metric could not be resolved (a missing column),
    one such dict per metric keyed by the metric's id, with an empty result that reads
    as a success."""
    info = r.exception_info or {}
    found = [info] + [v for v in info.values() if isinstance(v, dict)]
    for part in found:
        if part.get("raised_exception"):
            return " ".join(str(part.get("exception_message")).split())[:300]
    return None


def _check_ran(e: Expectation, r) -> None:
    """Raise where GX could not evaluate a row expectation: its rows would be neither
    kept nor rejected by it."""
    problem = _not_ran(r)
    if problem is not None:
        raise RuntimeError(f"expectation {e.name} could not be evaluated: {problem}")


def _in_order(expectations: Sequence[Expectation], results) -> list:
    """GX results matched to the expectations (by type and arguments)."""
    remaining = list(results)
    out = []
    for e in expectations:
        for j, r in enumerate(remaining):
            cfg = r.expectation_config
            if cfg.type == e.type and all(cfg.kwargs.get(k) == v for k, v in e.kwargs.items()):
                out.append(remaining.pop(j))
                break
        else:
            raise RuntimeError(f"no result for expectation {e.name}")
    return out


def validate_frame(expectations: Sequence[Expectation], df) -> list[dict]:
    """Result dicts of expectations evaluated by GX on one DataFrame (a uniform sample)."""
    if not expectations:
        return []
    result = BatchValidator(expectations).validate(df)
    out = []
    for e, r in zip(expectations, _in_order(expectations, result.results)):
        problem = _not_ran(r)
        if problem is not None:  # not met: what GX could not evaluate is a failure
            out.append({"success": False, "result": {"exception": f"could not be evaluated: {problem}"}})
            continue
        out.append({"success": bool(r.success), "result": _plain(dict(r.result))})
    return out


def preload() -> None:
    """Import what :func:`render` needs (the costly part), ahead of the job."""
    # Great Expectations: about 2 s and 240 MB to import; this is the place it is paid
    import great_expectations  # noqa: F401
    from great_expectations.core import ExpectationSuiteValidationResult  # noqa: F401
    from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier  # noqa: F401
    from great_expectations.render.renderer.site_builder import SiteBuilder  # noqa: F401


def render(suite_name: str, expectations: Sequence[Expectation], results: Sequence[dict], stats: dict, folder: str) -> dict:
    """Write the GX validation result (JSON), the suite and the Data Docs under
    ``folder``; return the result as a dict."""
    # Great Expectations: about 2 s and 240 MB to import; only where it is used
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    docs = os.path.join(os.path.abspath(folder), "data_docs")  # GX requires an absolute path
    ctx = _context(docs)
    shown_suite, shown = _suite_and_result(suite_name, expectations, results, stats, inert=True)
    ctx.suites.add(shown_suite)
    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_name),
        run_id=RunIdentifier(run_name="poisonscan"),
        batch_identifier="scan",
    )
    ctx.validation_results_store.set(key, shown)
    ctx.build_data_docs(site_names=["poisonscan"])
    offline_pages(docs)
    suite, validation = _suite_and_result(suite_name, expectations, results, stats, inert=False)
    data = validation.to_json_dict()
    with open(os.path.join(folder, "validation_result.json"), "w") as f:
        json.dump(data, f, indent=2, default=str)
    with open(os.path.join(folder, "suite.json"), "w") as f:
        json.dump(suite.to_json_dict(), f, indent=2, default=str)
    return data


def _suite_and_result(suite_name: str, expectations, results, stats: dict, *, inert: bool):
    """The GX suite and validation result; ``inert``: every value from the data with its
    markup characters as stand-ins (for the pages GX renders)."""
    # Great Expectations: about 2 s and 240 MB to import; only where it is used
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult

    clean = _inert if inert else (lambda v: v)
    suite = gx.ExpectationSuite(name=suite_name)
    configs = []
    for e in expectations:
        cfg = _configuration(Expectation(e.type, clean(dict(e.kwargs)), clean(dict(e.meta)), e.scope, e.codes, e.source))
        configs.append(cfg)
        suite.add_expectation_configuration(cfg)
    evr = [
        ExpectationValidationResult(success=r["success"], expectation_config=cfg, result=clean(r["result"]))
        for cfg, r in zip(configs, results)
    ]
    validation = ExpectationSuiteValidationResult(
        success=all(r["success"] for r in results),
        results=evr,
        suite_name=suite_name,
        statistics=stats,
        meta={"poisonscan": "row expectations evaluated on every row; aggregate ones on pass-1 statistics or a uniform sample"},
    )
    return suite, validation


#: markup characters -> the private-use stand-ins GX is given, and the entities they become
_STAND_IN = {"&": "\ue100", "<": "\ue101", ">": "\ue102", '"': "\ue103", "'": "\ue104", "`": "\ue105"}
_ENTITY = {"\ue100": "&amp;", "\ue101": "&lt;", "\ue102": "&gt;", "\ue103": "&quot;", "\ue104": "&#x27;", "\ue105": "&#x60;"}

#: every Data Docs page: no script, no request; inline styles only
DOCS_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

_DOCS_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}"
    "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
    "vertical-align:top;text-align:left}.badge{background:#eee;border-radius:3px;padding:0 .3rem;margin:0 .1rem}"
    ".text-success{color:#186a3b}.text-danger{color:#a93226}"
)


def _inert(value):
    """``value`` with every markup character of every string (keys included) replaced by
    its stand-in, so GX cannot write data as markup."""
    if isinstance(value, str):
        return value.translate(str.maketrans(_STAND_IN))
    if isinstance(value, dict):
        return {_inert(k): _inert(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_inert(v) for v in value)
    return value


def _char(found: str) -> str:
    return found if len(found) == 1 else chr(int(found[2:], 16))


def offline_pages(docs_dir: str) -> None:
    """Rewrite every Data Docs page: stand-ins become entities; scripts, remote
    stylesheets and remote images go; a Content-Security-Policy and a small inline
    stylesheet come in."""

    script = re.compile(r"<script\b.*?</script\s*>", re.S | re.I)
    remote = re.compile(r"<(?:link|img)\b[^>]*(?:href|src)\s*=\s*[\"']?(?:https?:)?//[^>]*>", re.I)
    icon = re.compile(r"<link\b[^>]*rel\s*=\s*[\"'][^\"']*icon[^>]*>", re.I)  # ours replaces it
    remote_url = re.compile(r"url\(\s*[\"']?(?:https?:)?//[^)]*\)", re.I)
    tag = re.compile(r"<[a-zA-Z][^>]*>")
    handler = re.compile(r"""\son[a-z]+\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+)""", re.I)
    # a stand-in as written, or as a Python repr writes it (GX shows some lists by repr)
    stand_ins = re.compile("[" + "".join(_ENTITY) + "]|\\\\ue10[0-5]")
    head = (
        f'<meta http-equiv="Content-Security-Policy" content="{DOCS_CSP}">'
        f'<link rel="icon" href="data:,"><style>{_DOCS_STYLE}</style>'
    )
    for root, _, files in os.walk(docs_dir):
        for name in files:
            if not name.endswith(".html"):
                continue
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as f:
                page = f.read()
            page = script.sub("", page)
            page = remote.sub("", page)
            page = icon.sub("", page)
            page = remote_url.sub("none", page)
            page = tag.sub(lambda m: handler.sub("", m.group(0)), page)
            page = stand_ins.sub(lambda m: _ENTITY[_char(m.group(0))], page)
            page, n = re.subn(r"<head(\s[^>]*)?>", lambda m: m.group(0) + head, page, count=1, flags=re.I)
            if not n:
                page = head + page
            with open(path, "w", encoding="utf-8") as f:
                f.write(page)


def _plain(value):
    """Results as plain JSON values (numpy scalars and arrays unwrapped)."""

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
