"""The ``poisonscan`` command line.

Exit codes (also in README.md):

== ====================================================================================
0  the scan finished, and the gate (``--fail-on``) passed
1  the run failed: an input cannot be read or lacks a column, or the pipeline failed;
   no outputs are written
2  usage error: unknown option, bad value, unusable suite file
3  the gate failed on data-quality expectations (``--fail-on expectations`` or ``any``)
4  the gate failed on poison found (``--fail-on poison`` or ``any``)
5  both (``--fail-on any``)
== ====================================================================================

With a failing gate every output is still written: the gate tells the calling job to
stop, the outputs tell it why.

Heavy libraries (Beam, scikit-learn, torch) are imported inside the commands, so
``poisonscan --help`` answers at once.
"""

from __future__ import annotations

import argparse
import difflib
import gc
import json
import logging
import re
import signal
import sys
import threading
from typing import Sequence

from poisonscan import __version__
from poisonscan.expectations import SuiteError
from poisonscan.pipelines.config import ConfigError, ScanConfig
from poisonscan.pipelines.io.sources import SourceError
from poisonscan.pipelines.report.console import format_summary
from poisonscan.pipelines.report.html import ReportError, write_report

EXIT_OK = 0

EXIT_FAILED = 1

EXIT_USAGE = 2

EXIT_EXPECTATIONS = 3

EXIT_POISON = 4

EXIT_BOTH = 5

EXIT_NOTHING_SCANNED = 6

