"""Development part of the benchmark matrix: the group detectors' conditions.

    python benchmarks/dev_bench.py                 # all conditions, writes docs/benchmarks.md
    python benchmarks/dev_bench.py gauss mnist     # a subset (no doc written)

Parameters and defaults are chosen on these conditions only (benchmarks/matrix.py; the
held-out part is benchmarks/heldout/). Every condition has its clean control. poisonscan
runs in memory (``poisonscan.scan``) with the default detectors and no poison rate.

* ``gauss``: 5 Gaussian classes, d = 64, 2,000 rows each; in class 0 a group of 2, 5 or
  20 % of the class shifted 4 or 6 SD along a random direction (seed 0); clean
  controls: plain Gaussian classes, and classes that are each a mixture of two
  sub-populations 5 SD apart (seeds 0-2). And 6 classes (d = 32, 1,500 rows each) with
  5 % of classes 0 and 3 shifted 6 SD, and its clean control (seed 0). And 5 classes
  sharing ten directions three times stronger than the rest, with 5, 10, 20 or 30 % of
  class 0 shifted 4 SD along a random direction (seed 0; 10 and 20 % in seeds 1 and 2),
  and the clean controls (seeds 0-2).
* ``correlated``: 2, 5 or 10 Gaussian classes (d = 24 or 64, 1,500 rows each) whose
  covariance is far from round, one for all classes or each class its own; in class 0,
  2, 10 or 30 % shifted 4 or 6 SD *in the class's covariance* along a random direction
  (seed 0); and each design's clean control.
* ``mnist``: MNIST-5k with the 3x3 patch or the 20 % noise blend on 1 or 5 % of the data,
  relabelled 0, represented by the penultimate layer of poisonscan's proxy CNN trained on
  the poisoned images (seed 0); and the clean control.
* ``digits``: scikit-learn's digits as raw pixels (64 features): clean, and with the
  patch on 5 % of the data relabelled 0.
* ``bncnn``: MNIST-5k classes {2, 5, 6, 8}, {0, 4, 7, 9} and {1, 3, 5, 6, 8} (seeds 501-503)
  under a wide CNN with batch norm trained outside the scan, the patch and the noise blend
  on 1, 3 or 8 % of the kept rows; and each set's clean control.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import matrix  # noqa: E402
import poisoning  # noqa: E402
from common import best_f1  # noqa: E402
from detectors_bench import prf, quarantined, scan_alone  # noqa: E402


def gaussian(rate: float, shift: float, seed: int, classes: int = 5, per: int = 2000, d: int = 64,
             natural: float = 0.0, targets: tuple = (0,), strong: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(classes, d))
    X = np.concatenate([rng.normal(size=(per, d)) + centres[c] for c in range(classes)])
    y = np.repeat(np.arange(classes), per)
    if strong:  # every class shares `strong` directions three times stronger than the rest
        basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
        scale = np.r_[np.full(strong, 3.0), np.ones(d - strong)]
        X = ((X - centres[y]) * scale) @ basis.T + centres[y]
    if natural:
        for c in range(classes):
            u = rng.normal(size=d)
            u /= np.linalg.norm(u)
            idx = np.flatnonzero(y == c)
            half = rng.choice(idx, len(idx) // 2, replace=False)
            X[half] += natural * u
    truth = np.zeros(len(y), bool)
    limits = []
    for target in targets if rate else ():
        u = rng.normal(size=d)
        u /= np.linalg.norm(u)
        idx = rng.choice(np.flatnonzero(y == target), int(round(rate * per)), replace=False)
        X[idx] += shift * u
        truth[idx] = True
        # the shift's Mahalanobis length in the class (its covariance: identity, or the
        # shared strong directions), and the best F1 a detector can reach there
        inverse_cov_u = basis @ ((basis.T @ u) / scale**2) if strong else u
        separation = shift * float(np.sqrt(u @ inverse_cov_u))
        limits.append((separation, best_f1(separation, len(idx) / per)))
    if limits:  # several targets: the harder one's
        return X.astype(np.float32), y, truth, min(limits, key=lambda t: t[1])
    return X.astype(np.float32), y, truth


def gauss_cases():
    for seed in (0,):
        for shift in (4, 6):
            for rate in (0.02, 0.05, 0.20):
                yield f"Gaussian 5 classes, {rate:.0%} of class 0 shifted {shift} SD", "shift", seed, \
                    (lambda r=rate, s=shift, sd=seed: gaussian(r, s, sd))
    # a shift along a random direction (mostly weak ones) under ten shared strong directions;
    # at 20 and 30 % the group is a shoulder on one hump along the direction it is found on
    for seed, rates in ((0, (0.05, 0.10, 0.20, 0.30)), (1, (0.10, 0.20)), (2, (0.10, 0.20))):
        for rate in rates:
            yield f"Gaussian 5 classes, ten shared strong directions, {rate:.0%} of class 0 shifted 4 SD", "shift", \
                seed, (lambda r=rate, sd=seed: gaussian(r, 4, sd, strong=10))
        yield "Gaussian 5 classes, ten shared strong directions, clean", "clean", seed, \
            (lambda sd=seed: gaussian(0, 0, sd, strong=10))
    # two poisoned classes of six: the stronger must not hide the other
    yield "Gaussian 6 classes (d = 32), 5% of classes 0 and 3 shifted 6 SD", "shift", 0, \
        (lambda: gaussian(0.05, 6, 0, classes=6, per=1500, d=32, targets=(0, 3)))
    yield "Gaussian 6 classes (d = 32), clean", "clean", 0, (lambda: gaussian(0, 0, 0, classes=6, per=1500, d=32))
    for seed in range(3):
        yield "Gaussian 5 classes, clean", "clean", seed, (lambda sd=seed: gaussian(0, 0, sd))
        yield "Gaussian 5 classes, two sub-populations 5 SD apart in each, clean", "clean", seed, \
            (lambda sd=seed: gaussian(0, 0, sd, natural=5.0))


def correlated(rate: float, shift: float, seed: int, classes: int, d: int, own: bool, per: int = 1500):
    """Gaussian classes whose covariance is far from round: A A^T with A = G / sqrt(d) +
    0.3 I (G standard normal), so variances span about two orders of magnitude in
    directions no axis marks. One A for every class (``own=False``: the shared
    within-class covariance SCAn assumes) or one per class (``own=True``). In class 0 a
    share ``rate`` is shifted along a random direction by ``shift`` SD *in the class's
    own covariance* (a Mahalanobis length: mostly along the class's weak directions,
    where a network's trigger feature need not be strong)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(classes, d))
    shared = rng.normal(size=(d, d)) / np.sqrt(d) + 0.3 * np.eye(d)
    mixers = [rng.normal(size=(d, d)) / np.sqrt(d) + 0.3 * np.eye(d) if own else shared for _ in range(classes)]
    X = np.concatenate([rng.normal(size=(per, d)) @ mixers[c].T + centres[c] for c in range(classes)])
    y = np.repeat(np.arange(classes), per)
    truth = np.zeros(len(y), bool)
    if not rate:
        return X.astype(np.float32), y, truth
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    cov = mixers[0] @ mixers[0].T
    length = float(np.sqrt(u @ np.linalg.solve(cov, u)))  # Mahalanobis length of the unit u
    idx = rng.choice(np.flatnonzero(y == 0), int(round(rate * per)), replace=False)
    X[idx] += (shift / length) * u
    truth[idx] = True
    return X.astype(np.float32), y, truth, (float(shift), best_f1(float(shift), len(idx) / per))


def correlated_cases():
    """Shifts measured in the class's own covariance, under covariances far from round
    (:func:`correlated`), seed 0: shared by the classes or each class its own."""
    for own, classes, d in ((False, 2, 24), (False, 5, 64), (False, 10, 64),
                            (True, 5, 24), (True, 2, 64), (True, 10, 64)):
        kind = "each class its own correlated covariance" if own else "one correlated covariance"
        for rate, shift in ((0.02, 6), (0.10, 4), (0.10, 6), (0.30, 6)):
            yield f"Gaussian {classes} classes (d = {d}), {kind}, {rate:.0%} of class 0 shifted {shift} SD", \
                "shift", 0, (lambda k=classes, dd=d, o=own, r=rate, sh=shift: correlated(r, sh, 0, k, dd, o))
        yield f"Gaussian {classes} classes (d = {d}), {kind}, clean", "clean", 0, \
            (lambda k=classes, dd=d, o=own: correlated(0, 0, 0, k, dd, o))


def _cache(name: str, build):
    path = os.path.join(HERE, "data", f"dev_{name}.npz")
    if os.path.exists(path):
        z = np.load(path)
        return z["X"], z["y"], z["truth"]
    X, y, truth = build()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, X=X, y=y, truth=truth)
    return X, y, truth


