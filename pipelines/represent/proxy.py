"""Representations: a proxy network trained on the data itself, or the user's model.

A backdoor is visible only in the representation of a model that learned it, so the proxy
is trained on the data's own labels until it fits them (a fixed number of epochs per
kind); its penultimate-layer activations are the representation the detectors see, as in
the spectral-signature, activation-clustering and SPECTRE papers.

The proxy is *cross-fitted*: besides the network trained on the whole training sample,
``folds`` networks are each trained without one fold. A sampled row's class
probabilities come from the network that never saw it, every other row's from the full
network (which never saw it either), so label consistency gets out-of-fold probabilities
for every row. All networks live in one :class:`ProxyEnsemble`, saved as a state dict and
applied with Beam's RunInference (:func:`ensemble_inference`). Plain torch, no Beam.
"""

from __future__ import annotations

import importlib
import io
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from poisonscan.pipelines.io.outputs import open_read


# networks -----------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """Two convolution blocks and a hidden layer of ``width`` units (the representation)."""

    def __init__(self, side: int, classes: int, width: int = 128, channels: int = 1, base: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, base, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(base, 2 * base, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * base * (side // 4) ** 2, width),
            nn.ReLU(),
        )
        self.head = nn.Linear(width, classes)

    def features(self, inputs: dict) -> torch.Tensor:
        x = inputs["x"]
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


class TextMLP(nn.Module):
    """Hashed bag of words and word pairs -> two hidden layers (the second is the
    representation)."""

    def __init__(self, buckets: int, classes: int, width: int = 128):
        super().__init__()
        # sparse gradients: a step touches only the buckets of its batch's n-grams
        self.bag = nn.EmbeddingBag(buckets + 1, width, mode="sum", padding_idx=buckets, sparse=True)
        self.body = nn.Sequential(nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.head = nn.Linear(width, classes)

    def features(self, inputs: dict) -> torch.Tensor:
        return self.body(self.bag(inputs["ids"], per_sample_weights=inputs["weights"]))


class TabularMLP(nn.Module):
    """Standardised and one-hot encoded columns -> two hidden layers."""

    def __init__(self, inputs: int, classes: int, width: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
        )
        self.head = nn.Linear(width, classes)

    def features(self, inputs: dict) -> torch.Tensor:
        return self.body(inputs["x"])


def make_net(kind: str, params: dict) -> nn.Module:
    if kind == "image":
        return SmallCNN(params["size"], params["classes"], channels=params["channels"], base=params.get("base", 16))
    if kind == "text":
        return TextMLP(params["buckets"], params["classes"])
    if kind == "tabular":
        return TabularMLP(params["inputs"], params["classes"])
    raise ValueError(f"no proxy network for input kind {kind!r}")


class LinearBag(nn.Module):
    """A multinomial logistic regression on the hashed bag of words and word pairs: one
    weight per (bucket, class), summed over a row's weighted buckets, and a bias."""

    def __init__(self, buckets: int, classes: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(buckets + 1, classes, mode="sum", padding_idx=buckets)
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, inputs: dict) -> torch.Tensor:
        return self.bag(inputs["ids"], per_sample_weights=inputs["weights"]) + self.bias


class ProxyEnsemble(nn.Module):
    """The full network and the cross-fitted models.

    ``forward`` returns the full network's penultimate activations and, per row, the
    class probabilities of the cross-fitted model that left the row out (``fold`` >= 0)
    or of the full model (``fold`` = -1, rows outside the training sample). The
    cross-fitted models are ``folds`` networks like the full one, or, for text
    (``linear`` > 0), ``linear`` logistic regressions of the hashed bag, whose full model
    (fitted on the whole training sample) gives the rows outside it their probabilities.
    """

    def __init__(self, kind: str, params: dict, folds: int, linear: int = 0):
        super().__init__()
        self.kind = kind
        self.full = make_net(kind, params)
        self.folds = nn.ModuleList([make_net(kind, params) for _ in range(folds)])
        self.linear = nn.ModuleList(
            [LinearBag(params["buckets"], params["classes"]) for _ in range(linear + 1)] if linear else []
        )

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.full.features(inputs)
        fold = inputs["fold"]
        if len(self.linear):
            sub = {k: v for k, v in inputs.items() if k != "fold"}
            logits = self.linear[0](sub)
            for f, model in enumerate(self.linear[1:]):
                m = fold == f
                if bool(m.any()):
                    logits[m] = model({k: v[m] for k, v in sub.items()})
            return h, torch.softmax(logits, dim=1)
        logits = self.full.head(h)
        for f, net in enumerate(self.folds):
            m = fold == f
            if bool(m.any()):
                sub = {k: v[m] for k, v in inputs.items() if k != "fold"}
                logits[m] = net.head(net.features(sub))
        return h, torch.softmax(logits, dim=1)


# training ---------------------------------------------------------------------------
#: Most epochs per input kind when training "until it fits".
MAX_EPOCHS = {"image": 40, "text": 20, "tabular": 100}
#: The net fits its sample once it classifies this share of it, or stops improving ...
FIT_ACCURACY = 0.99
#: ... and has seen at least this many rows in all: on a small sample one pass is few
#: updates, and a trigger's features keep sharpening after the labels are fitted
#: (measured on 1,797 digits: 16-24 epochs left the backdoor at the edge of detection,
#: 30 and more did not).
MIN_UPDATES = 50_000


class Progress:
    """The proxy's training, as it goes: epoch, rows/s and time left.

    ``mode``: ``"bar"`` rewrites one line on a terminal, ``"log"`` writes a line for
    the first epoch, then at most one every ``interval`` seconds, and one for the last
    (a log of a short training is not a page of lines), ``"off"`` (or None: ``"bar"``
    when ``stream`` is a terminal) writes nothing.
    """

    def __init__(self, what: str, total: int, stream=None, mode: str | None = None,
                 interval: float = 10.0):
        self.what, self.total, self.done = what, total, 0
        self.stream = stream or sys.stderr
        if mode is None:
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "off"
        self.mode = mode
        self.interval = interval
        self.start = time.perf_counter()
        self.last = 0.0
        self.logged = None  # when the last log line was written (None: none yet)
        self.epoch_text = ""

    def epoch(self, run: int, most: int, network: int, networks: int) -> None:
        """Epoch ``run`` (of at most ``most``) of network ``network`` of ``networks``
        begins; in log mode the epoch before it is reported, if it is the first or the
        last line was ``interval`` seconds ago."""
        now = time.perf_counter()
        if self.mode == "log" and self.epoch_text and (
                self.logged is None or now - self.logged >= self.interval):
            self.logged = now
            self._write(f"poisonscan: {self.what}: {self.epoch_text} done, {self._rate()}\n")
        self.epoch_text = f"network {network} of {networks}, epoch {run} (at most {most})"

    def _rate(self) -> str:
        now = time.perf_counter()
        rate = self.done / max(now - self.start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else 0
        return f"{self.done:,}/{self.total:,} rows, {rate:,.0f} rows/s, at most {left:,.0f} s left"

    def add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.mode == "bar" and (now - self.last > 0.5 or self.done >= self.total):
            self.last = now
            self._write(f"\r{self.what}: {self.epoch_text}: {self._rate()}   ")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.mode == "bar":
            self._write("\n")
        elif self.mode == "log" and self.epoch_text:
            self._write(f"poisonscan: {self.what}: {self.epoch_text} done, {self._rate()}\n")


def device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


#: torch's intra-op threads while a network trains or is applied on the CPU, unless the
#: scan says otherwise (``--proxy-threads``). A sum split over more threads is added in
#: another order, so weights trained with two threads differ in their last bits from
#: weights trained with one, and the difference grows over the epochs: a raw-image scan
#: quarantined 503 rows with one thread and 506 with two. At a fixed count the lists do
#: not depend on the machine's cores. What one thread costs: docs/benchmarks.md.
TORCH_THREADS = 1


_pin_lock = threading.Lock()
_pins = 0  # blocks inside pinned_threads now, in any thread of the process
_unpinned = 1  # the count before the first of them


@contextmanager
def pinned_threads(threads: int = TORCH_THREADS):
    """torch's intra-op thread count set to ``threads`` inside the block; the count the
    process had is given back when the last block still inside ends. The count is partly
    the process's (MKL's, and the count a new thread starts with), and a Beam worker
    applies the network in several threads at once: each restoring its own "before" on
    leaving would put the count back under a block still running."""
    global _pins, _unpinned
    with _pin_lock:
        if _pins == 0:
            _unpinned = torch.get_num_threads()
        _pins += 1
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    try:
        yield
    finally:
        with _pin_lock:
            _pins -= 1
            if _pins == 0 and torch.get_num_threads() != _unpinned:
                torch.set_num_threads(_unpinned)


def _tensors(inputs: dict, idx=None, dev=None) -> dict:
    out = {}
    for k, v in inputs.items():
        v = v if idx is None else v[idx]
        t = torch.from_numpy(np.ascontiguousarray(v))
        out[k] = t.to(dev) if dev is not None else t
    return out


@dataclass(frozen=True)
class Schedule:
    """How a network trains: Adam at ``lr`` on batches of ``batch`` rows, seeded, for
    ``epochs`` epochs, or (None) until it fits its sample, at most ``max_epochs``."""

    epochs: int | None
    seed: int
    max_epochs: int = 30
    batch: int = 64
    lr: float = 1e-3


@dataclass
class TrainingSample:
    """A proxy's training rows: encoded inputs, class codes, positions, the class labels."""

    inputs: dict
    codes: np.ndarray
    positions: np.ndarray
    labels: list


def train_net(
    net: nn.Module, inputs: dict, codes: np.ndarray, schedule: Schedule, progress: Progress | None = None,
    network: tuple[int, int] = (1, 1),
) -> tuple[nn.Module, int]:
    """Adam on cross-entropy with seeded shuffles; returns (net, epochs run).

    ``schedule.epochs`` None trains until the net fits its sample — training accuracy of
    at least ``FIT_ACCURACY`` (a backdoor's trigger must be learned), or no gain of 0.2 %
    over two epochs (flipped labels are not worth memorising) — and has seen
    ``MIN_UPDATES`` rows, at most ``schedule.max_epochs``.
    """
    epochs, batch, lr = schedule.epochs, schedule.batch, schedule.lr
    seed, max_epochs = schedule.seed, schedule.max_epochs
    torch.manual_seed(seed)
    dev = device()
    net.to(dev)
    rng = np.random.default_rng(seed)
    sparse = [p for m in net.modules() if getattr(m, "sparse", False) for p in m.parameters()]
    dense = [p for p in net.parameters() if all(p is not q for q in sparse)]
    optimizers = [torch.optim.Adam(dense, lr=lr)]
    if sparse:
        optimizers.append(torch.optim.SparseAdam(sparse, lr=lr))
    loss_fn = nn.CrossEntropyLoss()
    y = torch.from_numpy(codes.astype(np.int64)).to(dev)
    data = _tensors(inputs, dev=dev)
    history: list[float] = []
    run = 0
    fitted_at = None
    most = epochs if epochs is not None else max_epochs
    for _ in range(most):
        net.train()
        run += 1
        if progress:
            progress.epoch(run, most, *network)
        hits = 0
        order = torch.from_numpy(rng.permutation(len(codes))).to(dev)
        for start in range(0, len(codes), batch):
            idx = order[start : start + batch]
            for opt in optimizers:
                opt.zero_grad()
            logits = net.head(net.features({k: v[idx] for k, v in data.items()}))
            loss = loss_fn(logits, y[idx])
            hits += int((logits.argmax(1) == y[idx]).sum())
            loss.backward()
            for opt in optimizers:
                opt.step()
            if progress:
                progress.add(len(idx))
        if epochs is None and fitted_at is None:
            # accuracy over the epoch's own batches: free, and a little behind the net
            history.append(hits / max(len(codes), 1))
            if history[-1] >= FIT_ACCURACY or (len(history) >= 3 and history[-1] - history[-3] < 0.002):
                fitted_at = run
        if fitted_at is not None and run * len(codes) >= MIN_UPDATES:
            break
    net.eval()
    return net.cpu(), run


@dataclass
class Proxy:
    """A trained ensemble and what it takes to apply it."""

    kind: str
    params: dict
    folds: int
    state_dict: dict
    fold_of: dict  # position of a training row -> its fold
    labels: list  # class label of each output column
    info: dict = field(default_factory=dict)

    #: cross-fitted linear models of a text's bag (0: none; see :class:`ProxyEnsemble`)
    linear: int = 0

    @property
    def out_of_fold(self) -> bool:
        """Whether the probabilities are out of fold for the training sample's rows."""
        return bool(self.folds or self.linear)

    def module(self) -> ProxyEnsemble:
        m = ProxyEnsemble(self.kind, self.params, self.folds, self.linear)
        m.load_state_dict({k: torch.as_tensor(v) for k, v in self.state_dict.items()})
        m.eval()
        return m

    def save(self, stream) -> None:
        torch.save({k: torch.as_tensor(v) for k, v in self.state_dict.items()}, stream)

    def with_weights(self, stream) -> "Proxy":
        """This proxy with the weights ``save`` wrote (read weights-only: no code runs)."""
        return replace(self, state_dict=torch.load(stream, map_location="cpu", weights_only=True))

    def __getstate__(self):
        # weights as numpy arrays: a saved scan state holds data only (scan.state)
        state = self.__dict__.copy()
        if state["state_dict"] is not None:
            state["state_dict"] = {k: np.asarray(v.detach().cpu()) if torch.is_tensor(v) else v
                                   for k, v in state["state_dict"].items()}
        return state


#: rows per forward pass when the trained proxy is applied to its own sample
EVAL_ROWS = 2_048


def train_proxy(
    kind: str,
    params: dict,
    sample: TrainingSample,
    *,
    folds: int = 3,
    epochs: int | None = None,
    seed: int = 0,
    progress: str | None = None,
    threads: int = TORCH_THREADS,
) -> Proxy:
    """Train the full network and ``folds`` cross-fitted ones on a training sample, with
    torch held to ``threads`` threads (the weights depend on the count)."""
    with pinned_threads(threads):
        return _train_proxy(kind, params, sample, folds, epochs, seed, progress)


def _train_proxy(kind: str, params: dict, sample: TrainingSample, folds: int, epochs: int | None, seed: int,
                 progress: str | None) -> Proxy:
    inputs, codes = sample.inputs, sample.codes
    n = len(codes)
    # text: the out-of-fold probabilities come from a linear model of the bag, cross-fitted
    # (always: a network's were too weak on short texts), and no fold networks are trained
    linear = (folds if folds > 1 else LINEAR_FOLDS) if kind == "text" else 0
    k = folds if folds > 1 and not linear else 0
    fold = np.full(n, -1, dtype=np.int64)
    if linear or k:
        for c in np.unique(codes):  # within a class, round-robin in sample (id) order
            idx = np.flatnonzero(codes == c)
            fold[idx] = np.arange(len(idx)) % (linear or k)
    max_epochs = MAX_EPOCHS[kind]
    total = (epochs or max_epochs) * (n + sum(int((fold != f).sum()) for f in range(k)))
    shown = Progress(f"training the {kind} proxy", total, mode=progress)
    ran = epochs
    started = time.perf_counter()
    torch.manual_seed(seed)  # the initial weights, too, come from the seed
    ensemble = ProxyEnsemble(kind, params, k, linear)
    _, ran = train_net(ensemble.full, inputs, codes, Schedule(epochs, seed, max_epochs), shown, (1, 1 + k))
    for f in range(k):
        keep = fold != f
        sub = {name: v[keep] for name, v in inputs.items()}
        train_net(ensemble.folds[f], sub, codes[keep], Schedule(ran, seed + 1 + f), shown, (2 + f, 1 + k))
    shown.close()
    if linear:
        fit_linear_bags(ensemble.linear, inputs, codes, fold, params["buckets"])
    ensemble.eval()
    with torch.no_grad():
        # in slices: the whole sample in one forward pass holds every layer's activations
        # of every row at once (9 GB for 49,000 28x28 images)
        probs = np.concatenate([
            ensemble(dict(_tensors(inputs, slice(a, a + EVAL_ROWS)), fold=torch.from_numpy(fold[a : a + EVAL_ROWS])))[1].numpy()
            for a in range(0, max(n, 1), EVAL_ROWS)
        ]) if n else np.zeros((0, len(sample.labels)), np.float32)
    info = {
        "networks": 1 + k,
        "epochs": ran,
        "training_rows": int(n),
        "seconds": round(time.perf_counter() - started, 3),
        "device": str(device()),
        "out_of_fold_accuracy": float((probs.argmax(1) == codes).mean()) if k or linear else None,
    }
    if linear:
        info["out_of_fold_model"] = f"logistic regression of the bag of words and word pairs (C = {LINEAR_C}), {linear} folds"
    fold_of = {int(p): int(f) for p, f in zip(sample.positions, fold) if f >= 0}
    return Proxy(kind, params, k, ensemble.state_dict(), fold_of, list(sample.labels), info, linear)


#: Folds of the linear model that gives a text's out-of-fold probabilities, unless
#: ``--proxy-folds`` says how many.
LINEAR_FOLDS = 5
#: Its inverse L2 regularisation (scikit-learn's default).
LINEAR_C = 1.0
#: A class a fold's training rows do not hold gets this logit (others are near 0).
ABSENT_LOGIT = -30.0


def bag_matrix(inputs: dict, buckets: int):
    """The hashed bags as a sparse (rows, buckets) matrix (a bucket twice in a row sums)."""
    import scipy.sparse as sp

    ids, weights = inputs["ids"], inputs["weights"]
    real = ids != buckets
    rows = np.broadcast_to(np.arange(len(ids))[:, None], ids.shape)[real]
    return sp.csr_matrix((weights[real].astype(np.float64), (rows, ids[real])), shape=(len(ids), buckets))


def fit_linear_bags(models: nn.ModuleList, inputs: dict, codes: np.ndarray, fold: np.ndarray, buckets: int) -> None:
    """Fit ``models[0]`` on every training row and ``models[1 + f]`` without fold f:
    multinomial logistic regressions (scikit-learn, L2 at ``LINEAR_C``), written into
    their weights."""
    from sklearn.linear_model import LogisticRegression

    X = bag_matrix(inputs, buckets)
    for i, model in enumerate(models):
        keep = np.ones(len(codes), bool) if i == 0 else fold != i - 1
        classes = np.unique(codes[keep])
        weight = np.zeros((buckets + 1, model.bias.shape[0]), np.float32)
        bias = np.full(model.bias.shape[0], ABSENT_LOGIT, np.float32)
        if len(classes) == 1:
            bias[classes[0]] = 0.0
        elif len(classes) > 1:
            lr = LogisticRegression(C=LINEAR_C, max_iter=1000).fit(X[keep], codes[keep])
            coef, intercept = lr.coef_, lr.intercept_
            if len(classes) == 2:  # one column: the second class's log-odds
                coef = np.vstack([np.zeros_like(coef), coef])
                intercept = np.concatenate([[0.0], intercept])
            weight[:buckets, classes] = coef.T
            bias[classes] = intercept
        with torch.no_grad():
            model.bag.weight.copy_(torch.from_numpy(weight))
            model.bias.copy_(torch.from_numpy(bias))


# inference --------------------------------------------------------------------------
def fold_column(positions: np.ndarray, fold_of: dict) -> np.ndarray:
    return np.fromiter((fold_of.get(int(p), -1) for p in positions), dtype=np.int64, count=len(positions))


@torch.no_grad()
def apply_proxy(model: ProxyEnsemble, inputs: dict, fold: np.ndarray, batch: int = 512, threads: int = TORCH_THREADS):
    """(representation, probabilities) for encoded rows, in chunks, with torch held to
    ``threads`` threads."""
    with pinned_threads(threads):
        return _apply_proxy(model, inputs, fold, batch)


def _apply_proxy(model: ProxyEnsemble, inputs: dict, fold: np.ndarray, batch: int):
    n = len(fold)
    reps, probs = [], []
    dev = next(model.parameters()).device
    for start in range(0, n, batch):
        sl = slice(start, start + batch)
        t = _tensors({k: v[sl] for k, v in inputs.items()}, dev=dev)
        t["fold"] = torch.from_numpy(fold[sl]).to(dev)
        h, p = model(t)
        reps.append(h.cpu().numpy())
        probs.append(p.cpu().numpy())
    if not reps:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(reps).astype(np.float32), np.concatenate(probs).astype(np.float32)




# the user's model -------------------------------------------------------------------
@dataclass(frozen=True)
class UserModel:
    """``--model PATH`` (TorchScript, or a state dict with ``model_class`` "module:Class"),
    ``--layer NAME`` (the module whose output is the representation; default: the
    model's output)."""

    path: str
    layer: str | None = None
    model_class: str | None = None
    model_params: tuple = ()

    def load(self) -> nn.Module:

        with open_read(self.path) as f:
            data = f.read()
        if self.model_class is None:
            try:
                return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
            except RuntimeError as exc:
                raise ValueError(
                    f"{self.path} is not a TorchScript model ({str(exc).splitlines()[0]}); for a "
                    "state dict give its class with --model-class module:Class"
                ) from None
        cls = import_class(self.model_class)
        model = cls(**dict(self.model_params))
        # weights_only: a state dict is tensors; arbitrary pickled objects are refused
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.eval()


def import_class(spec: str):
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--model-class must be module:Class, got {spec!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {spec}: {exc}") from None


@torch.no_grad()
def layer_output(model: nn.Module, x: torch.Tensor, layer: str | None, threads: int = TORCH_THREADS) -> torch.Tensor:
    """The output of module ``layer`` (the model's output when None), with torch held to
    ``threads`` threads."""
    with pinned_threads(threads):
        return _layer_output(model, x, layer)


def _layer_output(model: nn.Module, x: torch.Tensor, layer: str | None) -> torch.Tensor:
    if layer is None:
        out = model(x)
        return out[0] if isinstance(out, (tuple, list)) else out
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"the model has no layer {layer!r}; its layers: {', '.join(n for n in modules if n)}")
    if isinstance(model, torch.jit.ScriptModule):
        # hooks are not supported on TorchScript modules: run the top-level children in
        # order (a sequential model) up to the layer
        children = dict(model.named_children())
        if layer not in children:
            raise ValueError(
                f"for a TorchScript model, --layer must name a top-level module of a "
                f"sequential model ({', '.join(children)})"
            )
        h = x
        for name, child in children.items():
            h = child(h)
            if name == layer:
                return h
    captured = {}
    handle = modules[layer].register_forward_hook(lambda m, i, o: captured.__setitem__("h", o))
    try:
        model(x)
    finally:
        handle.remove()
    return captured["h"]




def as_model_params(pairs: Sequence[tuple[str, Any]]) -> tuple:
    return tuple(sorted(pairs))
