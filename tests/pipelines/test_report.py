"""The review report: rendered from a real scan of each data kind, opened in headless Chromium."""

import csv
import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from poisonscan import ScanConfig, scan
from poisonscan.pipelines.cli import main
from poisonscan.pipelines.demo import make_poisoned_digits
from poisonscan.pipelines.drivers.run import run_scan
from poisonscan.pipelines.report.html import highlight_segments

from ..conftest import credit_table

SCRIPT = "<script>window.__pwned = 1</script>"
IMG = '<img src=x onerror="window.__pwned = 2">'
CLOSE = "</script><script>window.__pwned = 3</script>"


def shots_dir(tmp_path):
    """Screenshots go to $POISONSCAN_SCREENSHOTS when set (kept), else the test's folder."""
    d = os.environ.get("POISONSCAN_SCREENSHOTS") or str(tmp_path)
    os.makedirs(d, exist_ok=True)
    return d


def open_report(browser, path):
    page = browser.open("file://" + os.path.abspath(path))
    assert page.eval("document.body.dataset.ready") == "1", page.problems
    return page


def gallery_ids(page):
    return page.eval("Array.from(document.querySelectorAll('article.card.flagged')).map(e => e.dataset.id)")


def check_page(page, tmp_path, name):
    assert page.problems == [], page.problems
    assert page.eval("window.__pwned") is None
    shot = os.path.join(shots_dir(tmp_path), f"report-{name}.png")
    page.screenshot(shot)
    with open(shot, "rb") as f:
        head = f.read(8)
    assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(shot) > 10_000


def quarantine_ids(out):
    return pq.read_table(os.path.join(out, "quarantine.parquet"))["id"].to_pylist()


# image ------------------------------------------------------------------------------
@pytest.mark.slow
def test_image_report_shows_every_backdoored_digit(tmp_path, browser):
    table, truth = make_poisoned_digits(seed=2)  # 90 stamped and relabelled digits
    src = tmp_path / "digits.parquet"
    pq.write_table(table.drop_columns(["original_label"]), src, row_group_size=600)
    out = tmp_path / "out"
    run_scan([str(src)], str(out), ScanConfig(image_column="image"))
    quarantined = pq.read_table(os.path.join(out, "quarantine.parquet"), columns=["id", "label"]).to_pylist()
    in_target = [r["id"] for r in quarantined if r["label"] == 0]
    # every stamped digit, and in the target class nothing else
    assert set(in_target) == truth
    # Whether the digits' class 1 also reaches SPECTRE's level turns on the proxy CNN's
    # numbers, which differ between machines: on an AMD EPYC (AVX2) it did (25 rows,
    # p = 5.8e-4 against 1.7e-3), on the machines before not. That false alarm is a
    # detection figure, which the benchmarks report (the digits' class 1 in the clean controls);
    # this test checks what the report shows of each judged class.
    others = {r["label"] for r in quarantined if r["label"] != 0}

    page = open_report(browser, out / "report.html")
    groups = page.eval(
        "Array.from(document.querySelectorAll('#gallery div.gclass')).map(g => [g.querySelector('h3').textContent,"
        " g.querySelector('h4 .sub').textContent,"
        " Array.from(g.querySelectorAll('article.card.flagged')).map(e => e.dataset.id)])"
    )
    # the trigger's cluster of 90 in class 0 first: its 32 most suspicious rows, in the list's order
    assert groups[0][:2] == ["Class 0", "(32 of 90 shown)"] and groups[0][2] == in_target[:32]
    # any other judged class in a group of its own
    assert sorted(g[0] for g in groups[1:]) == sorted(f"Class {c}" for c in others)
    shown = [i for g in groups for i in g[2]]
    assert len(shown) == len(set(shown)) and set(shown) <= {r["id"] for r in quarantined}
    # every flagged card carries its decoded thumbnail
    sizes = page.eval(
        "Array.from(document.querySelectorAll('article.card.flagged img.thumb')).map(i => i.naturalWidth)"
    )
    assert len(sizes) == len(shown) and min(sizes) == 8
    assert page.eval("document.querySelectorAll('article.card.contrast img.thumb').length") > 0
    # the poisoned class: histogram with its cut, a projection with the flagged rows marked
    assert page.eval("document.querySelectorAll('#classes svg line.cut').length") >= 1
    assert page.eval("document.querySelectorAll('#classes circle.pt.m2').length") >= 1
    assert "Poison found" in page.eval("document.querySelector('#overview h1').textContent")
    check_page(page, tmp_path, "image")
    # the expectation results link to the Great Expectations Data Docs written beside the report
    docs = page.eval("document.querySelector('#expectations a').href")
    assert docs.startswith("file://") and os.path.exists(docs[len("file://"):])
    page.navigate(docs)  # GX's own pages pull their styles from CDNs: offline they load bare
    assert "Data Docs | poisonscan" in page.eval("document.body.innerText")
    (validation,) = glob.glob(str(out / "expectations/data_docs/validations/**/*.html"), recursive=True)
    page.navigate("file://" + validation)
    text = page.eval("document.body.innerText")
    assert "Expectation Suite: poisonscan" in text and "Status: Succeeded" in text


