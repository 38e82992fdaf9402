"""What the fits import, and where: a scan imports the modules its detectors name in
``fit_imports`` before it fits classes side by side in threads (two threads importing
scikit-learn for the first time at once can see a half-initialised module), and a scan
whose detectors name none never loads scikit-learn or scipy.stats (the calibration's
tails come from scipy.special, imported before the threads start).

Each case scans in a fresh interpreter (the imports are per process), with the fits
forced into threads, and records every first import of a scikit-learn or SciPy module by the thread it ran in."""

import json
import subprocess
import sys

from poisonscan.detectors import available_detectors, detector_class, make_detector

SCAN = """
import json, sys, threading
import numpy as np
import poisonscan.pipelines.scan.fit as fit

fit.usable_cores = lambda: 2  # the fits run in threads whatever this machine has
in_threads = []

def audit(event, args):
    if event == "import" and str(args[0]).startswith(("sklearn", "scipy")) and threading.current_thread() is not threading.main_thread():
        in_threads.append(args[0])

sys.addaudithook(audit)
from poisonscan import scan

rng = np.random.default_rng(0)
X = rng.standard_normal((3000, 12)).astype(np.float32)
y = np.repeat(np.arange(6), 500)
X[:40] += 8 * np.eye(12, dtype=np.float32)[0]   # a planted group in class 0
y[2500:2520] = 1                                 # and a few flipped labels
scan(X, y, detectors=tuple(sys.argv[1:]))
print(json.dumps({"in_threads": sorted(set(in_threads)),
                  "loaded": "sklearn" in sys.modules,
                  "stats_loaded": "scipy.stats" in sys.modules}))
"""


def _scan_imports(detectors):
    out = subprocess.run([sys.executable, "-c", SCAN, *detectors], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_spectral_scan_loads_neither_sklearn_nor_scipy_stats():
    assert detector_class("spectral").fit_imports == ()
    seen = _scan_imports(["spectral"])
    assert seen == {"in_threads": [], "loaded": False, "stats_loaded": False}


def test_no_fit_thread_imports_sklearn_or_scipy():
    """Every detector that reads vectors, in one scan: scikit-learn and scipy.stats are
    loaded (the label and clustering detectors use them) and nothing of them or of the
    rest of SciPy is imported for the first time inside a fit's thread."""
    names = [n for n in available_detectors() if make_detector(n).input != "tokens"]
    assert any(detector_class(n).fit_imports for n in names)
    seen = _scan_imports(names)
    assert seen["loaded"] and seen["stats_loaded"]
    assert seen["in_threads"] == []


def test_every_fit_runs_with_one_blas_and_one_openmp_thread(monkeypatch):
    """k-means (OpenMP) split over threads sums in another order: activation clustering's
    centres differed by ~1e-16 between one worker with two cores and two workers with
    one each. An OpenMP limit holds only for the thread that sets it, so each fit, in the
    pool or not, must run with one thread of each kind."""
    from threadpoolctl import threadpool_info

    import poisonscan.pipelines.scan.fit as fit

    def threads(_):
        return sorted({(i["user_api"], i["num_threads"]) for i in threadpool_info()})

    for cores, items in ((2, [0, 1, 2, 3]), (2, [0]), (1, [0, 1])):
        monkeypatch.setattr(fit, "usable_cores", lambda: cores)
        seen = fit.each_at_once(threads, items, ("sklearn.cluster",))
        assert {"openmp", "blas"} <= {api for one in seen for api, _ in one}
        assert all(n == 1 for one in seen for _, n in one), (cores, seen)
