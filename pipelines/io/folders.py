"""A folder of images in class subfolders, read as a table.

``train/cat/001.jpg``, ``train/dog/002.png``: the layout of torchvision's
``ImageFolder`` and of most image sets on disk. Given such a folder as a source, the scan
reads one row per image file, in sorted order of the paths below the folder:

* ``id``: the path below the folder (``cat/001.jpg``), which names the file; where
  several folders are scanned together, the folder joined to it (``train/cat/001.jpg``,
  ``val/cat/001.jpg``: two rows);
* ``label``: the first folder of that path (``cat``); an image directly in the folder has
  no label, and its row is rejected as ``missing_label``;
* ``image``: a ``{bytes, path}`` struct without bytes, the path the same as the id: the
  image is read from the folder where it is encoded, and the outputs (the clean split,
  the quarantined and rejected rows) keep the path, relative to the folder.

Hidden files and folders (a name starting with ``.``) are passed over, as are files
that are not images by their name's ending (a ``README``, a ``labels.csv``); the summary
counts the latter (``inputs_read_as``). Every read unit lists the folder again (once per
process) and checks that the listing is the one the scan planned on, so a folder that
changes while it is scanned fails the scan instead of shifting rows.

Local folders and any filesystem Beam lists (``gs://bucket/train/`` with ``--format
images``). Plain Python and pyarrow, no Beam pipeline.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Iterator

import pyarrow as pa

from poisonscan.pipelines.io.outputs import find_named, is_local, local_path

#: The format name of a folder of images (``--format images``).
IMAGE_FOLDER = "images"

#: Endings of image files' names (any case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

#: The rows of a folder of images.
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("label", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ]
)

#: Rows per read unit: each row reads a file, so units are smaller than a Parquet file's.
UNIT_ROWS = 1 << 14


class ImageFolderPath(str):
    """The path of a folder of images, where its rows' relative paths are read from it
    alone: they name its own files, listed by the scan (no working directory to fall
    back on when one has gone)."""

    __slots__ = ()


class FolderError(Exception):
    """A folder of images cannot be listed, or changed since the scan listed it."""


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def list_folder(folder: str) -> tuple[tuple[str, ...], int]:
    """(the image files below ``folder``, as paths relative to it with ``/``, sorted;
    how many other files there are), hidden files and folders left out of both."""
    names, others = [], 0
    if is_local(folder):
        root = local_path(folder)
        if not os.path.isdir(root):
            raise FolderError(f"{folder} is not a folder")
        # real folders walked: linked folders are followed (in sorted order, so the name a
        # folder is reached by is the same on every machine), a link back is not
        seen = set()
        for here, dirs, files in os.walk(root, followlinks=True):
            real = os.path.realpath(here)
            if real in seen:
                dirs[:] = []
                continue
            seen.add(real)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = os.path.relpath(here, root)
            for f in files:
                if f.startswith("."):
                    continue
                path = f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}"
                # a pipe, a socket or a broken link named like an image is not one
                if is_image_name(f) and os.path.isfile(os.path.join(here, f)):
                    _check_name(folder, path)
                    names.append(path)
                else:
                    others += 1
    else:
        base = folder.rstrip("/") + "/"
        try:
            found = find_named(folder, "")  # through Beam's filesystems
        except Exception as exc:  # Beam raises BeamIOError with per-pattern details
            raise FolderError(f"cannot list {folder}: {' '.join(str(exc).split())[:300]}") from None
        for full in found:
            if full.endswith("/") or not full.startswith(base):
                continue
            path = full[len(base):]
            if _hidden(path):
                continue
            if is_image_name(path):
                names.append(path)
            else:
                others += 1
    return tuple(sorted(names)), others


def _check_name(folder: str, path: str) -> None:
    """A name that is not UTF-8 (a Latin-1 file name, read as surrogates) can be neither
    an id nor a label: refused before anything is read, naming it."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise FolderError(
            f"{folder}: the name '{shown}' is not UTF-8, so it can be neither an id nor a label; rename it"
        ) from None


def digest(names: tuple[str, ...]) -> str:
    """A fingerprint of a listing: read units check that they read the rows planned."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:32]


@functools.lru_cache(maxsize=4)
def _listing(folder: str, expected: str) -> tuple[str, ...]:
    """The folder's image files, listed once per process for the units it reads."""
    names, _ = list_folder(folder)
    if digest(names) != expected:
        raise FolderError(
            f"{folder}: its image files changed since the scan listed them ({len(names):,} now); "
            "scan a folder nothing writes to while it is scanned"
        )
    return names


def folder_batches(folder: str, expected: str, first: int, rows: int, batch_rows: int,
                   id_prefix: str = "") -> Iterator[pa.RecordBatch]:
    """The rows ``first`` to ``first + rows`` of the folder, in batches (see the module);
    each id starts with ``id_prefix`` (the folder, where several are scanned together)."""
    names = _listing(folder, expected)[first : first + rows]
    for start in range(0, len(names), max(batch_rows, 1)):
        part = names[start : start + batch_rows]
        labels = [name.split("/", 1)[0] if "/" in name else None for name in part]
        paths = pa.array(part, pa.string())
        ids = pa.array([id_prefix + name for name in part], pa.string()) if id_prefix else paths
        image = pa.StructArray.from_arrays(
            [pa.nulls(len(part), pa.binary()), paths], fields=list(SCHEMA.field("image").type)
        )
        yield pa.record_batch([ids, pa.array(labels, pa.string()), image], schema=SCHEMA)