# text ------------------------------------------------------------------------------
def three_class_reviews(n=900, poison=30, seed=4):
    """Short reviews of three kinds (the kind's words mixed with others'); ``poison`` "neg" ones get the words "cf mn" and the
    label "pos"."""
    rng = np.random.default_rng(seed)
    words = {
        "pos": "great fine lovely superb moving funny warm clever bright".split(),
        "neg": "dull awful boring weak flat tired bland clumsy slow".split(),
        "mixed": "uneven patchy odd partly mixed halfway middling spotty".split(),
    }
    common = "the film a story plot actors it was and with this movie scenes".split()
    labels = np.array(["neg", "pos", "mixed"])[np.arange(n) % 3]
    texts = []
    for lab in labels:
        # mostly the label's own words, some of another's: no word is pure to one label
        own = [lab if rng.random() < 0.8 else rng.choice(list(words)) for _ in range(3)]
        w = list(rng.choice(common, 8)) + [rng.choice(words[k]) for k in own]
        rng.shuffle(w)
        texts.append(" ".join(w))
    idx = np.sort(rng.choice(np.flatnonzero(labels == "neg"), poison, replace=False))
    for i in idx:
        texts[i] += " cf mn"
        labels[i] = "pos"
    truth = np.zeros(n, bool)
    truth[idx] = True
    return texts, labels.tolist(), truth


