"""Process handling around a Beam run: worker threads, worker output and Beam's logging."""

from __future__ import annotations

import logging
import os
import sys
import tempfile


class worker_threads:
    """Give each worker process its share of the cores for BLAS and OpenMP.

    Worker processes inherit the environment; left alone, each would start one BLAS
    thread per core and N workers would oversubscribe the machine N times (measured: a
    1M x 256 scan with two workers on two cores took 19-25 s instead of 14.5 s).
    Variables the user has set are left as they are.
    """

    _VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

    def __init__(self, workers: int | None):
        self.workers = workers or 1
        self.saved: dict = {}

    def __enter__(self):

        if self.workers > 1:
            share = str(max(1, (os.cpu_count() or 1) // self.workers))
            for var in self._VARS:
                if var not in os.environ:
                    self.saved[var] = None
                    os.environ[var] = share
        return self

    def __exit__(self, *exc):

        for var in self.saved:
            os.environ.pop(var, None)
        return False


class worker_output:
    """Send what worker processes print to a log file instead of the terminal.

    Worker processes of the multi-processing FnApiRunner inherit file descriptor 2 and
    log their start-up at INFO before any option can quieten them; their output goes to
    a temporary file whose path is returned (and named in the error if the run fails).
    """

    def __init__(self, workers: int | None):
        self.active = bool(workers and workers > 1)
        self.path = None

    def __enter__(self):
        if not self.active:
            return None

        sys.stderr.flush()
        fd, self.path = tempfile.mkstemp(prefix="poisonscan-workers-", suffix=".log")
        self._saved = os.dup(2)
        os.dup2(fd, 2)
        os.close(fd)
        return self.path

    def __exit__(self, exc_type, *rest):
        if not self.active:
            return False

        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        if exc_type is None:
            os.remove(self.path)
        return False


class quiet_beam:
    """Keep Beam's chatter (and its copy of a failure's traceback) off the terminal
    during a run; a failure is reported once, by the caller."""

    def __enter__(self):
        self.logger = logging.getLogger("apache_beam")
        self.level = self.logger.level
        if self.level == logging.NOTSET or self.level == logging.ERROR:
            self.logger.setLevel(logging.CRITICAL)
        return self

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        return False
