"""Input kinds: detection from the schema, and the encoders' handling of bad values."""

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from poisonscan import ScanConfig
from poisonscan.pipelines.io.kinds import InputError, resolve_input
from poisonscan.pipelines.represent.encoders import (
    ImageEncoder,
    TabularEncoder,
    TextEncoder,
    located,
    mostly_image_paths,
    word_spans,
    words_of,
)


def png(array: np.ndarray, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def schema(**cols):
    return pa.schema([("id", pa.int64()), ("label", pa.int64())] + list(cols.items()))


@pytest.mark.parametrize(
    "cols, kind, columns",
    [
        ({"img": pa.binary()}, "image", ("img",)),
        ({"img": pa.struct([("bytes", pa.binary()), ("path", pa.string())])}, "image", ("img",)),
        ({"emb": pa.list_(pa.float32())}, "features", ("emb",)),
        ({"review": pa.string()}, "text", ("review",)),
        ({"age": pa.int64(), "city": pa.string()}, "tabular", ("age", "city")),
    ],
)
def test_input_kind_is_detected_from_the_schema(cols, kind, columns):
    spec = resolve_input(schema(**cols), ScanConfig())
    assert (spec.kind, spec.columns) == (kind, columns)


def test_flags_choose_and_conflicting_flags_are_an_error():
    s = schema(a=pa.string(), b=pa.string())
    assert resolve_input(s, ScanConfig(text_column="a")).columns == ("a",)
    with pytest.raises(InputError, match="give one input kind"):
        resolve_input(s, ScanConfig(text_column="a", tabular_columns=("b",)))


@pytest.mark.parametrize("values, kind", [
    # numbers written as text ("5.2", as a JSON export writes them), one a typo
    ([f"{v:.3f}" for v in np.random.default_rng(0).normal(size=599)] + ["n/a?"], "tabular"),
    # words: text, whatever numbers some rows hold
    ([f"review {i}: fine" if i % 2 else str(i) for i in range(600)], "text"),
])
def test_a_lone_text_column_of_numbers_is_an_error_naming_both_flags(tmp_path, capsys, values, kind):
    import json

    from poisonscan.pipelines.cli import main

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": i, "label": i % 3, "x": v}) + "\n" for i, v in enumerate(values)))
    args = ["scan", str(path), "--no-report", "--no-data-docs", "-q", "--detectors", "spectral"]
    code = main([*args, "--out", str(tmp_path / "auto")])
    err = capsys.readouterr().err
    if kind == "text":
        assert code == 0 and err == ""
        return
    assert code == 1 and "Traceback" not in err
    assert "'x', was taken for text, but its sampled values are mostly numbers written as text" in err
    assert "--tabular-columns x" in err and "--text-column x" in err
    assert not (tmp_path / "auto" / "clean.parquet").exists()
    # either flag decides, whatever the values
    for flag, out in (("--tabular-columns", "table"), ("--text-column", "text")):
        assert main([*args, flag, "x", "--out", str(tmp_path / out)]) == 0
        summary = json.loads((tmp_path / out / "summary.json").read_text())
        assert summary["rows_read"] == 600 and summary["settings"]["representation"]["kind"] == \
            ("tabular" if out == "table" else "text")


def test_numbers_grouped_by_commas_where_no_value_is_a_decimal_comma():
    from poisonscan.pipelines.represent.encoders import column_numbers, comma_grouped

    table = pa.table({
        "grouped": ["17,800", "-1,234,567.5", " 1,234 ", "800", "1,234.", None, ""],
        # a decimal comma: "2,770" beside "0,935" is 2.77, not 2770; none is read
        "weights": ["2,770", "0,935", "12,5", "3", "1,250", "4", "5"],
        "not_grouped": ["1,000,00", "01,234", "1,2345", "1,234e5", "1, 234", "12", "13"],
    })
    enc = TabularEncoder.fit(table, ["grouped", "weights", "not_grouped"])
    assert enc.grouped == ("grouped",) and [c for c, _, _ in enc.numeric] == ["grouped"]
    x, bad = column_numbers(table.column("grouped"), True)
    assert x[:5].tolist() == [17800.0, -1234567.5, 1234.0, 800.0, 1234.0] and np.isnan(x[5:]).all() and not bad
    assert not comma_grouped(table.column("weights")) and not comma_grouped(table.column("not_grouped"))
    x, bad = column_numbers(table.column("not_grouped"), True)
    assert sorted(bad) == [0, 1, 2, 3, 4] and x[5:].tolist() == [12.0, 13.0]
    rows = enc.encode(table.to_batches()[0])
    assert not rows.errors and len(rows.rows) == 7


def test_images_decode_resize_and_reject_with_reasons(tmp_path):
    gray = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    big = np.zeros((16, 16), np.uint8)
    path = tmp_path / "x.png"
    path.write_bytes(png(gray))
    values = [
        png(gray),
        png(np.stack([gray] * 3, -1), "JPEG"),
        {"bytes": None, "path": str(path)},
        list(gray.reshape(-1).astype(float)),
        png(big),  # another size: resized
        b"not an image",
        None,
    ]
    enc = ImageEncoder.fit([values[0], values[2], values[3]])
    assert (enc.size, enc.channels) == (8, 1)
    out = enc.encode(values)
    assert out.rows.tolist() == [0, 1, 2, 3, 4]
    assert out.inputs["x"].shape == (5, 1, 8, 8) and out.inputs["x"].dtype == np.uint8
    np.testing.assert_array_equal(out.inputs["x"][0, 0], gray)
    np.testing.assert_array_equal(out.inputs["x"][3, 0], gray)
    assert out.errors[5][0] == "bad_image" and "cannot decode" in out.errors[5][1]
    assert out.errors[6] == ("missing_image", "image is null")


def test_image_paths_are_read_from_the_input_files_folder_then_the_working_directory(tmp_path, monkeypatch):
    gray = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    (tmp_path / "data" / "imgs").mkdir(parents=True)
    (tmp_path / "data" / "imgs" / "a.png").write_bytes(png(gray))
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "b.png").write_bytes(png(255 - gray))
    monkeypatch.chdir(tmp_path / "cwd")
    folder = str(tmp_path / "data")
    enc = ImageEncoder(8, 1)
    values = ["imgs/a.png", {"bytes": None, "path": "imgs/a.png"}, "b.png", str(tmp_path / "data" / "imgs" / "a.png"),
              "imgs/none.png", ""]
    out = enc.encode(values, folder)
    assert out.rows.tolist() == [0, 1, 2, 3]
    for j in (0, 1, 3):  # from the file's folder, as a struct, absolute
        np.testing.assert_array_equal(out.inputs["x"][j, 0], gray)
    np.testing.assert_array_equal(out.inputs["x"][2, 0], 255 - gray)  # not there: from the working directory
    assert out.errors[4] == ("bad_image", f"image: cannot decode (no image file 'imgs/none.png' in {folder} (the "
                                          f"input file's folder) or in the working directory ({tmp_path / 'cwd'}))")
    assert out.errors[5] == ("bad_image", "image: cannot decode (the image path is empty)")
    # no file (a table in memory): from the working directory only
    assert enc.encode(["imgs/a.png", "b.png"]).rows.tolist() == [1]
    # the training sample keeps each path's folder
    fitted = ImageEncoder.fit([located(v, folder) for v in ["imgs/a.png", "b.png"]])
    assert (fitted.size, fitted.channels) == (8, 1)
    assert located(b"bytes", folder) == b"bytes" and located({"bytes": b"x", "path": "p.png"}, folder)["bytes"]