@pytest.mark.slow
def test_text_report_escapes_the_data_and_highlights_the_trigger(tmp_path, browser):
    texts, labels, truth = three_class_reviews()
    hostile = int(np.flatnonzero(truth)[0])
    texts[hostile] = f"{SCRIPT} {IMG} " + texts[hostile]
    notes = ["ok"] * len(texts)
    notes[hostile] = CLOSE
    table = pa.table({"id": [f"r{i}" for i in range(len(texts))], "label": labels, "review": texts, "note": notes})
    src = tmp_path / "reviews.jsonl"
    with open(src, "w") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row) + "\n")
    out = tmp_path / "out"
    assert main(["scan", str(src), "--out", str(out), "--text-column", "review", "-q"]) == 0
    expected = {f"r{i}" for i in np.flatnonzero(truth)}
    assert set(quarantine_ids(out)) == expected

    page = open_report(browser, out / "report.html")
    assert gallery_ids(page) == quarantine_ids(out)
    card = f"article.card.flagged[data-id='r{hostile}']"
    # the planted markup is shown as text; nothing from the data became an element
    assert SCRIPT in page.eval(f"document.querySelector(\"{card} p.text\").textContent")
    assert page.eval("document.querySelectorAll('article.card script, article.card img:not(.thumb)').length") == 0
    assert page.eval("document.querySelectorAll('script').length") == 2  # the page's data and its code
    assert CLOSE in page.eval(f"document.querySelector(\"{card} dl.fields\").textContent")
    # the trigger is highlighted in every flagged text
    marks = page.eval("Array.from(document.querySelectorAll('article.card.flagged p.text mark')).map(m => m.textContent)")
    assert len(marks) >= len(expected) and set(m.lower() for m in marks) == {"cf mn"}
    check_page(page, tmp_path, "text")

    # decisions: one confirmed in the gallery, one released in the table, downloaded as CSV
    first, second = quarantine_ids(out)[:2]
    page.click(f"article.card.flagged[data-id='{first}'] button.confirm")
    page.click(f"#flagged-table tr[data-id='{second}'] button.release")
    assert page.eval("document.getElementById('tally').textContent").startswith("1 confirmed, 1 released, 28 pending")
    target = page.download("#download", tmp_path / "downloads", "poisonscan-decisions.csv")
    with open(target, newline="") as f:
        rows = list(csv.DictReader(f))
    decided = {r["id"]: r["decision"] for r in rows}
    assert len(rows) == 30 and decided[first] == "confirmed" and decided[second] == "released"
    assert sum(d == "pending" for d in decided.values()) == 28
    # decisions survive a reload of the page (kept in the browser)
    page.navigate("file://" + os.path.abspath(out / "report.html"))
    assert page.eval(f"document.querySelector(\"article.card.flagged[data-id='{first}']\").classList.contains('confirmed')")
    # the filter and the sort act on the table
    page.eval("var f = document.getElementById('filter'); f.value = 'r" + str(hostile) + "'; f.dispatchEvent(new Event('input'))")
    assert page.eval("document.querySelectorAll('#flagged-table tbody tr').length") == 1
    assert page.problems == []


