"""Representations: a proxy network trained on the (poisoned) data itself.

A backdoor is visible only in the representation of a model that learned it, so the
proxy is trained on the data's own labels until it fits them; its penultimate-layer
activations are the representation the detectors see (as in the spectral-signature,
activation-clustering and SPECTRE papers). Plain torch, no Beam.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two convolution blocks and a hidden layer of ``width`` units (the representation)."""

    def __init__(self, side: int, classes: int, width: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (side // 4) ** 2, width),
            nn.ReLU(),
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.body(x))


def train_proxy(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    seed: int = 0,
    batch: int = 64,
    lr: float = 1e-3,
) -> SmallCNN:
    """Train a :class:`SmallCNN` on images (n, h, w) in [0, 1] and integer labels 0..k-1.

    Seeded: the same data and seed give the same network (on one machine).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    classes = int(labels.max()) + 1
    model = SmallCNN(images.shape[1], classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.from_numpy(images[:, None].astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(y)))
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def penultimate(model: SmallCNN, images: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate activations, class probabilities)."""
    feats, probs = [], []
    x = torch.from_numpy(images[:, None].astype(np.float32))
    for start in range(0, len(x), batch):
        h = model.body(x[start : start + batch])
        feats.append(h.numpy())
        probs.append(torch.softmax(model.head(h), dim=1).numpy())
    return np.concatenate(feats), np.concatenate(probs)