def test_an_image_read_from_a_file_is_its_bytes_not_its_name(tmp_path):
    import os

    gray = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    for name, img in (("a", gray), ("b", 255 - gray), ("c", gray)):
        (tmp_path / name / "imgs").mkdir(parents=True)
        (tmp_path / name / "imgs" / "0.png").write_bytes(png(img))
    enc = ImageEncoder(8, 1)
    content = [enc.encode(["imgs/0.png"], str(tmp_path / n)).file_content[0] for n in "abc"]
    # one name in two folders: two images; the same picture anywhere: one content
    assert content[0] != content[1] and content[0] == content[2]
    assert enc.encode([png(gray)]).file_content == {}  # bytes in the data are the row's own content
    # a path with a byte that is not UTF-8 (a CSV column read as bytes), a file:// URL
    latin = os.path.join(os.fsencode(tmp_path / "a"), b"caf\xe9.png")
    with open(latin, "wb") as f:
        f.write(png(gray))
    out = enc.encode([b"caf\xe9.png", f"file://{tmp_path}/a/imgs/0.png", "/dev/zero", "imgs"], str(tmp_path / "a"))
    assert out.rows.tolist() == [0, 1]
    assert "/dev/zero is not a regular file" in out.errors[2][1]  # never read to the end
    assert "is not a regular file" in out.errors[3][1] or "no image file" in out.errors[3][1]


