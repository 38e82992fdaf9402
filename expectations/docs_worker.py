"""Data Docs rendered in a helper process that imports Great Expectations while the scan runs.

Importing Great Expectations costs about 2 s of CPU, all of it single-threaded Python.
A scan's passes keep one core busy on a laptop, so the driver starts this process when
the scan starts (:meth:`DataDocsWorker.start`); it imports GX on the other core, at a
lower priority, and then waits for one job on stdin: the suite, its results and the
folder to write. By the time the passes are done, the import is too, and the Data Docs
cost only their rendering. (A thread does not help: the import holds the interpreter
lock and stalls the passes; measured slower than importing afterwards.)

The job travels as a pickle over a pipe between two processes of the same
installation. A failure in the helper (GX cannot be imported, the rendering raises)
fails the scan with the helper's own error text.

    python -m poisonscan.expectations.docs_worker    # what start() runs
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from typing import Sequence

from .suite import Expectation

_READY_TIMEOUT_S = 600


class DataDocsWorker:
    """A helper process that renders one set of Data Docs (see the module docstring)."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None

    def start(self) -> "DataDocsWorker":
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "poisonscan.expectations.docs_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return self

    def render(self, suite_name: str, expectations: Sequence[Expectation], results: Sequence[dict], stats: dict, folder: str) -> None:
        """Send the job and wait for the Data Docs; raises RuntimeError on failure."""
        if self._proc is None:
            self.start()
        proc, self._proc = self._proc, None
        job = pickle.dumps((suite_name, list(expectations), list(results), stats, folder))
        try:  # a helper that died before reading is no error here: its stderr says why
            out, err = proc.communicate(job, timeout=_READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError(f"rendering the Data Docs took over {_READY_TIMEOUT_S} s") from None
        if proc.returncode != 0 or out.strip() != b"ok":
            text = err.decode(errors="replace").strip().splitlines()
            raise RuntimeError(
                "rendering the Data Docs failed: " + (text[-1] if text else f"helper exited with {proc.returncode}")
            )

    def close(self) -> None:
        """Stop the helper if no job was sent (a failed or cancelled scan): it has
        written nothing, so it is simply killed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.communicate()

    def __enter__(self) -> "DataDocsWorker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def main() -> int:
    try:
        os.nice(19)  # the scan's passes come first: it imports in their idle moments
    except OSError:
        pass
    from . import gx

    gx.preload()
    data = sys.stdin.buffer.read()
    if not data:  # the scan ended without Data Docs to render
        return 0
    suite_name, expectations, results, stats, folder = pickle.loads(data)
    gx.render(suite_name, expectations, results, stats, folder)
    sys.stdout.write("ok")
    sys.stdout.flush()
    # every file is written and closed; tearing down GX's ~4,000 modules would only
    # keep the scan waiting
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