def _cnn(data: poisoning.Poisoned, epochs: int, seed: int):
    from detectors_bench import representation

    return representation(data, epochs, seed).astype(np.float32), data.labels, data.poisoned


def mnist_cases():
    seed = 0
    for kind, fn in (("patch", poisoning.patch), ("blend", poisoning.blend)):
        for rate in (0.01, 0.05):
            name = f"mnist_{kind}_{int(rate * 100)}"
            yield f"MNIST-5k {kind} {rate:.0%}, proxy CNN", "backdoor", seed, \
                (lambda n=name, f=fn, r=rate: _cache(n, lambda: _cnn(f(r, seed=seed), 5, seed)))
    yield "MNIST-5k clean, proxy CNN", "clean", seed, \
        (lambda: _cache("mnist_clean", lambda: _cnn(poisoning.clean_mnist(), 5, seed)))


def _raw(data: poisoning.Poisoned):
    """Images as raw pixel vectors, with their labels and truth."""
    return data.images.reshape(len(data.labels), -1).astype(np.float32), data.labels, data.poisoned


def digits_cases():
    yield "digits raw pixels, clean", "clean", 0, (lambda: _raw(poisoning.clean_digits()))
    yield "digits raw pixels, patch 5%", "backdoor", 0, (lambda: _raw(poisoning.digits_patch(0.05, seed=0)))
    # added with pixel_trigger's reading of pixel-valued vectors (docs/detectors.md)
    yield "digits raw pixels, patch 1%", "backdoor", 0, (lambda: _raw(poisoning.digits_patch(0.01, seed=0)))
    yield "digits raw pixels, patch 5%", "backdoor", 1, (lambda: _raw(poisoning.digits_patch(0.05, seed=1)))
    yield "digits raw pixels, blend 5%", "backdoor", 0, (lambda: _raw(poisoning.digits_blend(0.05, seed=0)))
    yield "digits raw pixels, blend 10%", "backdoor", 1, (lambda: _raw(poisoning.digits_blend(0.10, seed=1)))


