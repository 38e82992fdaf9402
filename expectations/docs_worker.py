"""Data Docs rendered in a helper process that imports Great Expectations while the scan runs.

Importing Great Expectations costs about 2 s of CPU, all of it single-threaded Python.
The driver starts this process when the scan starts (:meth:`DataDocsWorker.start`); it
imports GX at the lowest priority (nice 19), in the moments the passes leave a core
idle, and then waits for one job on stdin: the suite, its results and the folder to
write. By the time the passes are done the import is too, and the Data Docs cost only
their rendering (~0.2 s; also at that priority, so on a machine busy with other work it
waits its turn), which runs while the scan writes report.html (:meth:`submit`, then
:meth:`wait`). Measured on a 1M x 256 scan on two cores: at nice 5 the import took a
core from the covariance's BLAS threads and the scan was slower; a thread is slower
still (the import holds the interpreter lock and stalls the passes).

The job travels as a pickle over a pipe between two processes of the same
installation. A failure in the helper (GX cannot be imported, the rendering raises)
fails the scan with the helper's own error text.

    python -m poisonscan.expectations.docs_worker    # what start() runs (as -c)
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from typing import Sequence

from . import gx
from .suite import Expectation

# ``-c`` rather than ``-m``, dropping the working directory from the path: a file there
# named like a standard module (logging.py, types.py) must not shadow it in the helper
_COMMAND = "import sys; sys.path.pop(0); from poisonscan.expectations.docs_worker import main; sys.exit(main())"


class DataDocsWorker:
    """A helper process that renders one set of Data Docs (see the module docstring)."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._reply: dict = {}

    def start(self) -> "DataDocsWorker":
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _COMMAND],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return self

    def render(self, suite_name: str, expectations: Sequence[Expectation], results: Sequence[dict], stats: dict, folder: str) -> None:
        """Send the job and wait for the Data Docs; raises RuntimeError on failure."""
        self.submit(suite_name, expectations, results, stats, folder)
        self.wait()

    def submit(self, suite_name: str, expectations: Sequence[Expectation], results: Sequence[dict], stats: dict, folder: str) -> None:
        """Send the job and return at once: the helper renders while the caller goes on
        (the scan writes report.html meanwhile). :meth:`wait` collects the outcome."""
        if self._thread is not None:
            raise RuntimeError("a Data Docs job is already being rendered")
        if self._proc is None:
            self.start()
        job = pickle.dumps((suite_name, list(expectations), list(results), stats, folder))
        proc, reply = self._proc, {}

        def talk():
            # a helper that died before reading is no error here: its stderr says why
            try:
                reply["out"] = proc.communicate(job)
            except BaseException as exc:  # handed to wait()
                reply["error"] = exc

        self._reply = reply
        self._thread = threading.Thread(target=talk, name="poisonscan-data-docs", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Wait for the submitted job; raises RuntimeError if the helper failed. On any
        exception (an interrupt too) the caller's close() kills the helper: it must not
        write on after the scan has removed its staging folder."""
        if self._thread is None:
            raise RuntimeError("no Data Docs job is being rendered (none submitted, or already waited for)")
        self._thread.join()
        proc, reply, self._proc, self._thread = self._proc, self._reply, None, None
        if "error" in reply:  # talking to it failed: it must not write on
            proc.kill()
            proc.wait()
            raise RuntimeError(f"rendering the Data Docs failed: {reply['error']}")
        out, err = reply["out"]
        code = proc.returncode
        if code != 0 or out.strip() != b"ok":
            tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-5:])
            raise RuntimeError(f"rendering the Data Docs failed (helper exit status {code}): {tail or 'no error output'}")

    def close(self) -> None:
        """Stop the helper of a failed or cancelled scan: killed, so that it writes
        nothing more into a staging folder the scan is about to remove."""
        proc, thread, self._proc, self._thread = self._proc, self._thread, None, None
        if proc is None:
            return
        proc.kill()
        if thread is not None:  # its communicate() returns now that the helper is gone
            thread.join()
        else:
            proc.communicate()

    def __enter__(self) -> "DataDocsWorker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def main() -> int:
    try:
        os.nice(19)  # the scan's passes come first: it imports in their idle moments
    except (OSError, AttributeError):  # no os.nice on Windows
        pass
    # the reply goes on a private copy of stdout; anything a library prints goes to stderr
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    gx.preload()
    data = sys.stdin.buffer.read()
    if not data:  # the scan ended without Data Docs to render
        return 0
    suite_name, expectations, results, stats, folder = pickle.loads(data)
    gx.render(suite_name, expectations, results, stats, folder)
    reply.write("ok")
    reply.flush()
    # every file is written and closed; tearing down GX's ~4,000 modules would only
    # keep the scan waiting
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
