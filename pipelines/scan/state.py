"""A scan's fitted state, saved with its outputs (``state.pkl``), and merged across scans.

The state is what pass 1 computed — per (class, vector length) partials: row counts,
the detectors' accumulators and the id-seeded reservoir samples, all mergeable — and the
model fitted from them. Partials of several scans (one per day, say) merge into the
partials of one scan of their union: counts and accumulators add, and a reservoir keeps
the rows of lowest id-hash priority, which are the same rows whichever scan saw them
(docs/running-at-scale.md).

A scan of raw inputs (images, texts, tables) also keeps its representer: the fitted
encoder and the proxy's description (its weights are ``proxy.pt`` beside the state, read
weights-only), so that a later scan with ``--reference`` represents its rows the same way.

A state file is read with an unpickler that builds only poisonscan's own classes, numpy
arrays and plain containers: a state file from elsewhere cannot run code.
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import pickle
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

from poisonscan.detectors import Detector
from poisonscan.detectors.base import label_sort_key
from poisonscan.pipelines.config import ConfigError, ScanConfig
from poisonscan.pipelines.io.sources import ROW_BITS
from poisonscan.pipelines.scan.fit import Layout, ScanModel, fit_model

STATE_FILE = "state.pkl"
#: a raw-input scan's proxy weights (a state dict, read weights-only), beside the state
PROXY_FILE = "proxy.pt"

#: bumped when the saved layout changes; a state of another version is refused
STATE_VERSION = 1


class StateError(ValueError):
    """A state file that cannot be used: unreadable, of another version or another scan kind."""


@dataclass
class ScanState:
    """What one scan fitted (see the module's docstring)."""

    version: int
    #: the input kind (features, image, text, tabular) and the vector length scanned
    kind: str
    dim: int | None
    partials: dict  # (label, vector length) -> ClassPartial
    model: ScanModel
    #: the settings the scan ran with (ScanConfig's fields, as given)
    settings: dict
    layout: Layout = dataclasses.field(default_factory=Layout)
    #: raw inputs: the encoder and proxy (without weights) or the user's model; None for vectors
    representer: object = None

    @property
    def rows(self) -> int:
        """Rows of the vector length scanned (others were rejected in pass 2)."""
        return sum(p.rows for (_, dim), p in self.partials.items() if dim == self.dim)


def scan_state(
    kind: str, partials: Mapping, model: ScanModel, cfg: ScanConfig, layout: Layout, representer=None
) -> ScanState:
    settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "model"}
    return ScanState(STATE_VERSION, kind, model.dim, canonical_partials(partials), model, settings, layout, representer)


def canonical_partials(partials: Mapping) -> dict:
    """The partials keyed in (class, vector length) order, each sample's rows in priority
    order: the order classes arrive in and the order partials were merged in (one worker
    or several) then leave no trace in a saved state."""
    return {
        key: dataclasses.replace(partials[key], reservoir=partials[key].reservoir.ordered())
        for key in sorted(partials, key=lambda k: (label_sort_key(k[0]), k[1]))
    }


def merge_partials(partials: Sequence[Mapping], detectors: Sequence[Detector]) -> dict:
    """Partials of several scans merged per (class, vector length).

    A row's position (file, row) is its place in its own scan's input; each scan's
    files are numbered after the previous scans' so that positions stay distinct (a
    detector tells a sampled row from its neighbours by position)."""
    out: dict = {}
    first_file = 0
    for one in partials:
        last = -1
        for key, part in one.items():
            files = part.reservoir.positions >> ROW_BITS
            last = max(last, int(files.max()) if files.size else -1)
            if first_file:
                res = dataclasses.replace(part.reservoir, positions=part.reservoir.positions + (first_file << ROW_BITS))
                part = dataclasses.replace(part, reservoir=res)
            out[key] = part if key not in out else out[key].merge(part, detectors)
        first_file += last + 1
    return out


def merge_states(states: Sequence[ScanState], cfg: ScanConfig, detectors: Sequence[Detector]) -> ScanState:
    """The state of one scan of the union of the scans ``states`` came from: their
    partials merged, and the model fitted again from them (with ``cfg``'s decision
    settings and ``detectors``, which must be the scans' own)."""
    if not states:
        raise StateError("no state to merge")
    kinds = {s.kind for s in states}
    if len(kinds) > 1:
        raise StateError(f"states of different input kinds cannot be merged: {sorted(kinds)}")
    layout = states[0].layout
    partials = merge_partials([s.partials for s in states], detectors)
    model = fit_model(partials, detectors, cfg, layout)
    return scan_state(states[0].kind, partials, model, cfg, layout)


def dumps(state: ScanState) -> bytes:
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