def _classes(data, keep):
    """The rows of the classes ``keep`` of ``(X, y, truth)``."""
    X, y, truth = data[:3]
    m = np.isin(y, keep)
    return X[m], y[m], truth[m]


def few_cases():
    """Two and three classes, where there are no peers: ``spectral`` judges by its own
    shape where the other classes are single humps (docs/detectors.md, the decision)."""
    for classes, rate, shift in ((2, 0.10, 4), (2, 0.05, 6), (3, 0.20, 4)):
        yield f"Gaussian {classes} classes (d = 32), {rate:.0%} of class 0 shifted {shift} SD", "shift", 0, \
            (lambda k=classes, r=rate, sh=shift: gaussian(r, sh, 0, classes=k, per=1500, d=32))
    for classes in (2, 3):
        yield f"Gaussian {classes} classes (d = 32), clean", "clean", 0, \
            (lambda k=classes: gaussian(0, 0, 0, classes=k, per=1500, d=32))
        yield f"Gaussian {classes} classes (d = 32), two sub-populations 5 SD apart in each, clean", "clean", 0, \
            (lambda k=classes: gaussian(0, 0, 0, classes=k, per=1500, d=32, natural=5.0))
    yield "digits raw pixels, classes 0 and 3, patch 5% (of all ten classes) relabelled 0", "backdoor", 0, \
        (lambda: _classes(_raw(poisoning.digits_patch(0.05, seed=0)), (0, 3)))
    yield "digits raw pixels, classes 0 and 3, clean", "clean", 0, \
        (lambda: _classes(_raw(poisoning.clean_digits()), (0, 3)))
    # digit 9 holds a separated natural group (about 18 % of it): every clean pair with it
    # has class 9 judged by its own shape (docs/detectors.md, the limits)
    yield "digits raw pixels, classes 0 and 9, clean", "clean", 0, \
        (lambda: _classes(_raw(poisoning.clean_digits()), (0, 9)))
    # the group here is SPECTRE's and activation clustering's to find: they have no
    # verdict without peers
    yield "MNIST-5k patch 5%, classes 0, 1 and 7, proxy CNN", "backdoor", 0, \
        (lambda: _classes(_cache("mnist_patch_5", lambda: _cnn(poisoning.patch(0.05, seed=0), 5, 0)), (0, 1, 7)))
    yield "MNIST-5k clean, classes 0, 1 and 7, proxy CNN", "clean", 0, \
        (lambda: _classes(_cache("mnist_clean", lambda: _cnn(poisoning.clean_mnist(), 5, 0)), (0, 1, 7)))


