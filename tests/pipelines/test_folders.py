"""A folder of images in class subfolders as a source: listing, rows, and a folder that
changes while it is scanned."""

import os

import pytest

from poisonscan.pipelines.io.folders import SCHEMA, list_folder
from poisonscan.pipelines.io.sources import (
    SourceError,
    expand_sources,
    file_schema,
    plan_units,
    read_unit,
)


def _folder(tmp_path):
    root = tmp_path / "train"
    for rel in ("cat/b.png", "cat/a.JPG", "dog/sub/c.png", "d.png", "notes.txt", ".git/x.png", "dog/.hidden.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    return root


def test_a_folders_images_are_rows_labelled_by_their_first_subfolder(tmp_path):
    root = _folder(tmp_path)
    assert list_folder(str(root)) == (("cat/a.JPG", "cat/b.png", "d.png", "dog/sub/c.png"), 1)
    (src,) = expand_sources([str(root) + "/"])
    assert (src.path, src.format, src.rows, src.other_files) == (str(root), "images", 4, 1)
    assert file_schema(src) == SCHEMA
    units = plan_units([src])
    rows = [row for u in units for batch, _ in read_unit(u, None, 3) for row in batch.to_pylist()]
    assert [(r["id"], r["label"], r["image"]) for r in rows] == [
        ("cat/a.JPG", "cat", {"bytes": None, "path": "cat/a.JPG"}),
        ("cat/b.png", "cat", {"bytes": None, "path": "cat/b.png"}),
        ("d.png", None, {"bytes": None, "path": "d.png"}),
        ("dog/sub/c.png", "dog", {"bytes": None, "path": "dog/sub/c.png"}),
    ]


def test_linked_class_folders_are_followed_and_a_link_back_is_not(tmp_path):
    root = _folder(tmp_path)
    (tmp_path / "birds").mkdir()
    (tmp_path / "birds" / "e.png").write_bytes(b"x")
    (root / "bird").symlink_to(tmp_path / "birds")
    (root / "cat" / "loop").symlink_to(root)  # a cycle: walked once
    (root / "zebra").symlink_to(root / "dog")  # a second name: the first in sorted order holds it
    os.mkfifo(root / "cat" / "pipe.png")  # not a regular file: never opened (it would block)
    names, others = list_folder(str(root))
    assert names == ("bird/e.png", "cat/a.JPG", "cat/b.png", "d.png", "dog/sub/c.png")
    assert others == 2  # notes.txt, the pipe


def test_names_that_are_not_utf8_are_refused_naming_them(tmp_path):
    root = _folder(tmp_path)
    os.close(os.open(os.path.join(os.fsencode(root / "cat"), b"caf\xe9.png"), os.O_CREAT | os.O_WRONLY))
    with pytest.raises(SourceError, match=r"the name 'cat/caf\\xe9.png' is not UTF-8"):
        expand_sources([str(root)])


def test_several_folders_keep_their_rows_apart(tmp_path):
    a, b = _folder(tmp_path / "a"), _folder(tmp_path / "b")
    files = expand_sources([str(a), str(b)])
    ids = [r["id"] for u in plan_units(files) for batch, _ in read_unit(u, None, 100) for r in batch.to_pylist()]
    assert ids == [f"{a}/{n}" for n in list_folder(str(a))[0]] + [f"{b}/{n}" for n in list_folder(str(b))[0]]
    (one,) = expand_sources([str(a)])
    assert next(read_unit(plan_units([one])[0], None, 1))[0].to_pylist()[0]["id"] == "cat/a.JPG"


def test_apply_refuses_a_folder_changed_since_the_scan(tmp_path):
    from poisonscan.pipelines.drivers.apply import ApplyError, _check_folders

    root = _folder(tmp_path)
    (src,) = expand_sources([str(root)])
    summary = {"inputs_read_as": {str(root): {"image_folder": {"images": 4, "other_files": 1,
                                                                "listing": src.listing}}}}
    _check_folders([src], summary)
    (root / "cat" / "b.png").rename(root / "cat" / "z.png")
    (again,) = expand_sources([str(root)])
    with pytest.raises(ApplyError, match="changed since the scan"):
        _check_folders([again], summary)


def test_a_folder_that_changes_while_it_is_scanned_fails_the_read(tmp_path):
    root = _folder(tmp_path)
    (src,) = expand_sources([str(root)])
    (root / "cat" / "new.png").write_bytes(b"x")
    with pytest.raises(SourceError, match="its image files changed since the scan listed them"):
        list(read_unit(plan_units([src])[0], None, 100))


def test_folders_that_are_not_image_sets_are_refused_with_what_to_give(tmp_path):
    (tmp_path / "csv_and_images" / "imgs").mkdir(parents=True)
    (tmp_path / "csv_and_images" / "imgs" / "0.png").write_bytes(b"x")
    (tmp_path / "csv_and_images" / "train.csv").write_text("id,path,label\n")
    with pytest.raises(SourceError, match=r"holds data files \(train.csv\) beside 1 images: give the file"):
        expand_sources([str(tmp_path / "csv_and_images")])
    assert expand_sources([str(tmp_path / "csv_and_images")], "images")[0].rows == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="is a directory that holds no image file"):
        expand_sources([str(tmp_path / "empty")])
    root = _folder(tmp_path)
    with pytest.raises(SourceError, match="is a directory; give files or a glob"):
        expand_sources([str(root)], "csv")
    with pytest.raises(SourceError, match="is not a folder"):
        expand_sources([str(root / "d.png")], "images")


def test_an_output_folder_inside_the_folder_of_images_is_refused(tmp_path):
    from poisonscan import ScanConfig
    from poisonscan.pipelines.drivers.run import run_scan

    root = _folder(tmp_path)
    with pytest.raises(SourceError, match="lies in the folder of images"):
        run_scan([str(root)], str(root / "scan-out"), ScanConfig())
    assert not (root / "scan-out").exists()


def test_an_image_gone_from_its_folder_is_not_read_from_the_working_directory(tmp_path, monkeypatch):
    from poisonscan.pipelines.io.folders import ImageFolderPath
    from poisonscan.pipelines.represent.encoders import ImageEncoder

    root = _folder(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.JPG").write_bytes(b"x")  # the same name, here
    (root / "cat" / "a.JPG").unlink()
    monkeypatch.chdir(tmp_path)
    out = ImageEncoder(8, 1).encode(["cat/a.JPG"], ImageFolderPath(str(root)))
    assert out.errors[0] == ("bad_image", f"image: cannot decode (no image file 'cat/a.JPG' in {root} (the folder "
                                          "of images))")
