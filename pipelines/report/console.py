"""What a scan prints on the terminal."""

from __future__ import annotations

from poisonscan.pipelines.scan.values import fmt_label


def format_summary(summary: dict, out_dir: str) -> str:
    """A few lines for the terminal."""

    n_files = len(summary.get("inputs", []))
    n_folders = sum(1 for how in (summary.get("inputs_read_as") or {}).values() if "image_folder" in how)
    what = " and ".join(
        f"{n} {word}{'s' if n != 1 else ''}" for n, word in ((n_files - n_folders, "file"), (n_folders, "folder")) if n
    ) or "0 files"
    lines = [
        f"poisonscan: scanned {summary['rows_read']:,} rows from {what} in {summary.get('seconds', 0):.1f} s: "
        f"{summary['verdict']}",
    ]
    per_class = [
        f"{fmt_label(c['label'])}: {c['rows_quarantined']:,}"
        for c in summary["classes"]
        if c["rows_quarantined"]
    ]
    lines.append(
        f"  quarantined {summary['rows_quarantined']:>10,}"
        + (f"   (by class: {', '.join(per_class)})" if per_class else "")
    )
    reasons = ", ".join(f"{k}: {v:,}" for k, v in summary["rejected_by_reason"].items())
    lines.append(f"  rejected    {summary['rows_rejected']:>10,}" + (f"   ({reasons})" if reasons else ""))
    lines.append(f"  clean       {summary['rows_clean']:>10,}")
    read_as = list((summary.get("inputs_read_as") or {}).items())
    for path, how in read_as[:3]:
        lines.append(f"  read {path}: {_read_as(how)}")
    if len(read_as) > 3:
        lines.append(f"  ... and {len(read_as) - 3} more inputs read so (summary.json inputs_read_as)")
    exp = summary.get("expectations")
    if exp:
        st = exp["statistics"]
        failed = [r["expectation"] for r in exp["results"] if not r["success"]]
        lines.append(
            f"  expectations: {st['successful_expectations']} of {st['evaluated_expectations']} met"
            + (f"; failed: {', '.join(failed[:4])}{' ...' if len(failed) > 4 else ''}" if failed else "")
        )
    poisoned = summary["classes_poisoned"]
    # counted first, the labels after: "classes judged poisoned: 0" read as none when
    # the poisoned class was labelled 0
    lines.append(
        f"  classes judged poisoned: {len(poisoned)} of {len(summary['classes'])}"
        + (f" (label{'s' if len(poisoned) > 1 else ''} {', '.join(fmt_label(c) for c in poisoned)})" if poisoned else "")
    )
    fa = summary.get("false_alarms")
    if fa:
        lines.append(
            f"  false alarms: a scan of clean data has some class judged with a chance of at most {fa['bound']:.1%}"
            + (" (each family of evidence at its own level; --false-alarm-rate P holds it at P)"
               if fa["rate"] is None else " (--false-alarm-rate)")
        )
    ref = summary.get("reference")
    if ref:
        differing = [c for c in ref["classes"] if c["differs"]]
        lines.append(
            f"  scored with the model of {ref['folder']} ({ref['rows_reference']:,} rows); "
            + (f"{len(differing)} class{'es differ' if len(differing) != 1 else ' differs'} from it:"
               if differing else "no class differs from it")
        )
        lines += [f"    {fmt_label(c['label'])}: {c['why']}" for c in differing[:10]]
    lines += _earlier_decisions(summary.get("earlier_decisions"))
    budget = summary["budget"]
    if budget["max_rows"] is not None and budget["rows_left_in_clean_by_budget"]:
        lines.append(
            f"  budget: {budget['rows_flagged']:,} rows flagged, at most {budget['max_rows']:,} "
            f"quarantined; the {budget['rows_left_in_clean_by_budget']:,} least suspicious stay in the clean split"
        )
    lines.append(f"  outputs in {out_dir}/: quarantine.parquet, quarantine.csv, rejected.parquet, "
                 + ("clean.parquet, " if summary["settings"].get("write_clean") else "")
                 + "review.parquet, review.json, state.pkl, summary.json"
                 + (", expectations/ (Data Docs)" if exp and exp.get("data_docs") else "")
                 + (", report.html" if summary["settings"].get("report") else ""))
    if summary["settings"].get("report"):
        lines.append(f"  review the flagged rows: open {out_dir}/report.html in a browser")
    return "\n".join(lines)


def _earlier_decisions(block: dict | None) -> list[str]:
    """What the earlier decisions (``--decisions``) did to this scan, in a line or two."""
    if not block:
        return []
    files = block["files"]
    who = f" by {', '.join(block['reviewers'])}" if block["reviewers"] else ""
    line = (
        f"  earlier decisions: {block['decisions']:,}{who} from {len(files)} file{'s' if len(files) != 1 else ''}; "
        f"{block['rows_released_earlier']:,} released row{'s' if block['rows_released_earlier'] != 1 else ''} "
        f"not quarantined again, {block['rows_rejected_confirmed']:,} confirmed rejected (confirmed_poison)"
    )
    if block["rows_released_changed"]:
        line += f", {block['rows_released_changed']:,} released changed since (judged anew)"
    return [line]


_SEPARATOR_NAMES = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _read_as(how: dict) -> str:
    """``{separator, decimal_point, text_columns, image_folder}`` in words."""
    words = []
    if how.get("image_folder"):
        held = how["image_folder"]
        words.append(f"a folder of {held['images']:,} images, labelled by their subfolders"
                     + (f"; {held['other_files']:,} other file{'s' if held['other_files'] != 1 else ''} passed over"
                          if held["other_files"] else ""))
    if how.get("empty_file"):
        words.append("an empty file (no rows)")
    if "separator" in how:
        words.append(f"separated by {_SEPARATOR_NAMES.get(how['separator'], repr(how['separator']))}, "
                     f"decimal {'comma' if how['decimal_point'] == ',' else 'point'}")
    if how.get("text_columns"):
        cols = how["text_columns"]
        words.append(f"{', '.join(map(repr, cols[:4]))}{' ...' if len(cols) > 4 else ''} read as text (not all "
                     "values of the kind of the file's first rows)")
    return "; ".join(words)