def _bncnn(data: poisoning.Poisoned, keep: tuple, epochs: int, seed: int):
    """The penultimate layer (160 units, after batch norm and ReLU) of a wide CNN with batch
    norm (32-64-96 channels), trained on the images of the classes ``keep`` only (the
    poisoned labels), ``epochs`` epochs of Adam (batches of 64, lr 1e-3, torch seed
    ``seed``): a user's own network, not the scan's proxy."""
    import torch
    from torch import nn

    torch.set_num_threads(2)
    m = np.isin(data.labels, keep)
    x = torch.tensor(data.images[m][:, None])
    labels = data.labels[m]
    target = torch.tensor(np.searchsorted(np.array(sorted(keep)), labels))
    torch.manual_seed(seed)

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    net = nn.Sequential(
        *block(1, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2), *block(64, 96),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 160), nn.BatchNorm1d(160), nn.ReLU(),
        nn.Linear(160, len(keep)),
    )
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(target), generator=order).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), target[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return net[:-1](x).numpy().astype(np.float32), labels, data.poisoned[m]


def bncnn_cases():
    """Four and five MNIST-5k classes under a wide CNN with batch norm trained outside the
    scan (:func:`_bncnn`, 3 epochs): the patch and the noise blend on 1, 3 or 8 % of the
    kept classes' rows (taken from all ten classes, relabelled to the target), and each
    set's clean control. Few classes: three or four peers per class."""
    _, labels = poisoning.mnist()
    for keep, target, seed in (((2, 5, 6, 8), 5, 501), ((0, 4, 7, 9), 7, 502), ((1, 3, 5, 6, 8), 3, 503)):
        rows = int(np.isin(labels, keep).sum())
        tag = "".join(map(str, keep))
        for kind, fn in (("patch", poisoning.patch), ("blend", poisoning.blend)):
            for rate in (0.01, 0.03, 0.08):
                yield f"MNIST-5k classes {tag}, wide batch-norm CNN, {kind} {rate:.0%} -> {target}", "backdoor", seed, \
                    (lambda k=keep, f=fn, r=rate, t=target, s=seed, nr=rows, n=f"bncnn_{tag}_{kind}_{int(rate * 100)}":
                     _cache(n, lambda: _bncnn(f(r * nr / len(labels), seed=s, target=t), k, 3, s)))
        yield f"MNIST-5k classes {tag}, wide batch-norm CNN, clean", "clean", seed, \
            (lambda k=keep, s=seed, n=f"bncnn_{tag}_clean": _cache(n, lambda: _bncnn(poisoning.clean_mnist(), k, 3, s)))


FAMILIES = {"gauss": gauss_cases, "mnist": mnist_cases, "digits": digits_cases, "few": few_cases,
            "correlated": correlated_cases, "bncnn": bncnn_cases}


#: Opt-in detectors measured on these conditions, each named alone in a second scan (a
#: column of its own; the poisonscan column stays the default detectors).
ALONE = ("untangling",)
#: Opt-in detectors measured beside the defaults: a third scan with the default detectors
#: and it (its column; the group tests then run at the level of one more detector).
WITH = ("graph_clustering",)


def run(name, kind, seed, build) -> dict:
    from poisonscan import scan
    from poisonscan.detectors import default_detectors

    X, y, truth, *limit = build()
    t0 = time.perf_counter()
    result = scan(X, y, seed=seed)
    seconds = time.perf_counter() - t0
    flagged = quarantined(result, len(y))
    verdicts = {}
    for cls in result.summary["classes"]:
        for det, v in (cls.get("verdicts") or {}).items():
            if v.get("p_value") is not None and v.get("level") is not None:
                verdicts[f"{cls['label']}/{det}"] = (v["p_value"], v["level"], v.get("poisoned"), v.get("note"))
    alone = {det: scan_alone(X, y, truth, seed, det) for det in ALONE}
    for det in WITH:
        both = scan(X, y, seed=seed, detectors=(*default_detectors("features"), det))
        alone[f"with {det}"] = {**prf(quarantined(both, len(y)), truth),
                                "classes_poisoned": both.summary["classes_poisoned"]}
    return {
        "case": name, "kind": kind, "seed": seed, "rows": len(y), "poisoned": int(truth.sum()),
        "seconds": seconds, "poisonscan": prf(flagged, truth),
        "classes_poisoned": result.summary["classes_poisoned"], "verdicts": verdicts, "alone": alone,
        "limit": limit[0] if limit else None,
    }


def fmt(row: dict, m: dict | None = None) -> str:
    m = m or {**row["poisonscan"], "classes_poisoned": row["classes_poisoned"]}
    if row["kind"] == "clean":
        return f"{m['share']:.2%} (classes {m['classes_poisoned'] or 'none'})"
    return f"{m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f})"


def main(argv):
    warnings.filterwarnings("ignore")
    matrix.check_disjoint()
    families = argv or list(FAMILIES)
    rows = []
    for fam in families:
        for name, kind, seed, build in FAMILIES[fam]():
            row = run(name, kind, seed, build)
            rows.append(row)
            print(f"[{fam}] seed {seed} {name}: {fmt(row)}; "
                  + "".join(f"{d} alone {fmt(row, row['alone'][d])}; " for d in ALONE)
                  + "".join(f"with {d} {fmt(row, row['alone'][f'with {d}'])}; " for d in WITH)
                  + f"[{row['seconds']:.1f} s]", flush=True)
            if os.environ.get("DEV_VERBOSE"):
                for k, v in sorted(row["verdicts"].items()):
                    print(f"    {k}: p = {v[0]:.2e} level {v[1]:.1e} poisoned {v[2]}: {v[3]}")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "dev.json"), "w") as f:
        json.dump(rows, f, indent=2)
    if not argv:
        write_doc(rows)