# reading: only data ----------------------------------------------------------------------
_BUILTINS = {"set", "frozenset", "dict", "list", "tuple", "slice", "complex", "float", "int", "str",
             "bytes", "bytearray", "range", "bool", "object"}
_NUMPY = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "scalar"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
}
_OTHER = {("collections", "OrderedDict"), ("collections", "Counter"), ("collections", "defaultdict"),
          ("copyreg", "_reconstructor"), ("datetime", "datetime"), ("datetime", "date")}


class _DataOnly(pickle.Unpickler):
    """Builds numpy arrays, plain containers and classes defined in poisonscan's own
    modules; refuses every other global (a function such as ``os.system``, a module)."""

    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _BUILTINS:
            return getattr(builtins, name)
        if (module, name) in _NUMPY or (module, name) in _OTHER:
            return super().find_class(module, name)
        if module.startswith("numpy") and name.startswith(("dtype", "Float", "Int", "UInt", "Bool", "Str")):
            return super().find_class(module, name)  # numpy's dtype classes (numpy.dtypes.Float32DType)
        if module == "poisonscan" or module.startswith("poisonscan."):
            __import__(module)
            obj = getattr(sys.modules[module], name, None)
            if isinstance(obj, type) and obj.__module__ == module:
                return obj
        raise pickle.UnpicklingError(f"a state file may hold data only; it names {module}.{name}")


def loads(data: bytes) -> ScanState:
    try:
        state = _DataOnly(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise StateError(f"not a poisonscan state: {exc}") from None
    except Exception as exc:  # truncated or corrupt
        raise StateError(f"not a poisonscan state: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, ScanState):
        raise StateError(f"not a poisonscan state (holds a {type(state).__name__})")
    if state.version != STATE_VERSION:
        raise StateError(f"a state of version {state.version}; this poisonscan reads version {STATE_VERSION}")
    return state


def check_reference_keys(state: ScanState, kinds, label_column: str, where: str) -> None:
    """The reference's classes are labels of the kind these inputs hold (integers or
    text: ``3`` and ``"3"`` are different classes to its model, so every row would be
    rejected as of a class it never scanned), and its vectors have the width that a
    fixed-size features column of these inputs declares (:class:`StateError`)."""
    import pyarrow as pa

    labels = list(state.model.classes)
    want_int = pa.types.is_integer(kinds.label_type)
    if labels and all(isinstance(v, str) for v in labels) == want_int:
        theirs, ours = ("integers", "text") if not want_int else ("text", "integers")
        raise StateError(
            f"{where}: its classes are labels written as {theirs} ({', '.join(map(repr, labels[:3]))}"
            f"{', ...' if len(labels) > 3 else ''}); these inputs' label column {label_column!r} holds "
            f"{ours}: write the labels as the reference's inputs did"
        )
    fixed = kinds.fixed_dim if kinds.input.kind == "features" else None
    if fixed is not None and state.dim is not None and int(fixed) != int(state.dim):
        raise StateError(
            f"{where}: its vectors have {state.dim} numbers; these inputs' features column "
            f"{kinds.input.columns[0]!r} holds {fixed}"
        )


def check_reference_state(state: ScanState, kind: str, raw: bool, model_given: bool, where: str) -> None:
    """Refuse a reference state that cannot serve a scan of ``kind`` input: another input
    kind (:class:`StateError`), a raw input with ``--model`` (:class:`ConfigError`: the
    rows are represented by the reference's model), or a raw-input state without its
    representer (:class:`StateError`)."""
    if state.kind != kind:
        raise StateError(f"{where}: a scan of {_kind_words(state.kind)}, this input is {_kind_words(kind)}")
    if raw and model_given:
        raise ConfigError("a model of your own (--model) with a reference (--reference): the rows are "
                          "represented by the reference's model; drop the model")
    if raw and state.representer is None:
        raise StateError(f"{where}: its state holds no representer (a scan from an older version)")


def _kind_words(kind: str) -> str:
    return "vectors" if kind == "features" else f"{kind} input"


def read_state(folder: str, opener) -> ScanState:
    """The state a scan saved in its output ``folder`` (``opener(path)`` opens a file)."""
    path = folder.rstrip("/") + "/" + STATE_FILE
    try:
        with opener(path) as f:
            data = f.read()
    except FileNotFoundError:
        raise StateError(f"{folder}: no {STATE_FILE} (the output folder of a scan holds one)") from None
    except OSError as exc:
        raise StateError(f"{path}: cannot read: {exc}") from None
    try:
        return loads(data)
    except StateError as exc:
        raise StateError(f"{path}: {exc}") from None


__all__ = [
    "PROXY_FILE",
    "STATE_FILE",
    "ScanState",
    "StateError",
    "check_reference_state",
    "dumps",
    "loads",
    "merge_partials",
    "merge_states",
    "read_state",
    "scan_state",
]