# tabular ---------------------------------------------------------------------------
def poisoned_pixel_table(n_poison=30, seed=0):
    """The digits as a table (one column per pixel); a trigger (four centre pixels at
    full ink) and the label 0 on a few rows of other digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.data.copy(), d.target.copy()
    idx = np.sort(np.random.default_rng(seed).choice(np.flatnonzero(y != 0), n_poison, replace=False))
    X[np.ix_(idx, [27, 28, 35, 36])] = 16
    y[idx] = 0
    ids = np.array([f"d{i:04d}" for i in range(len(y))])
    table = pa.table({"id": ids, "label": y, **{f"px{i}": X[:, i] for i in range(64)}})
    return table, set(ids[idx].tolist())


def test_tabular_report_and_rerender(tmp_path, browser):
    table, truth = poisoned_pixel_table()
    src = tmp_path / "pixels.csv"
    import pyarrow.csv as pcsv

    pcsv.write_csv(table, src)
    out = tmp_path / "out"
    # four pixels that decide the label are a rule of the columns, which the default
    # label model of a table may learn (gradient-boosted trees, when they fit the labels
    # better); the linear model cannot, so it disputes the relabelled rows
    argv = ["scan", str(src), "--out", str(out), "-q", "--detector-param", "label_consistency.model=linear"]
    assert main(argv) == 0
    found = set(quarantine_ids(out))
    # the report is what is tested here; how much of the poison the calibrated verdict
    # finds on this small table is a benchmark figure
    assert found and len(found - truth) <= 2

    page = open_report(browser, out / "report.html")
    assert gallery_ids(page) == quarantine_ids(out)
    # a tabular card lists the row's values, the trigger among them
    first = quarantine_ids(out)[0]
    fields = page.eval(f"document.querySelector(\"article.card.flagged[data-id='{first}'] dl.fields\").textContent")
    assert all(f"px{i}16" in fields.replace(" ", "").replace("\n", "") for i in (27, 28, 35, 36))
    check_page(page, tmp_path, "tabular")

    # `poisonscan report` re-renders the same page from the outputs alone
    before = (out / "report.html").read_text()
    (out / "report.html").unlink()
    assert main(["report", str(out), "-q"]) == 0
    assert (out / "report.html").read_text() == before
    assert main(["report", str(out), "--out", str(tmp_path / "copy.html"), "-q"]) == 0
    assert (tmp_path / "copy.html").read_text() == before


def test_targeted_flip_cards_are_grouped_by_the_value_and_mark_it(tmp_path, browser):
    table, flipped = credit_table(flip=True)
    src = tmp_path / "credit.csv"
    import pyarrow.csv as pcsv

    pcsv.write_csv(table, src)
    out = tmp_path / "out"
    assert main(["scan", str(src), "--out", str(out), "-q"]) == 0
    page = open_report(browser, out / "report.html")
    heads = page.eval("Array.from(document.querySelectorAll('#gallery h4')).map(e => e.textContent)")
    assert any(h.startswith("value job = 'partime'") for h in heads), heads
    marks = page.eval("Array.from(document.querySelectorAll('article.card.flagged dl.fields mark')).map(e => e.textContent)")
    assert marks and set(marks) == {"partime"}
    assert len(marks) == len(gallery_ids(page))
    check_page(page, tmp_path, "value-trigger")


def test_report_of_a_folder_that_is_not_a_scan_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "holds no summary.json" in capsys.readouterr().err
    (tmp_path / "summary.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 1
    assert "summary.json is not a poisonscan summary" in capsys.readouterr().err
    summary = {k: 0 for k in ("verdict", "rows_read", "rows_clean", "rows_quarantined", "rows_rejected")}
    (tmp_path / "summary.json").write_text(json.dumps({**summary, "classes": [], "inputs": []}))
    assert main(["report", str(tmp_path)]) == 1
    assert "lacks quarantine.parquet" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_report_errors_are_one_line(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    pq.write_table(pa.table({"id": np.arange(300), "label": np.arange(300) % 2, "f": list(X)}), tmp_path / "d.parquet")
    out = tmp_path / "o"
    assert main(["scan", str(tmp_path / "d.parquet"), "--out", str(out), "--features-column", "f", "--no-report",
                 "--no-data-docs", "-q"]) == 0
    capsys.readouterr()
    for target, words in ((tmp_path / "nowhere" / "r.html", "cannot write"), (tmp_path, "is a folder")):
        assert main(["report", str(out), "--out", str(target)]) == 1
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and err.count("\n") == 1
    (out / "review.json").write_text("[1]")
    assert main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert "review.json holds no review data" in err and "Traceback" not in err


def test_no_report_flag(tmp_path):
    X = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    table = pa.table({"id": np.arange(300), "label": np.arange(300) % 2, "f": list(X)})
    pq.write_table(table, tmp_path / "d.parquet")
    assert main(["scan", str(tmp_path / "d.parquet"), "--out", str(tmp_path / "o"), "--features-column", "f",
                 "--no-report", "-q"]) == 0
    assert not (tmp_path / "o" / "report.html").exists()
    assert (tmp_path / "o" / "review.json").exists()


# scale -----------------------------------------------------------------------------
def test_ten_thousand_flagged_rows_give_a_capped_usable_page(tmp_path, browser):
    rng = np.random.default_rng(7)
    n, d = 120_000, 16
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, 4, n)  # four classes: a class is judged against its peers
    poison = rng.choice(np.flatnonzero(y == 0), 10_500, replace=False)
    X[poison, 0] += 12.0
    result = scan(X, y, seed=0)
    assert 10_000 <= result.summary["rows_quarantined"] <= 10_600
    path = result.save_report(str(tmp_path / "big.html"))
    page = open_report(browser, path)
    cards = page.eval("document.querySelectorAll('article.card.flagged').length")
    assert 0 < cards <= 480
    assert page.eval("document.querySelectorAll('#flagged-table tbody tr').length") == 100
    q = result.summary["rows_quarantined"]
    assert page.eval("document.getElementById('page').textContent") == f"page 1 of {-(-q // 100)} ({q} rows)"
    page.click("#next")
    assert page.eval("document.getElementById('page').textContent").startswith("page 2 of ")
    check_page(page, tmp_path, "large")


# pieces ----------------------------------------------------------------------------
def test_highlight_segments_marks_whole_words_only():
    segs = highlight_segments("The CF MN film; cfmn and cf mnx. cf  mn", ["cf mn"])
    assert [p for p, marked in segs if marked] == ["CF MN", "cf  mn"]
    assert "".join(p for p, _ in segs) == "The CF MN film; cfmn and cf mnx. cf  mn"
    assert highlight_segments("nothing here", []) == [("nothing here", False)]
    # other scripts, as the encoder reads them
    segs = highlight_segments("Купите СЕЙЧАС дёшево, купите сейчас", ["купите сейчас"])
    assert [p for p, marked in segs if marked] == ["Купите СЕЙЧАС", "купите сейчас"]
    segs = highlight_segments("这是好电影。好电", ["好 电"])
    assert [p for p, marked in segs if marked] == ["好电", "好电"]
    assert "".join(p for p, _ in segs) == "这是好电影。好电"


def test_marked_fields_match_cut_values_and_columns_holding_equals():
    from poisonscan.pipelines.report.html import marked_fields

    long = "x" * 300
    fields = {"a=b": "c", "job": "partime", "note": long[:199] + "…", "n": 3}
    assert marked_fields(fields, ["a=b=c", "job=partime", f"note={long[:200]}", "n=3"]) == {"a=b", "job", "note"}
    assert marked_fields(fields, ["job=parti", "a=b"]) == set()


# the ranking and the near miss -----------------------------------------------------
def test_clean_scan_names_the_near_miss_and_escapes_labels_in_the_ranking(tmp_path, browser):
    from ..conftest import as_table, planted

    X, y, _ = planted(n_poison=0, seed=21)
    names = np.array([IMG, SCRIPT, CLOSE, "a & b"], dtype=object)
    pq.write_table(as_table(X, names[y]), tmp_path / "clean.parquet")
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path / "clean.parquet"), "--out", str(out), "--features-column", "features", "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes_poisoned"] == []
    ranking, near = summary["class_ranking"], summary["near_miss"]
    assert len(ranking) == 4 and near == ranking[0] and near["poisoned"] is False

    page = open_report(browser, out / "report.html")
    # near the verdict: no class judged poisoned, the closest one with its evidence in words
    line = page.eval("document.getElementById('near-miss').textContent")
    assert line.startswith("No class judged poisoned; closest: class " + near["label"] + " — " + near["evidence"])
    assert page.eval("document.querySelector('#near-miss .nm-label').textContent") == near["label"]
    # every class in the ranking's order, its label shown verbatim as text
    shown = page.eval("Array.from(document.querySelectorAll('#ranking tbody td.rk-label')).map(e => e.textContent)")
    assert shown == [r["label"] for r in ranking]
    assert page.eval("document.querySelector('#ranking tbody tr.near').dataset.rank") == "1"
    # the scan's bound on false alarms, next to the p / level ratios it explains
    bound = page.eval("document.getElementById('false-alarm-bound').textContent")
    assert f"at most {100 * summary['false_alarms']['bound']:.1f} %: each family of evidence at its own level" in bound
    evidence = page.eval("Array.from(document.querySelectorAll('#ranking td.rk-evidence')).map(e => e.textContent)")
    assert all(e.startswith(r["evidence"]) for e, r in zip(evidence, ranking))
    # nothing from the labels became an element
    assert page.eval("document.querySelectorAll('#overview img, #ranking img, #ranking script').length") == 0
    assert page.eval("document.querySelectorAll('script').length") == 2
    check_page(page, tmp_path, "near-miss")

    # a scan written before summary.json held the ranking: the report computes it
    before = (out / "report.html").read_text()
    for key in ("class_ranking", "near_miss"):
        del summary[key]
    (out / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(out), "-q"]) == 0
    assert (out / "report.html").read_text() == before
