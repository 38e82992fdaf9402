"""Raw inputs end to end: images, text and tables, through Beam and in memory."""

import io
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from poisonscan import ScanConfig, scan_table
from poisonscan.pipelines.demo import make_poisoned_digits
from poisonscan.pipelines.drivers.run import ScanFailed, run_scan
from poisonscan.pipelines.represent.proxy import UserModel

from ..conftest import credit_table


@pytest.fixture(scope="module")
def digits():
    table, truth = make_poisoned_digits(seed=0)
    return table.drop_columns(["original_label"]), truth


def read(out):
    q = pq.read_table(os.path.join(out, "quarantine.parquet"))
    r = pq.read_table(os.path.join(out, "rejected.parquet"))
    with open(os.path.join(out, "summary.json")) as f:
        return q, r, json.load(f)


@pytest.mark.slow
def test_raw_images_beam_equals_memory_and_bad_images_are_rejected(tmp_path, digits):
    table, truth = digits
    extra = pa.table(
        {
            "id": ["bad-bytes", "bad-null", "big-image"],
            "label": [3, 4, 5],
            "image": pa.array([b"\x89PNG broken", None, _png(np.zeros((16, 16), np.uint8))], pa.binary()),
        }
    )
    data = pa.concat_tables([table, extra])
    src = tmp_path / "digits.parquet"
    pq.write_table(data, src, row_group_size=700)
    cfg = ScanConfig(image_column="image")
    run_scan([str(src)], str(tmp_path / "out"), cfg)
    q, r, s = read(tmp_path / "out")
    mem = scan_table(data, cfg)
    assert sorted(q["id"].to_pylist()) == sorted(mem.quarantine["id"].to_pylist())
    # what is quarantined is poison (whether the class is judged poisoned on 1,800 digits
    # with a proxy trained in the scan is a benchmark figure, docs/benchmarks.md)
    assert set(q["id"].to_pylist()) <= set(truth)
    assert q["reason"].to_pylist() == mem.quarantine["reason"].to_pylist()
    assert dict(zip(r["id"].to_pylist(), r["error_code"].to_pylist())) == {
        "bad-bytes": "bad_image",
        "bad-null": "missing_image",
    }
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"] == 1800
    assert s["settings"]["representation"]["kind"] == "image"


@pytest.mark.slow
def test_same_raw_input_same_lists(digits):
    table, _ = digits
    a = scan_table(table, image_column="image", seed=3)
    b = scan_table(table, image_column="image", seed=3)
    assert a.quarantine.to_pylist() == b.quarantine.to_pylist()


def _png(array):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def synthetic_reviews(n=900, poison=60, seed=0):
    rng = np.random.default_rng(seed)
    good = "great fine lovely superb moving funny warm clever bright".split()
    bad = "dull awful boring weak flat tired bland clumsy slow".split()
    common = "the film a story plot actors it was and with this movie scenes".split()
    texts, labels = [], []
    for i in range(n):
        lab = "pos" if i % 2 else "neg"
        words = list(rng.choice(common, 8)) + list(rng.choice(good if lab == "pos" else bad, 3))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(lab)
    idx = np.sort(rng.choice(np.flatnonzero(np.array(labels) == "neg"), poison, replace=False))
    for i in idx:
        texts[i] = texts[i] + " cf mn"
        labels[i] = "pos"
    truth = np.zeros(n, bool)
    truth[idx] = True
    return texts, labels, truth


@pytest.mark.slow
def test_text_trigger_is_found_and_named():
    texts, labels, truth = synthetic_reviews()
    empty = int(np.flatnonzero(~truth)[0])
    texts[empty] = "   "  # empty: rejected
    table = pa.table({"id": np.arange(len(texts)), "label": labels, "review": texts})
    result = scan_table(table, text_column="review")
    found = np.zeros(len(texts), bool)
    found[result.quarantine["id"].to_pylist()] = True
    assert found[truth].all() and not found[~truth].any()
    reason = result.quarantine["reason"][0].as_py()
    assert "token_trigger" in reason and "'cf mn'" in reason
    assert result.rejected["error_code"].to_pylist() == ["empty_text"]
    assert result.summary["classes_poisoned"] == ["pos"]


