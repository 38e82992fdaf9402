"""Names of the columns the scan adds to rows on their way through part files."""

from __future__ import annotations

#: Columns added to rejected rows.
REJECT_COLUMNS = ("error", "error_code", "expectation", "source_file", "source_row")

#: Internal column carrying a row's position through part files.
POS = "__poisonscan_position"

CAND_SCORE = "__poisonscan_score"

CAND_DETECTORS = "__poisonscan_detectors"

#: A flagged row's content fingerprint (quarantine.parquet's ``content``).
CAND_CONTENT = "__poisonscan_content"

#: The parts of a flagged row's input that carry the evidence (a text's trigger n-grams).
CAND_HIGHLIGHTS = "__poisonscan_highlights"


def raw_column(det: str) -> str:
    return f"__poisonscan_raw_{det}"


def strength_column(det: str) -> str:
    return f"__poisonscan_strength_{det}"


def why_column(det: str) -> str:
    return f"__poisonscan_why_{det}"