def test_images_written_in_strings_base64_or_data_uri():
    import base64

    gray = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    b64 = base64.b64encode(png(gray)).decode()
    jpeg = base64.b64encode(png(gray, "JPEG")).decode()
    values = [b64, f"data:image/png;base64,{b64}", jpeg, "data:image/png,abc", b64[:-8] + "!!!!!!!!"]
    out = ImageEncoder(8, 1).encode(values, "/nowhere")
    assert out.rows.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(out.inputs["x"][0, 0], gray)
    np.testing.assert_array_equal(out.inputs["x"][1, 0], gray)
    assert "a data URI of an image must be base64" in out.errors[3][1]
    assert "the image's base64 does not decode" in out.errors[4][1]
    assert mostly_image_paths([b64] * 20) and mostly_image_paths([f"data:image/png;base64,{b64}"] * 20)
    assert not mostly_image_paths(["a" * 100] * 20)  # base64 of no image: text (or a path)


def test_image_names_told_apart_from_text():
    assert mostly_image_paths(["a/1.png", "b/2.JPG", None, "3.jpeg"] * 10)
    assert not mostly_image_paths(["a fine film", "1.png"] * 10)
    assert not mostly_image_paths([None, ""])
    # the id may be the image column (a column of paths names each row), not the text's
    assert ScanConfig(image_column="path", id_column="path").id_column == "path"
    with pytest.raises(ValueError, match="the id, label and input columns must differ"):
        ScanConfig(text_column="path", id_column="path")
    with pytest.raises(ValueError, match="the id, label and input columns must differ"):
        ScanConfig(image_column="path", id_column="path", label_column="path")


def test_text_encoding_and_empty_texts():
    out = TextEncoder(buckets=1024).encode(["a good film", "   ", None, "!!!"])
    assert out.rows.tolist() == [0]
    assert out.errors[1][0] == out.errors[3][0] == "empty_text"
    assert out.errors[2][0] == "missing_text"
    # the words and word pairs, then the text's form (one segment: read whole) and its note
    assert out.tokens[0] == sorted(["a", "good", "film", "a good", "good film"]) + [
        "§starts NP", "¶§starts NP=a good film"]
    np.testing.assert_allclose(np.linalg.norm(out.inputs["weights"][0]), 1.0, rtol=1e-6)


def test_images_none_of_which_decode_say_why():
    with pytest.raises(InputError, match=r"no image in the sample could be decoded \(the first: .*No such file.*imgs/0.png'\).*working directory"):
        ImageEncoder.fit([{"bytes": None, "path": "imgs/0.png"}, b"not an image"])