EXIT_TERMINATED = 128 + 15  # as a shell reports a process ended by SIGTERM


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that a scan cleans up as after Ctrl-C."""


#: set once SIGTERM arrived: a pipeline step that caught the interrupt and failed with it
#: (Beam wraps what a step raises) still ends as a termination, not as a failure
_TERMINATED = []


def _on_sigterm(signum, frame):
    _TERMINATED.append(signum)
    raise _Terminated()


class _UsageError(Exception):
    pass


#: The scan command's own option strings (for "did you mean" hints).
SCAN_OPTIONS: list[str] = []


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits with 2 as well; keep one message form
        self.print_usage(sys.stderr)
        print(f"poisonscan: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), e.g. 0.05 for 5 %; got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="poisonscan",
        description="Scan training data for poisoned rows before training.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    scan = sub.add_parser(
        "scan",
        help="scan Parquet, CSV or JSONL files, or a folder of images",
        description=(
            "Scan SOURCE files (Parquet, CSV, JSONL; globs and any filesystem Beam knows), or a "
            "folder of images in class subfolders (train/cat/001.jpg: id cat/001.jpg, label cat), "
            "and write quarantine.parquet/.csv, rejected.parquet, summary.json, report.html "
            "and, with --write-clean, clean.parquet to DIR. Options not listed here are passed to "
            "Beam as pipeline options (e.g. --runner=DataflowRunner --project=...)."
        ),
        allow_abbrev=False,
    )
    for add in (_input_options, _representation_options, _detection_options, _runner_options,
                _quality_options, _output_options):
        add(scan)
    SCAN_OPTIONS[:] = [o for a in scan._actions for o in a.option_strings]

    _demo_and_report(sub)
    return parser


def _demo_and_report(sub) -> None:
    """The demo, report and apply commands."""
    demo = sub.add_parser(
        "demo",
        help="poison a real data set, scan it and compare with the truth",
        description=(
            "Stamp a trigger on 5 % of scikit-learn's handwritten digits, relabel them, "
            "scan the result with the Beam pipeline and print precision and recall "
            "against the known poisoned rows."
        ),
        allow_abbrev=False,
    )
    demo.add_argument("--out", default="demo-out", metavar="DIR", help="output directory (default: demo-out)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workers", type=_positive_int, metavar="N")

    report = sub.add_parser(
        "report",
        help="render the review page of a finished scan",
        description=(
            "Render DIR/report.html from a finished scan's outputs (summary.json, the "
            "quarantine list, rejected rows and review data) without scanning again."
        ),
        allow_abbrev=False,
    )
    report.add_argument("dir", metavar="DIR", help="the scan's output directory")
    report.add_argument("--out", metavar="FILE", help="write the page here instead of DIR/report.html")
    report.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    apply = sub.add_parser(
        "apply",
        help="apply a reviewer's decisions to a finished scan",
        description=(
            "Write the final clean split of the scan in DIR: its inputs read again, in input "
            "order, without the rejected rows and without the quarantined rows not released in "
            "the decisions FILE (the report's poisonscan-decisions.csv). Writes clean.parquet "
            "and decisions.parquet to DIR (or --out), atomically."
        ),
        allow_abbrev=False,
    )
    apply.add_argument("dir", metavar="DIR", help="the scan's output directory")
    apply.add_argument("--decisions", required=True, metavar="FILE", help="the decisions CSV downloaded from the report")
    apply.add_argument("--out", metavar="DIR2", help="write here instead of DIR")
    apply.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def _input_options(scan: argparse.ArgumentParser) -> None:
    """Where the rows are and which columns hold what."""
    scan.add_argument("sources", nargs="+", metavar="SOURCE",
                      help="files or globs, or folders of images in class subfolders")
    scan.add_argument("--out", required=True, metavar="DIR", help="output directory")
    scan.add_argument("--id-column", default="id", metavar="NAME", help="row id column (default: id)")
    scan.add_argument("--label-column", default="label", metavar="NAME", help="label column (default: label)")
    scan.add_argument(
        "--features-column",
        metavar="NAME",
        help="list (or fixed-size list) column of numbers used as the representation",
    )
    scan.add_argument(
        "--image-column", metavar="NAME",
        help="images: PNG/JPEG bytes, a {bytes, path} struct, paths of image files (a relative one from "
             "the input file's folder, then the working directory), base64 or data: URIs, or a "
             "fixed-shape array of numbers",
    )
    scan.add_argument("--text-column", metavar="NAME", help="text")
    scan.add_argument(
        "--tabular-columns", metavar="NAMES",
        help="comma-separated numeric and categorical columns (default for a table: every "
        "column but id and label)",
    )


def _representation_options(scan: argparse.ArgumentParser) -> None:
    """The model the representation comes from (raw inputs)."""
    scan.add_argument(
        "--model", metavar="PATH",
        help="take the representation from this TorchScript model (or state dict, with "
        "--model-class) instead of training a proxy",
    )
    scan.add_argument("--model-class", metavar="MODULE:CLASS", help="the class of a --model state dict")
    scan.add_argument("--layer", metavar="NAME", help="the --model layer whose output is the representation")
    scan.add_argument("--proxy-epochs", type=_positive_int, metavar="N", help="epochs to train the proxy (default: by input kind)")
    scan.add_argument(
        "--proxy-folds", type=int, default=0, metavar="K",
        help="also cross-fit K proxy networks; label consistency then reads their "
        "out-of-fold probabilities (default: 0, a cross-fitted model on the representation)",
    )
    scan.add_argument("--proxy-sample-size", type=_positive_int, default=5000, metavar="N", help="training rows per class for the proxy (default: 5000)")
    scan.add_argument(
        "--proxy-threads", type=_positive_int, default=1, metavar="N",
        help="torch threads for training and applying the proxy or --model (default: 1, so that the "
        "lists do not depend on the machine's cores; more is faster, and the lists are then "
        "reproducible at the same N)",
    )
    scan.add_argument("--format", choices=("parquet", "csv", "jsonl", "images"), help="input format (default: by extension; csv: commas, semicolons, tabs or bars, told from the header; a local folder of images in class subfolders is read as images, a remote one with --format images)")


def _detection_options(scan: argparse.ArgumentParser) -> None:
    """The budget, the detectors and their samples."""
    scan.add_argument(
        "--expected-poison-rate",
        type=_rate,
        metavar="R",
        help="expected share of poisoned rows; a budget: at most 1.5*R*rows are quarantined",
    )
    scan.add_argument("--write-clean", action="store_true", help="also write clean.parquet")
    scan.add_argument(
        "--detectors",
        metavar="NAMES",
        help="comma-separated detectors (default: spectral, spectre, activation_clustering, "
        "label_consistency, knn_label; class_flip for tables and features, token_trigger for text, "
        "value_trigger for tables, pixel_trigger for images and features, shared_group for images; shared_group "
        "on other inputs, relative_spectral, untangling and graph_clustering only when named)",
    )
    scan.add_argument(
        "--detector-param",
        action="append",
        default=[],
        metavar="DETECTOR.PARAM=VALUE",
        help="set one detector parameter (repeatable; VALUE is read as JSON, else as text), "
        "e.g. label_consistency.model=linear; docs/detectors.md lists each detector's",
    )
    scan.add_argument(
        "--false-alarm-rate", type=_rate, metavar="P",
        help="the chance that a scan of clean data has any class judged poisoned, at most: split "
        "between the families of evidence that run, each detector's level set from its share "
        "(default: none; each family at its own 5 %%, the group detectors' up to 10 %%, whose sum "
        "summary.json's false_alarms.bound states)",
    )
    scan.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    scan.add_argument("--sample-size", type=_positive_int, default=4096, metavar="N", help="rows per class in the decision sample (default: 4096)")
    scan.add_argument("--min-class-rows", type=_positive_int, default=20, metavar="N", help="smaller classes are rejected as unjudgeable (default: 20)")
    scan.add_argument(
        "--coincidence-level", type=_rate, default=0.01, metavar="P",
        help="tables and texts: repeated rows are rejected only where chance would give even one "
        "coinciding pair with probability below P, given the columns' value frequencies "
        "(texts: among those of the same length in words) (default: 0.01)",
    )


def _runner_options(scan: argparse.ArgumentParser) -> None:
    """Where the pipeline runs."""
    scan.add_argument("--runner", default="FnApiRunner", help="Beam runner (default: FnApiRunner, in-process)")
    scan.add_argument("--workers", type=_positive_int, metavar="N", help="worker processes for the FnApiRunner")
    scan.add_argument(
        "--reference", metavar="DIR",
        help="the output folder of an earlier scan: score these rows with its fitted model (no refit; raw "
        "inputs with its encoder and proxy) and report the classes whose new rows differ from it",
    )
    scan.add_argument(
        "--decisions", metavar="FILE_OR_DIR",
        help="earlier reviewers' decisions to carry forward: a decisions.parquet written by poisonscan apply, "
        "or a folder holding them (searched below). Released rows (same id, content and label) are not "
        "quarantined again; confirmed rows are rejected as confirmed_poison wherever their content comes back",
    )
    scan.add_argument(
        "--progress", choices=("auto", "bar", "log", "off"), default="auto",
        help="progress on stderr: bars (a terminal), a line every 10 s (log), or off; "
        "default: bars on a terminal, log lines otherwise, off with -q",
    )


def _quality_options(scan: argparse.ArgumentParser) -> None:
    """Data-quality expectations."""
    scan.add_argument("--labels", metavar="LABELS", help="the declared label set, comma-separated (or @FILE, one per line); rows with other labels are rejected")
    scan.add_argument("--min-class-fraction", type=float, metavar="F", help="expect every class to hold at least this share of the rows")
    scan.add_argument("--feature-range", metavar="LOW,HIGH", help="expect every feature value in [LOW, HIGH]; rows outside are rejected")
    scan.add_argument("--expectations", metavar="PATH", help="a Great Expectations suite file (JSON) merged with the default suite")


def _output_options(scan: argparse.ArgumentParser) -> None:
    """Exit codes and what is written."""
    scan.add_argument(
        "--fail-on", choices=("never", "expectations", "poison", "any"), default="never",
        help="exit non-zero when expectations fail (3), poison is found (4) or both (5); default: never",
    )
    scan.add_argument("--no-data-docs", action="store_true", help="skip rendering the Great Expectations Data Docs")
    scan.add_argument("--no-report", action="store_true", help="skip rendering report.html (poisonscan report DIR renders it later)")
    scan.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def _split_beam_args(extra: Sequence[str], own_options: Sequence[str] = ()) -> list[str]:
    """Check that leftover arguments are Beam pipeline options; return them."""
    if not extra:
        return []
    try:
        # Beam: about 1 s to import; only a scan needs it
        from apache_beam.options.pipeline_options import (
            PipelineOptions,
            _BeamArgumentParser,
        )
    except ImportError:  # a Beam without the private parser: let Beam judge them
        return list(extra)
    parser = _BeamArgumentParser(allow_abbrev=False)
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(list(extra))
    if unknown:
        known = [o for a in parser._actions for o in a.option_strings] + list(own_options)
        first = unknown[0]
        hint = difflib.get_close_matches(first.split("=", 1)[0], known, n=1)
        raise _UsageError(
            f"unrecognized argument {first!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
        )
    return list(extra)


def _configure_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("poisonscan: %(levelname)s: %(message)s"))
    handler.addFilter(lambda r: "apitools not found" not in r.getMessage())
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)


def _attach_negative_values(argv: list) -> list:
    """``--feature-range -5,5`` as ``--feature-range=-5,5``: argparse takes a value that
    starts with '-' for an option."""
    out = []
    i = 0
    while i < len(argv):
        if argv[i] == "--feature-range" and i + 1 < len(argv) and re.fullmatch(r"-[\d.].*", argv[i + 1]):
            out.append(f"--feature-range={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def console() -> int:
    """The ``poisonscan`` command: :func:`main`, whose code the process then exits with.

    The objects every import created (Beam, pyarrow, scipy: ~240,000) are left to the
    operating system instead of a last garbage collection: the interpreter's exit spent
    0.6 s collecting them after a 1M-row scan (0.08 s frozen). Files are closed and exit
    handlers run as before; only a process that ends here may do this.
    """
    code = main()
    gc.freeze()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises SystemExit)."""
    parser = build_parser()
    argv = _attach_negative_values(list(sys.argv[1:] if argv is None else argv))
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    if args.version:

        print(f"poisonscan {__version__}")
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _configure_logging()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.command != "scan" and extra:
            raise _UsageError(f"unrecognized arguments: {' '.join(extra)}")
        if args.command == "scan":
            return _scan(args, extra)
        if args.command == "report":
            return _report(args)
        if args.command == "apply":
            return _apply(args)
        return _demo(args)
    except _UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"poisonscan: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _Terminated:
        print("poisonscan: terminated (SIGTERM); nothing was written", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _scan(args, extra: Sequence[str]) -> int:
    beam_args = _split_beam_args(extra, SCAN_OPTIONS)
    cfg = _config(args)
    # imports Beam (about 1 s): only a scan needs it, not --help
    from poisonscan.pipelines.drivers.run import Runner, ScanFailed, run_scan

    try:
        runner = Runner(args.runner, args.workers, tuple(beam_args), _progress_mode(args))
        summary = run_scan(args.sources, args.out, cfg, runner, format_override=args.format, reference=args.reference,
                           decisions=args.decisions)
    except (SuiteError, ConfigError) as exc:
        raise _UsageError(str(exc)) from None
    except (SourceError, ScanFailed, FileExistsError) as exc:
        if _TERMINATED:
            raise _Terminated() from None
        print(f"poisonscan: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not args.quiet:
        print(format_summary(summary, args.out))
    return gate(summary, args.fail_on)


def _progress_mode(args) -> str:
    if args.progress != "auto":
        return args.progress
    if args.quiet:
        return "off"
    return "bar" if sys.stderr.isatty() else "log"


def _config(args) -> ScanConfig:
    """The scan's settings from the command line (a usage error where they clash)."""

    model = None
    if args.model:
        # torch: heavy to import; only scans of raw inputs need it
        from poisonscan.pipelines.represent.proxy import UserModel

        model = UserModel(args.model, args.layer, args.model_class)
    elif args.layer or args.model_class:
        raise _UsageError("--layer and --model-class go with --model")
    tabular = tuple(c.strip() for c in args.tabular_columns.split(",") if c.strip()) if args.tabular_columns else None
    labels = _labels(args.labels) if args.labels else None
    feature_range = None
    if args.feature_range:
        try:
            lo, hi = (float(v) for v in args.feature_range.split(","))
        except ValueError:
            raise _UsageError(f"--feature-range wants LOW,HIGH; got {args.feature_range!r}") from None
        feature_range = (lo, hi)
    detector_params = _detector_params(args.detector_param)
    try:
        cfg = ScanConfig(
            id_column=args.id_column,
            label_column=args.label_column,
            features_column=args.features_column,
            image_column=args.image_column,
            text_column=args.text_column,
            tabular_columns=tabular,
            model=model,
            proxy_folds=args.proxy_folds,
            proxy_epochs=args.proxy_epochs,
            proxy_sample_size=args.proxy_sample_size,
            proxy_threads=args.proxy_threads,
            labels=labels,
            min_class_fraction=args.min_class_fraction,
            feature_range=feature_range,
            expectations=args.expectations,
            data_docs=not args.no_data_docs,
            report=not args.no_report,
            detectors=(
                tuple(d.strip() for d in args.detectors.split(",") if d.strip())
                if args.detectors
                else None
            ),
            detector_params=detector_params,
            expected_poison_rate=args.expected_poison_rate,
            false_alarm_rate=args.false_alarm_rate,
            seed=args.seed,
            sample_size=args.sample_size,
            min_class_rows=args.min_class_rows,
            coincidence_level=args.coincidence_level,
            write_clean=args.write_clean,
        )
    except ConfigError as exc:
        raise _UsageError(str(exc)) from None
    return cfg


def _detector_params(items: list) -> dict:
    """``["label_consistency.model=linear", ...]`` as ``{"label_consistency": {"model":
    "linear"}}``; a value is JSON where it parses (numbers, true, null), else text."""
    out: dict = {}
    for item in items:
        name, dot, rest = item.partition(".")
        key, eq, value = rest.partition("=")
        if not (dot and eq and name.strip() and key.strip()):
            raise _UsageError(f"--detector-param wants DETECTOR.PARAM=VALUE; got {item!r}")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        if isinstance(parsed, list):
            parsed = tuple(parsed)
        out.setdefault(name.strip(), {})[key.strip()] = parsed
    return out


def gate(summary: dict, fail_on: str) -> int:
    """The exit code ``--fail-on`` asks for; a scan in which every row was rejected
    scanned nothing, which no gate may pass."""
    if summary["rows_read"] == summary["rows_rejected"]:
        return EXIT_NOTHING_SCANNED
    bad_expectations = not summary.get("expectations", {}).get("success", True)
    poison = summary["rows_quarantined"] > 0
    expectations = fail_on in ("expectations", "any") and bad_expectations
    found = fail_on in ("poison", "any") and poison
    if expectations and found:
        return EXIT_BOTH
    if expectations:
        return EXIT_EXPECTATIONS
    if found:
        return EXIT_POISON
    return EXIT_OK


def _labels(text: str) -> tuple:
    if text.startswith("@"):
        try:
            # utf-8-sig: a file saved by a Windows editor starts with a byte-order mark
            with open(text[1:], encoding="utf-8-sig") as f:
                items = [line.strip() for line in f]
        except (OSError, UnicodeDecodeError) as exc:
            raise _UsageError(f"cannot read the labels file {text[1:]}: {exc}") from None
    else:
        items = text.split(",")
    labels = tuple(v.strip() for v in items if v.strip())
    if not labels:
        raise _UsageError("--labels gave no label")
    return labels


def _report(args) -> int:

    try:
        path = write_report(args.dir, args.out)
    except ReportError as exc:
        print(f"poisonscan: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not args.quiet:
        print(f"poisonscan: wrote {path}")
    return EXIT_OK


def _apply(args) -> int:
    # reads the inputs again (Beam's filesystems list them): imported only here
    from poisonscan.pipelines.drivers.apply import ApplyError, apply_decisions

    try:
        done = apply_decisions(args.dir, args.decisions, args.out)
    except ApplyError as exc:
        print(f"poisonscan: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not args.quiet:
        who = f" by {', '.join(done['reviewers'])}" if done["reviewers"] else ""
        print(
            f"poisonscan: applied {done['released'] + done['confirmed'] + done['pending']:,} decisions{who} "
            f"(released {done['released']:,}, confirmed {done['confirmed']:,}, pending {done['pending']:,}); "
            f"clean split: {done['rows_clean']:,} rows; still quarantined: {done['still_quarantined']:,}\n"
            f"  outputs in {done['out']}: clean.parquet, decisions.parquet"
        )
    return EXIT_OK


def _demo(args) -> int:
    # imports Beam (about 1 s): only a scan needs it, not --help
    from poisonscan.pipelines.demo import run_demo
    from poisonscan.pipelines.drivers.run import ScanFailed

    try:
        text = run_demo(args.out, seed=args.seed, workers=args.workers)
    except ScanFailed as exc:
        if _TERMINATED:
            raise _Terminated() from None
        print(f"poisonscan: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(text)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
