"""poisonscan inside your own Beam pipeline: read Parquet, scan, write each output.

    python docs/examples/beam_transform.py "data/*.parquet" out/ --features-column embedding
    python docs/examples/beam_transform.py "gs://bucket/data/*.parquet" gs://bucket/out/ \\
        --features-column embedding --runner=DataflowRunner --project=... --region=...

Every argument after the three of this script is a Beam pipeline option. Writes
out/clean-*.parquet, out/quarantined-*.parquet, out/rejected-*.parquet and
out/summary-*.json with Beam's own sinks.
"""

from __future__ import annotations

import argparse
import json
import sys

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from poisonscan import ScanConfig, ScanTables


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern", help="Parquet files to scan (a glob; any Beam filesystem)")
    parser.add_argument("out", help="folder (prefix) the outputs are written under")
    parser.add_argument("--features-column", required=True)
    args, beam_args = parser.parse_known_args(argv)

    # the schema every table read will have: the first file's
    first = FileSystems.match([args.pattern])[0].metadata_list[0].path
    with FileSystems.open(first) as f:
        schema = pq.read_schema(f)
    scan = ScanTables(ScanConfig(features_column=args.features_column), schema)
    prefix = args.out.rstrip("/") + "/"

    options = PipelineOptions(beam_args or ["--runner=FnApiRunner"])
    with beam.Pipeline(options=options) as p:
        outputs = p | "Read" >> beam.io.ReadFromParquetBatched(args.pattern) | "Scan" >> scan
        outputs["clean"] | "WriteClean" >> beam.io.WriteToParquetBatched(prefix + "clean", schema, file_name_suffix=".parquet")
        outputs["quarantined"] | "WriteQuarantined" >> beam.io.WriteToParquetBatched(
            prefix + "quarantined", scan.quarantine_schema, file_name_suffix=".parquet"
        )
        outputs["rejected"] | "WriteRejected" >> beam.io.WriteToParquetBatched(
            prefix + "rejected", scan.rejected_schema, file_name_suffix=".parquet"
        )
        (
            outputs["summary"]
            | "SummaryJson" >> beam.Map(json.dumps)
            | "WriteSummary" >> beam.io.WriteToText(prefix + "summary", file_name_suffix=".json")
        )


if __name__ == "__main__":
    main(sys.argv[1:])
