"""The classes ranked by the strength of their evidence, and that evidence in words."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from poisonscan.pipelines.scan.values import finite

# the summary: how far each class stands out ---------------------------------------------
#: How a ranking entry's evidence was measured (its ``basis``).
BASIS_P_VALUE = "p-value"

BASIS_SEPARATION = "separation"

BASIS_NONE = "not judged"


def rank_classes(classes: Sequence[Mapping[str, Any]]) -> tuple[list[dict], dict | None]:
    """Every class ordered by how far it stands out, and the near miss.

    ``classes`` are the per-class entries of ``summary.json`` (each with its
    ``verdicts``), so the ranking is computed the same way from a scan in progress and
    from the outputs of an older scan.

    A class's strongest evidence is its detector with the smallest ``p_value / level``
    (``ratio``): below 1 the detector judges the class poisoned, and the closer above 1,
    the nearer the class came. Verdicts without a calibrated ``p_value`` and ``level``
    fall back on the decision's own figures (:func:`_fallback_strength`); such classes
    rank after those with a ratio (``basis`` says which). Classes judged poisoned come
    first; classes that were not judged (too few rows) come last. Ties keep the label
    order.

    Returns ``(ranking, near_miss)``: one entry per class, and the first entry of a
    judged class that is not judged poisoned (None when there is none).
    """
    scored = []
    for order, c in enumerate(classes):
        entry, weakness = _strongest(c)
        poisoned = c.get("poisoned")
        tier = {BASIS_P_VALUE: 0, BASIS_SEPARATION: 1, BASIS_NONE: 2}[entry["basis"]]
        scored.append(((0 if poisoned else 1 if poisoned is not None else 2, tier, weakness, order), entry))
    scored.sort(key=lambda t: t[0])
    ranking = [{"rank": rank, **entry} for rank, (_, entry) in enumerate(scored, start=1)]
    near = next((e for e in ranking if e["poisoned"] is False), None)
    return ranking, (dict(near) if near else None)


def evidence_ratio(p_value: Any, level: Any) -> float | None:
    """``p_value / level`` of a calibrated verdict (below 1: judged poisoned; smaller:
    stronger evidence), or None where either is missing or not finite."""
    p, level = finite(p_value), finite(level)
    return p / level if p is not None and level is not None and level > 0 else None


def _strongest(c: Mapping[str, Any]) -> tuple[dict, tuple]:
    """One class's strongest evidence, as a ranking entry (without its rank), and a key
    that sorts stronger evidence first among classes of the same ``basis``."""
    verdicts = c.get("verdicts") or {}
    out = {
        "label": c.get("label"),
        "poisoned": c.get("poisoned"),
        "detector": None,
        "counted": False,
        "p_value": None,
        "level": None,
        "ratio": None,
        "separation": None,
        "group_fraction": None,
        "basis": BASIS_NONE,
        "evidence": c.get("status") or "not judged",
        "note": "",
    }
    if not verdicts:
        return out, ()
    calibrated = []
    for name, v in verdicts.items():
        ratio = evidence_ratio(v.get("p_value"), v.get("level"))
        if ratio is not None:
            calibrated.append((ratio, -(finite(v.get("separation")) or 0.0), name, v))
    if calibrated:
        ratio, neg_sep, name, v = min(calibrated, key=lambda t: t[:2])  # first of equals: detector order
        basis, weakness = BASIS_P_VALUE, (ratio, neg_sep)
    else:
        ratio = None
        name, v = max(verdicts.items(), key=lambda kv: _fallback_strength(kv[1]))  # first of equals
        basis, weakness = BASIS_SEPARATION, tuple(-float(x) for x in _fallback_strength(v))
    out.update(
        detector=name,
        counted=bool(v.get("counted")),
        p_value=finite(v.get("p_value")) if basis == BASIS_P_VALUE else None,
        level=finite(v.get("level")) if basis == BASIS_P_VALUE else None,
        ratio=ratio,
        separation=finite(v.get("separation")),
        group_fraction=finite(v.get("group_fraction")),
        basis=basis,
        note=str(v.get("note") or ""),
    )
    out["evidence"] = evidence_words(out, finite(v.get("delta_bic")), bool(v.get("poisoned")))
    return out, weakness


def _fallback_strength(v: Mapping[str, Any]) -> tuple:
    """Evidence of a verdict without a calibrated p-value, stronger first when larger:
    judged poisoned, then two groups fit its scores better than one (BIC gain > 0),
    then the groups' separation."""
    return (
        bool(v.get("poisoned")),
        (finite(v.get("delta_bic")) or 0.0) > 0,
        finite(v.get("separation")) or 0.0,
    )


def evidence_words(e: Mapping[str, Any], delta_bic: float | None = None, detector_poisoned: bool = False) -> str:
    """A ranking entry's evidence in plain words: "spectre: p = 0.0002, below the level
    0.001", or, without a calibrated p-value, the decision's separation and group."""
    det = e.get("detector")
    if det is None:
        return str(e.get("evidence") or "not judged")
    if e.get("basis") == BASIS_P_VALUE:
        p, level, ratio = e["p_value"], e["level"], e["ratio"]
        if ratio < 1:
            where = f"below the level {level:.2g}"
        elif ratio < 1.005:
            where = f"at the level {level:.2g}"
        else:
            times = f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.3g}"
            where = f"{times} times the level {level:.2g}"
        text = f"{det}: p = {p:.2g}, {where}"
    else:
        parts = [f"{det} (no calibrated p-value)"]
        if delta_bic is not None and delta_bic > 0:
            parts.append(f"two groups fit better than one (BIC gain {delta_bic:.1f})")
        if e.get("separation"):
            parts.append(f"separation {e['separation']:.2f}")
        if e.get("group_fraction"):
            parts.append(f"group of {100 * e['group_fraction']:.1f} % of the class")
        text = ": ".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]
    if detector_poisoned and not e.get("counted"):
        text += " (judged poisoned by this detector, not confirmed by the others)"
    return text
