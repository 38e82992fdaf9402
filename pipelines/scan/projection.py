"""Each class's 2-D view for the report: its top two principal directions, fitted in
pass 1 next to the detectors (one class per element), applied to a uniform sample."""

from __future__ import annotations

import numpy as np

from poisonscan.pipelines.scan.values import plain

#: Points per class in the 2-D projection (a uniform sample of the class).
PROJECTION_POINTS = 400


#: Rows the projection's axes are fitted on.
PROJECTION_FIT_ROWS = 1024


def project_class(reservoir, layout) -> dict:
    """A 2-D view of one class: its top two principal directions (fitted on a uniform
    sample of up to 1,024 rows), applied to a uniform sample of up to 400 rows."""
    fit = reservoir.head(PROJECTION_FIT_ROWS)
    pts = reservoir.head(PROJECTION_POINTS)
    order = np.argsort(pts.positions, kind="stable")
    X_fit, _ = layout.split(np.asarray(fit.X, dtype=np.float64))
    X_pts, _ = layout.split(np.asarray(pts.X, dtype=np.float64)[order])
    mean = X_fit.mean(axis=0) if len(X_fit) else np.zeros(X_pts.shape[1])
    axes = _top_directions(X_fit - mean, 2)
    coords = (X_pts - mean) @ axes if len(X_pts) else np.zeros((0, 2))
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]))])
    return {
        "positions": pts.positions[order].astype(np.int64),
        "ids": [plain(v) for v in np.asarray(pts.ids)[order]],
        "xy": coords.astype(np.float32),
    }


def _top_directions(Xc: np.ndarray, k: int) -> np.ndarray:
    """(d, k) top principal directions of centred rows, signs fixed (deterministic)."""
    n, d = Xc.shape
    if n < 2 or d == 0:
        return np.eye(d, k) if d else np.zeros((0, k))
    if d <= n:
        vals, vecs = np.linalg.eigh(Xc.T @ Xc)
        axes = vecs[:, ::-1][:, :k]
    else:  # fewer rows than dimensions: the Gram matrix is smaller
        vals, vecs = np.linalg.eigh(Xc @ Xc.T)
        top = vecs[:, ::-1][:, :k]
        axes = Xc.T @ top
        axes /= np.maximum(np.linalg.norm(axes, axis=0), 1e-12)
    if axes.shape[1] < k:
        axes = np.hstack([axes, np.zeros((d, k - axes.shape[1]))])
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    return axes * np.where(signs == 0, 1.0, signs)