def test_text_words_of_every_script():
    # letters of any script, marks and apostrophes make words; scripts without spaces
    # read one character per word; ASCII as before
    assert words_of("Don't stop_now, 42 'x'") == ["don't", "stop", "now", "42", "'x'"]
    assert words_of("Café Müller, naïve") == ["café", "müller", "naïve"]
    assert words_of("Привет, МИР") == ["привет", "мир"]
    assert words_of("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]  # vowel signs are marks, inside words
    assert words_of("e\u0301cole") == ["e\u0301cole"]  # a decomposed accent stays in its word
    assert words_of("日本語のテキスト 🎬") == ["日", "本", "語", "の", "テ", "キ", "ス", "ト"]
    out = TextEncoder(buckets=1024).encode(["中文文本", "Ελληνικά κείμενα", "🎬 !!"])
    assert out.rows.tolist() == [0, 1]  # once every non-Latin text was rejected as empty
    words = [[t for t in row if not t.startswith(("§", "¶"))] for row in out.tokens]  # the forms aside
    assert words[0] == sorted(["中", "文", "本", "中 文", "文 文", "文 本"])
    assert words[1] == sorted(["ελληνικά", "κείμενα", "ελληνικά κείμενα"])
    assert out.errors[2][0] == "empty_text"
    # each word lower-cased on its own, as the report's highlighter reads it
    assert words_of("ΟΔΟΣ.ΑΒ") == [w for _, _, w in word_spans("ΟΔΟΣ.ΑΒ")] == ["οδος", "αβ"]
    # an encoder saved before (a reference's state) reads its rows as its proxy learned them
    import pickle

    state = TextEncoder(buckets=1024).__dict__.copy()
    del state["ascii_only"]
    assert pickle.loads(pickle.dumps(TextEncoder(buckets=1024))).ascii_only is False  # today's keep the field
    old = TextEncoder.__new__(TextEncoder)
    old.__setstate__(state)
    read = old.encode(["Café Müller", "Ελληνικά"]).tokens
    assert old.ascii_only and [[t for t in row if not t.startswith(("§", "¶"))] for row in read] == [
        sorted(["caf", "m", "ller", "caf m", "m ller"])]


def test_tabular_encoding_standardises_one_hot_encodes_and_flags_missing():
    t = pa.table({"age": [20.0, 40.0, None], "city": ["a", "b", None]})
    enc = TabularEncoder.fit(t, ["age", "city"])
    x = enc.encode(t.to_batches()[0]).inputs["x"]
    assert x.shape == (3, enc.width) == (3, 2 + 4)
    np.testing.assert_allclose(x[:, 0], [-1, 1, 0])  # standardised; missing -> 0
    np.testing.assert_allclose(x[:, 1], [0, 0, 1])  # missing flag
    np.testing.assert_allclose(x[:, 2:], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])


def test_numbers_several_rows_hold_are_value_tokens():
    """A number stamped on many rows (a tabular trigger) is a ``column=value`` token like
    a category; numbers held by one sampled row are not, and a missing number is none."""
    t = pa.table({"amount": [1234.0, 1234.0, 17.5, 3.0, 3.0, None], "kind": ["a"] * 6})
    enc = TabularEncoder.fit(t, ["amount", "kind"])
    tokens = enc.encode(t.to_batches()[0]).tokens
    values = [[g for g in row if g.startswith("amount=")] for row in tokens]
    assert values == [["amount=1234"], ["amount=1234"], [], ["amount=3"], ["amount=3"], []]
    assert all("kind=a" in row for row in tokens)
    # the standardised features are the same as without the tokens
    x = enc.encode(t.to_batches()[0]).inputs["x"]
    assert x.shape == (6, enc.width) == (6, 2 + 3)


def test_a_number_planted_on_relabelled_rows_is_a_trigger_value():
    """End to end through the encoder: 20 rows of class 'a' get amount = 999.5 and are
    relabelled 'b'; the rest of their row (the other numbers) still says 'a'."""
    from poisonscan.detectors import make_detector

    rng = np.random.default_rng(0)
    n = 600
    y = np.repeat(np.array(["a", "b"], dtype=object), n // 2)
    income = rng.normal(0, 1, n) + 2.0 * (y == "b")
    amount = np.round(rng.uniform(100, 5000, n), 2)
    planted = np.sort(rng.choice(np.flatnonzero(y == "a"), 20, replace=False))
    amount[planted] = 999.5
    y = y.copy()
    y[planted] = "b"
    t = pa.table({"income": income, "amount": amount})
    enc = TabularEncoder.fit(t, ["income", "amount"])
    tokens = enc.encode(t.to_batches()[0]).tokens
    det = make_detector("value_trigger")
    state = det.extract_output(det.add_input(det.create_accumulator(), tokens, y), {})
    flagged = det.score(state, tokens, y) > 0
    np.testing.assert_array_equal(np.flatnonzero(flagged), planted)
    assert det.judge(state, "b", int((y == "b").sum()), None).poisoned