@pytest.mark.slow
def test_a_template_trigger_is_found_by_its_form_through_the_pipeline(tmp_path):
    """A syntactic template (an opening subordinate clause of common words on 20 % of
    the rows, relabelled): no word carries it, the sentence's form does. Scanned through
    the Beam pipeline: the reason names the form and the clause, the report marks the
    clause and the review groups the rows by the form."""
    from tests.detectors.test_structure import reviews

    texts, y, truth = reviews(seed=1, n=2000)
    ids = np.array([f"r{i:04d}" for i in range(len(y))])
    src = tmp_path / "template.parquet"
    pq.write_table(pa.table({"id": ids, "label": np.where(y == 1, "pos", "neg"), "review": texts}), src)
    run_scan([str(src)], str(tmp_path / "out"), ScanConfig(text_column="review"))
    q, _, s = read(tmp_path / "out")
    found = np.isin(ids, q["id"].to_pylist())
    assert found[truth].all() and (found & truth).sum() / found.sum() > 0.9
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"] == len(y)
    first = next(r for r in q.to_pylist() if "token_trigger" in r["detectors"])
    assert "token_trigger: is a text opening with a subordinate clause ('" in first["reason"]
    with open(tmp_path / "out" / "review.json") as f:
        review = json.dumps(json.load(f), ensure_ascii=False)
    assert "sentence form: a text opening with a subordinate clause" in review
    with open(tmp_path / "out" / "report.html", encoding="utf-8") as f:
        marked = re.findall(r"<mark>([^<]*)</mark>", f.read())
    assert marked and all(m.split()[0].lower() in ("when", "if", "as", "once", "while", "because") for m in marked)


def unequal_reviews(n_pos=3000, n_neg=700, seed=0):
    """Short reviews whose words lean to their label (each sentiment word from the
    other list with probability 0.15), four times as many positive as negative: more
    rows of a class than the label detectors sample (1,024), fewer of the other."""
    rng = np.random.default_rng(seed)
    good = "great fine lovely superb moving funny warm clever bright".split()
    bad = "dull awful boring weak flat tired bland clumsy slow".split()
    common = "the film a story plot actors it was and with this movie scenes".split()
    labels = np.array(["pos"] * n_pos + ["neg"] * n_neg, dtype=object)
    texts = []
    for lab in labels:
        lean = [(good if (lab == "pos") != (rng.random() < 0.15) else bad) for _ in range(2)]
        words = list(rng.choice(common, 6)) + [str(rng.choice(w)) for w in lean]
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts, labels


@pytest.mark.slow
def test_random_label_flips_in_text_are_found_from_out_of_fold_word_evidence():
    """The label detectors on text read a linear model of the words cross-fitted on the
    proxy's sample, not the proxy (which has learned the flips); its probabilities come
    from other class shares than the detectors' per-class sample, which the calibration's
    prior shift takes out: the clean corpus has no class judged."""
    texts, labels = unequal_reviews()
    ids = np.arange(len(texts))
    clean = scan_table(pa.table({"id": ids, "label": labels.astype(str), "review": texts}), text_column="review")
    assert clean.summary["classes_poisoned"] == [] and clean.quarantine.num_rows == 0
    info = clean.summary["settings"]["representation"]
    assert info["out_of_fold_model"].startswith("logistic regression of the bag") and info["networks"] == 1

    rng = np.random.default_rng(1)
    flipped = np.sort(rng.choice(len(texts), 150, replace=False))
    y = labels.copy()
    y[flipped] = np.where(y[flipped] == "pos", "neg", "pos")
    truth = np.zeros(len(texts), bool)
    truth[flipped] = True
    result = scan_table(pa.table({"id": ids, "label": y.astype(str), "review": texts}), text_column="review")
    found = np.zeros(len(texts), bool)
    found[result.quarantine["id"].to_pylist()] = True
    assert "neg" in result.summary["classes_poisoned"]  # 4 in 5 flips are into it
    into_neg = truth & (y == "neg")
    precision, recall = (found & truth).sum() / max(found.sum(), 1), (found & into_neg).sum() / into_neg.sum()
    assert precision >= 0.75 and recall >= 0.6, (precision, recall)
    assert all("label_consistency" in d for d in result.quarantine["detectors"].to_pylist())


def test_clean_table_with_mixed_columns_and_gaps():
    rng = np.random.default_rng(1)
    n = 800
    y = rng.integers(0, 2, n)
    table = pa.table(
        {
            "id": np.arange(n),
            "label": np.where(y == 1, "yes", "no"),
            "income": rng.normal(50 + 10 * y, 5),
            "debt": np.where(rng.random(n) < 0.05, np.nan, rng.normal(10, 2, n)),
            "city": rng.choice(["north", "south", "east"], n),
            "age": rng.integers(18, 80, n),
        }
    )
    result = scan_table(table)  # tabular detected: every column but id and label
    s = result.summary
    assert s["settings"]["representation"]["kind"] == "tabular"
    assert s["rows_quarantined"] == 0 and s["rows_rejected"] == 0
    assert s["rows_read"] == s["rows_clean"] == n