def write_doc(rows):
    from common import machine, write_section

    lines = ["| condition | family | seed | poisonscan | best possible F1 | " + "".join(f"{d} (alone) | " for d in ALONE)
             + "".join(f"with {d} | " for d in WITH) + "s |",
             "| --- | --- | --- | --- | ---: | " + "--- | " * (len(ALONE) + len(WITH)) + "---: |"]
    for r in rows:
        best = f"{r['limit'][1]:.3f} (separation {r['limit'][0]:.2f})" if r.get("limit") else "—"
        lines.append(f"| {r['case']} | {r['kind']} | {r['seed']} | {fmt(r)} | {best} | "
                     + "".join(f"{fmt(r, r['alone'][d])} | " for d in ALONE)
                     + "".join(f"{fmt(r, r['alone'][f'with {d}'])} | " for d in WITH) + f"{r['seconds']:.1f} |")
    clean = [r for r in rows if r["kind"] == "clean"]
    poisoned = [r for r in rows if r["kind"] != "clean"]
    worst = min((r["poisonscan"]["f1"] for r in poisoned), default=float("nan"))
    alarms = sum(bool(r["classes_poisoned"]) for r in clean)
    text = f"""## Development part: group detectors (spectral, SPECTRE, activation clustering)

`python benchmarks/dev_bench.py` on {machine()}. The conditions parameters were chosen
on (benchmarks/matrix.py); in memory, default detectors, **no poison rate**. Cells:
F1 (precision/recall) of the quarantined rows; on clean controls the share of rows
quarantined and the classes judged poisoned. The `untangling (alone)` column is a second
scan of the same vectors with that opt-in detector alone (docs/detectors.md); the
`with graph_clustering` column a third, with the default detectors and that opt-in
detector together (every group test then at the level of four group detectors); the
summary lines below are the poisonscan column's. Best possible F1 (planted Gaussian
shifts): the F1 of the best cut along the true discriminant with the shift, the class's
covariance and the share all known (`benchmarks/common.py`, `best_f1`; separation: the
shift's Mahalanobis length in its class; with two targets, the harder one's). The groups
overlap, so no detector can expect more (a single draw of rows may score above it).

{chr(10).join(lines)}

Lowest F1 over the poisoned conditions: {worst:.2f}; clean controls with any class judged
poisoned: {alarms} of {len(clean)}; largest share quarantined in a clean control:
{max((r['poisonscan']['share'] for r in clean), default=0):.2%}.
"""
    write_section("dev_groups", text)


if __name__ == "__main__":
    main(sys.argv[1:])