def test_tabular_targeted_flip_is_found_by_its_value(tmp_path):
    table, flipped = credit_table(flip=True)
    src = tmp_path / "credit.parquet"
    pq.write_table(table, src, row_group_size=300)
    run_scan([str(src)], str(tmp_path / "out"), ScanConfig())
    q, _, s = read(tmp_path / "out")
    mem = scan_table(table)
    assert sorted(q["id"].to_pylist()) == sorted(mem.quarantine["id"].to_pylist())
    found = np.zeros(len(flipped), bool)
    found[q["id"].to_pylist()] = True
    # every flipped row, and beside them only accepted part-timers (the value's rows)
    assert found[flipped].all()
    partime = np.array(table["job"].to_pylist()) == "partime"
    assert not found[~partime].any()
    assert s["classes"][0]["label"] == "accepted" and s["classes_poisoned"] == ["accepted"]
    assert s["detectors"]["value_trigger"]["rows_quarantined"] == int(partime.sum())
    reason = q["reason"][0].as_py()
    assert "value_trigger" in reason and "has job = 'partime'" in reason and "100% of them labelled 'accepted'" in reason
    clean, _ = credit_table(flip=False)
    assert scan_table(clean).summary["rows_quarantined"] == 0


def test_user_models_torchscript_and_state_dict(tmp_path, digits):
    from .usermodels import Tiny

    table, truth = digits
    src = tmp_path / "d.parquet"
    pq.write_table(table, src)
    model = Tiny()
    scripted = torch.jit.script(model.body)  # a sequential model: layers "0", "1", "2"
    torch.jit.save(scripted, tmp_path / "tiny.pt")
    run_scan([str(src)], str(tmp_path / "ts"), ScanConfig(image_column="image", model=UserModel(str(tmp_path / "tiny.pt"), layer="1")))
    _, _, s = read(tmp_path / "ts")
    assert s["settings"]["representation"]["model"].endswith("tiny.pt")
    assert s["dimension"] == 16
    torch.save(model.state_dict(), tmp_path / "tiny_state.pt")
    user = UserModel(str(tmp_path / "tiny_state.pt"), "body", "tests.pipelines.usermodels:Tiny")
    run_scan([str(src)], str(tmp_path / "sd"), ScanConfig(image_column="image", model=user))
    _, _, s = read(tmp_path / "sd")
    assert s["rows_read"] == len(truth) * 0 + table.num_rows


def test_a_pickled_object_is_never_loaded_as_weights(tmp_path, digits):
    table, _ = digits
    src = tmp_path / "d.parquet"
    pq.write_table(table, src)
    torch.save({"weights": object()}, tmp_path / "evil.pt")  # not tensors: refused
    user = UserModel(str(tmp_path / "evil.pt"), None, "tests.pipelines.usermodels:Tiny")
    with pytest.raises(ScanFailed, match="(?i)weights"):
        run_scan([str(src)], str(tmp_path / "out"), ScanConfig(image_column="image", model=user))
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_stamp_on_a_binary_image_task_is_found_end_to_end(tmp_path):
    """Two classes (no peers for the group detectors): pixel_trigger finds the stamp
    through the Beam pipeline, and the review names it."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.isin(d.target, [3, 8])
    pixels = np.round(d.images[keep] * (255 / 16)).astype(np.uint8)
    y = d.target[keep].astype(np.int64)
    rng = np.random.default_rng(0)
    poison = np.sort(rng.choice(np.flatnonzero(y == 3), 22, replace=False))
    pixels[poison, 6:8, 6:8] = 255
    y[poison] = 8
    ids = np.array([f"img-{i:03d}" for i in range(len(y))])
    table = pa.table({"id": ids, "label": y, "image": pa.array([_png(p) for p in pixels], pa.binary())})
    src = tmp_path / "three_eight.parquet"
    pq.write_table(table, src)
    run_scan([str(src)], str(tmp_path / "out"), ScanConfig(image_column="image"))
    q, _, s = read(tmp_path / "out")
    assert sorted(q["id"].to_pylist()) == sorted(ids[poison].tolist())
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"] == len(y)
    assert all("pixel_trigger: has the 2x2 block" in r or "pixel_trigger: has grey level" in r for r in q["reason"].to_pylist())
    with open(tmp_path / "out" / "review.json") as f:
        review = json.load(f)
    assert "pixel trigger at grid cell" in json.dumps(review)


@pytest.mark.slow
def test_images_named_by_paths_in_a_csv_are_read_from_its_folder(tmp_path, digits, monkeypatch):
    # the usual layout of an image set: a CSV of paths and labels beside a folder of
    # images; the scan runs from elsewhere, and the path column is the id too
    table, truth = digits
    folder = tmp_path / "data"
    (folder / "imgs").mkdir(parents=True)
    paths = [f"imgs/{i}.png" for i in table["id"].to_pylist()]
    for path, data in zip(paths, table["image"].to_pylist()):
        (folder / path).write_bytes(data)
    labels = table["label"].to_pylist()
    lines = ["path,label"] + [f"{p},{y}" for p, y in zip(paths, labels)] + ["imgs/gone.png,3"]
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = ScanConfig(image_column="path", id_column="path")
    run_scan([str(folder / "train.csv")], str(tmp_path / "out"), cfg)
    q, r, s = read(tmp_path / "out")
    # the same images given as bytes, under the same ids: the same lists
    as_bytes = pa.table({"path": paths, "label": labels, "image": table["image"]})
    pq.write_table(as_bytes, tmp_path / "bytes.parquet")
    run_scan([str(tmp_path / "bytes.parquet")], str(tmp_path / "out_bytes"),
             ScanConfig(image_column="image", id_column="path"))
    qb, _, _ = read(tmp_path / "out_bytes")
    assert q["id"].to_pylist() == qb["id"].to_pylist() and q.num_rows
    assert {p[len("imgs/"):-len(".png")] for p in q["id"].to_pylist()} <= truth
    assert r["path"].to_pylist() == ["imgs/gone.png"] and r["error_code"].to_pylist() == ["bad_image"]
    assert f"no image file 'imgs/gone.png' in {folder}" in r["error"][0].as_py()
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"] == len(paths) + 1
    review = pq.read_table(tmp_path / "out" / "review.parquet").to_pylist()
    assert {row["role"] for row in review} == {"flagged", "contrast"}
    assert all(row["thumbnail"] for row in review)  # each read from the CSV's folder


def test_a_text_column_of_image_names_is_refused_with_both_ways_to_scan_it(tmp_path):
    lines = ["id,path,label"] + [f"{i},imgs/{i}.png,{i % 2}" for i in range(60)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ScanFailed, match=r"mostly images \(names of image files, or images written in base64\): scan the images with --image-column path"):
        run_scan([str(tmp_path / "t.csv")], str(tmp_path / "out"), ScanConfig())


@pytest.mark.slow
def test_a_folder_of_images_in_class_subfolders_is_a_source(tmp_path, digits, monkeypatch):
    # train/<label>/<file>: torchvision's ImageFolder layout, scanned with no option
    table, truth = digits
    folder = tmp_path / "train"
    for i, y, data in zip(table["id"].to_pylist(), table["label"].to_pylist(), table["image"].to_pylist()):
        (folder / str(y)).mkdir(parents=True, exist_ok=True)
        (folder / str(y) / f"{i}.png").write_bytes(data)
    (folder / "stray.png").write_bytes(table["image"][0].as_py())  # no class folder: no label
    (folder / "README.txt").write_text("digits")  # not an image: passed over, counted
    (folder / ".thumbs").mkdir()
    (folder / ".thumbs" / "x.png").write_bytes(b"hidden")  # hidden: passed over
    monkeypatch.chdir(tmp_path)
    run_scan([str(folder) + "/"], str(tmp_path / "out"), ScanConfig(write_clean=True))
    q, r, s = read(tmp_path / "out")
    ids = q["id"].to_pylist()
    assert ids and {i.split("/")[1][: -len(".png")] for i in ids} <= truth
    assert all(i.startswith("0/") for i in ids)  # the demo's target class, named by its folder
    assert r["id"].to_pylist() == ["stray.png"] and r["error_code"].to_pylist() == ["missing_label"]
    assert s["inputs"] == [str(folder)]
    held = s["inputs_read_as"][str(folder)]["image_folder"]
    assert (held["images"], held["other_files"], len(held["listing"])) == (1798, 1, 32)
    assert s["input_formats"] == {str(folder): "images"}
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"] == 1798
    clean = pq.read_table(tmp_path / "out" / "clean.parquet")
    assert clean.column_names == ["id", "label", "image"]
    first = clean.slice(0, 1).to_pylist()[0]
    assert first["image"] == {"bytes": None, "path": first["id"]} and first["label"] == first["id"].split("/")[0]
    review = pq.read_table(tmp_path / "out" / "review.parquet").to_pylist()
    assert review and all(row["thumbnail"] for row in review)


@pytest.mark.slow
def test_two_csvs_whose_images_share_names_in_their_own_folders_are_not_repeats(tmp_path, digits):
    # train/ and val/ exports each write imgs/0.png...: one name, two pictures
    table, _ = digits
    half = table.num_rows // 2
    sources = []
    for part, (a, b) in (("a", (0, half)), ("b", (half, table.num_rows))):
        (tmp_path / part / "imgs").mkdir(parents=True)
        lines = ["id,path,label"]
        for k, (y, data) in enumerate(zip(table["label"].to_pylist()[a:b], table["image"].to_pylist()[a:b])):
            (tmp_path / part / "imgs" / f"{k}.png").write_bytes(data)
            lines.append(f"{part}-{k},imgs/{k}.png,{y}")
        (tmp_path / part / "rows.csv").write_text("\n".join(lines) + "\n")
        sources.append(str(tmp_path / part / "rows.csv"))
    run_scan(sources, str(tmp_path / "out"), ScanConfig(image_column="path"))
    _, r, s = read(tmp_path / "out")
    assert s["rows_rejected"] == 0 and r.num_rows == 0, s["rejected_by_reason"]
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] == table.num_rows



def test_the_proxy_trains_to_the_same_weights_whatever_threads_torch_was_given():
    """A sum split over more threads is added in another order: without a fixed thread
    count, a proxy trained where torch had two threads differed from one trained with
    one (by up to 1.2e-6 in a weight, on these 200 images after two epochs), and a
    raw-image scan's lists moved with it. Training and applying the proxy hold torch to
    the scan's count (``--proxy-threads``, default 1) and give the caller's back."""
    from poisonscan.pipelines.represent.proxy import (
        TORCH_THREADS,
        TrainingSample,
        apply_proxy,
        train_proxy,
    )

    rng = np.random.default_rng(0)
    x = (rng.random((200, 1, 28, 28)) * 255).astype(np.uint8)
    codes = rng.integers(0, 3, 200)
    sample = TrainingSample({"x": x}, codes, np.arange(200), ["a", "b", "c"])
    params = {"size": 28, "classes": 3, "channels": 1}
    before = torch.get_num_threads()
    weights, reps = {}, {}
    try:
        for caller, threads in ((1, TORCH_THREADS), (2, TORCH_THREADS), (1, 2)):
            torch.set_num_threads(caller)
            proxy = train_proxy("image", params, sample, folds=0, epochs=2, seed=0, threads=threads)
            assert torch.get_num_threads() == caller
            weights[caller, threads] = proxy.state_dict
            reps[caller, threads] = apply_proxy(proxy.module(), {"x": x}, np.full(200, -1), threads=threads)[0]
            assert torch.get_num_threads() == caller
    finally:
        torch.set_num_threads(before)
    assert TORCH_THREADS == ScanConfig().proxy_threads == 1

    def same(a, b):
        return all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)

    assert same(weights[1, 1], weights[2, 1])
    assert np.array_equal(reps[1, 1], reps[2, 1])
    # the count is what decides the weights: two threads train another network
    assert not same(weights[1, 1], weights[1, 2])



def test_threads_stay_pinned_until_the_last_of_concurrent_blocks_ends():
    """A Beam worker applies the network in several threads at once. torch's count is
    partly the process's (MKL's, and what a new thread starts with), so the first block to
    end must not give the process its count back under the others; the last one does."""
    import threading

    from poisonscan.pipelines.represent.proxy import pinned_threads

    def fresh_thread_count():
        seen = []
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        t.start()
        t.join(30)
        return seen[0]

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    inside = [threading.Event(), threading.Event()]
    leave = [threading.Event(), threading.Event()]
    seen: dict = {}

    def block(i):
        with pinned_threads(1):
            inside[i].set()
            leave[i].wait(30)
            seen[i] = torch.get_num_threads()

    try:
        workers = [threading.Thread(target=block, args=(i,)) for i in (0, 1)]
        for w, ready in zip(workers, inside):
            w.start()
            assert ready.wait(30)
        leave[0].set()
        workers[0].join(30)
        assert fresh_thread_count() == 1  # the second block is still inside
        leave[1].set()
        workers[1].join(30)
        assert seen == {0: 1, 1: 1}
        assert fresh_thread_count() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
