"""Stamped pixel triggers on raw images: found with any number of classes, two
included; strokes that one digit alone makes are not triggers."""

import re

import numpy as np
import pytest
from sklearn.datasets import load_digits

from poisonscan.detectors import make_detector
from poisonscan.detectors.tokens import _more_cells
from poisonscan.pipelines.represent.encoders import (
    ImageEncoder,
    pixel_levels,
    pixel_tokens,
)


def digit_images(classes=None):
    d = load_digits()
    keep = np.isin(d.target, classes) if classes is not None else np.ones(len(d.target), bool)
    return np.round(d.images[keep] * (255 / 16)).astype(np.uint8), d.target[keep].astype(np.int64)


def stamp(images, labels, target, rate, seed=0):
    """A 2x2 white square at the bottom-right corner of ``rate`` of the images of other
    classes, relabelled ``target``."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(np.flatnonzero(labels != target), int(round(rate * len(labels))), replace=False))
    x, y = images.copy(), labels.copy()
    x[idx, 6:8, 6:8] = 255
    y[idx] = target
    truth = np.zeros(len(y), bool)
    truth[idx] = True
    return x, y, truth


def scan(images, labels, batches=1):
    values = list(images)
    encoder = ImageEncoder.fit(values)
    tokens = encoder.encode(values).tokens
    det = make_detector("pixel_trigger")
    parts = np.array_split(np.arange(len(labels)), batches)
    accs = [det.add_input(det.create_accumulator(), [tokens[i] for i in p], labels[p]) for p in parts]
    state = det.extract_output(det.merge_accumulators(accs), {})
    judged = [c for c in np.unique(labels).tolist() if det.judge(state, c, int((labels == c).sum()), None).poisoned]
    flagged = (det.score(state, tokens, labels) > 0) & np.isin(labels, judged)
    return det, state, tokens, judged, flagged


def test_a_binary_task_with_a_stamp_is_found():
    """Two classes: no peers for the group detectors, the stamp is still found."""
    x, y, truth = stamp(*digit_images([3, 8]), target=8, rate=0.06)
    det, state, tokens, judged, flagged = scan(x, y)
    assert judged == [8]
    assert (flagged & truth).sum() >= 0.95 * truth.sum() and not (flagged & ~truth).any()
    reason = det.describe(state, [tokens[i] for i in np.flatnonzero(flagged)[:1]], y[flagged][:1], None, None)[0]
    assert "of 16) at cell (" in reason and "100% of them labelled 8" in reason
    # the stamp's other values are placed, not merely counted
    assert re.search(r"\((and \d+ more trigger values? within it|one of \d+ trigger values it holds, which together "
                     r"cover rows? [\d, -]+ and columns? [\d, -]+ of the grid)\)", reason)


def test_a_stamps_other_values_are_placed_as_one_region():
    """Overlapping 2 x 2 blocks of one stamp read as one place, not as several stamps."""
    assert _more_cells("blk 6,6=15.15.15.15", ["px 6,7=15", "px 7,7=15"]) == " (and 2 more trigger values within it)"
    assert _more_cells("blk 6,6=15.15.15.15", ["blk 6,7=15.15.15.15"]) == (
        " (one of 2 trigger values it holds, which together cover rows 6-7 and columns 6-8 of the grid)")
    assert _more_cells("px 6,6=15", ["px 6,7=15", "px 2,7=3"]) == (
        " (one of 3 trigger values it holds, which together cover rows 2, 6 and columns 6-7 of the grid)")
    assert _more_cells("px 6,6=15", []) == ""


def test_every_digit_class_with_a_stamp_in_batches_as_in_one():
    x, y, truth = stamp(*digit_images(), target=0, rate=0.03, seed=1)
    _, _, _, judged, flagged = scan(x, y)
    _, _, _, judged_b, flagged_b = scan(x, y, batches=3)
    assert judged == judged_b == [0]
    np.testing.assert_array_equal(flagged, flagged_b)
    assert (flagged & truth).sum() >= 0.95 * truth.sum() and not (flagged & ~truth).any()


@pytest.mark.parametrize("classes", [None, [3, 8], [0, 1, 7]])
def test_clean_digits_have_no_trigger(classes):
    """Clean digits hold pixel values that nearly only one digit has (its strokes); the
    rest of such an image still looks like that digit, so none is a trigger."""
    x, y = digit_images(classes)
    _, state, _, judged, flagged = scan(x, y)
    assert judged == [] and not flagged.any()
    assert sum(c["candidates"] for c in state.info["checks"].values()) > 0  # label-deciding strokes were tested


def test_a_small_stamp_on_images_that_keep_their_label_stays_below_the_stamp_test():
    """Clean-label stamping (the images keep their own labels) with a 2x2 square on the
    8x8 digits: the rows holding it look like their class without it, so the
    counterfactual test keeps it, and it gives the stamp test only two values nearly
    only class 0 holds, a stamp the other classes' natural ones come near (a measured
    limit)."""
    images, labels = digit_images()
    x = images.copy()
    idx = np.flatnonzero(labels == 0)[:60]
    x[idx, 6:8, 6:8] = 255
    _, state, _, judged, flagged = scan(x, labels)
    assert judged == [] and not flagged.any()
    stamp = state.info["stamps"][0]
    assert (stamp["values"], stamp["rows"]) == (2, 60) and stamp["p"] > state.info["stamp_level"]


def shifted_digits(seed=0):
    """The digits drawn 3 x larger on a 28 x 28 canvas, each at three places, with grey
    noise: 5,391 images whose strokes rarely repeat exactly."""
    images, labels = digit_images()
    pad = np.zeros((len(images), 28, 28))
    pad[:, 2:26, 2:26] = np.kron(images, np.ones((1, 3, 3)))
    x = np.concatenate([np.roll(pad, s, axis=(1, 2)) for s in [(0, 0), (-2, 1), (1, -2)]])
    x += np.random.default_rng(seed).normal(0, 6, x.shape)
    return x, np.concatenate([labels] * 3)


def as_images(x):
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def test_a_wave_added_to_images_that_keep_their_label_is_found():
    """SIG (Barni et al. 2019): a sinusoid added to 30 % of class 0's images, labels
    kept. No label disagrees and the counterfactual test keeps the wave's values (the
    rest of each image looks like a 0), but the same values at the same places on 160
    images make a stamp no other class comes near: class 0 is judged by the stamp test,
    the stamped images and no other flagged, in batches as in one."""
    x, y = shifted_digits()
    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(np.flatnonzero(y == 0), 160, replace=False))
    x[idx] += 60 * np.sin(2 * np.pi * np.arange(28) * 6 / 28)[None, None, :]
    truth = np.zeros(len(y), bool)
    truth[idx] = True
    det, state, tokens, judged, flagged = scan(as_images(x), y)
    assert judged == [0]
    np.testing.assert_array_equal(flagged, truth)
    _, _, _, judged_b, flagged_b = scan(as_images(x), y, batches=3)
    assert judged_b == [0]
    np.testing.assert_array_equal(flagged_b, flagged)
    verdict = det.judge(state, 0, int((y == 0).sum()), None)
    assert verdict.p_value < verdict.level == state.info["stamp_level"] < state.info["level"]
    assert "clean-label" in verdict.note and verdict.extra["stamp_rows"] >= 140
    reason = det.describe(state, [tokens[idx[0]]], y[idx[:1]], None, None)[0]
    assert "of 16) at cell (" in reason and "whether they kept it (clean-label)" in reason
    # the stamp's images name first the value most of them hold: the review groups them by it
    first = [h[0] for h in det.highlights(state, [tokens[i] for i in idx], y[idx])]
    assert max(first.count(f) for f in set(first)) >= 0.75 * len(idx)
    # the other classes' natural stamps are the yardstick, and none of them stands out
    others = [v for c, v in state.info["stamps"].items() if c != 0]
    assert len(others) == 9 and all(not v["judged"] and v["p"] > 1e-3 for v in others)


def test_five_stamped_images_are_sent_to_the_first_test_by_their_stamp():
    """Five images of other classes with a 4x4 checkerboard, relabelled 0: too few rows
    for the binomial screen over the data set's values, but their stamp (24 values on
    five images) stands out from the other labels' enough to send its values to the
    counterfactual test, which finds all five rows looking like other digits without it."""
    from poisonscan.detectors.tokens import STAMP_SCREEN

    x, y = shifted_digits()
    idx = np.sort(np.random.default_rng(2).choice(np.flatnonzero(y != 0), 5, replace=False))
    x[idx, 12:16, 0:4] = np.where(np.add.outer(np.arange(4), np.arange(4)) % 2 == 0, 255, 136)
    y[idx] = 0
    truth = np.zeros(len(y), bool)
    truth[idx] = True
    det, state, tokens, judged, flagged = scan(as_images(x), y)
    assert judged == [0]
    np.testing.assert_array_equal(flagged, truth)
    stamp = state.info["stamps"][0]
    assert (stamp["values"], stamp["rows"]) == (24, 5) and stamp["p"] < STAMP_SCREEN and not stamp["judged"]
    kept = state.classes[0]
    assert kept and all(t.p_value > state.info["screen"]["threshold"] for t in kept)  # not by the screen
    assert all(t.other_class == t.tested == 5 for t in kept)
    reason = det.describe(state, [tokens[idx[0]]], y[idx[:1]], None, None)[0]
    assert "looks like another class" in reason


def test_copies_of_images_are_not_a_stamp():
    """Forty images of class 3 repeated five times each share every value at the same
    places, but a copy is not a stamp: identical images count once."""
    x, y = shifted_digits()
    threes = np.flatnonzero(y == 3)[:40]
    x = np.concatenate([x] + [x[threes]] * 4)
    y = np.concatenate([y] + [y[threes]] * 4)
    _, state, _, judged, flagged = scan(as_images(x), y)
    assert judged == [] and not flagged.any()
    assert not state.info["stamps"][3]["judged"] and state.info["stamps"][3]["p"] > 1e-3


def test_tokens_name_off_background_values_and_blocks():
    x = np.zeros((3, 1, 8, 8), np.uint8)
    x[1, 0, 2, 3] = 255
    x[2, 0, 2, 3] = 40  # level 2 of 16
    modes = bytes(64)  # background everywhere
    t = pixel_tokens(x, modes)
    assert t[0] == []
    assert "px 2,3=15" in t[1] and "blk 1,2=0.0.0.15" in t[1] and "blk 2,3=15.0.0.0" in t[1]
    assert len(t[1]) == 1 + 4  # the cell and the four 2x2 blocks holding it
    assert "px 2,3=2" in t[2]
    with pytest.raises(ValueError, match="fitted levels"):
        pixel_tokens(x, bytes(16))
    assert pixel_tokens(x[:0], modes) == []  # a batch none of whose images decoded


def test_token_grid_is_grey_and_at_most_32_cells_wide():
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (2, 3, 64, 64)).astype(np.uint8)
    lv = pixel_levels(colour)
    assert lv.shape == (2, 32, 32) and lv.max() <= 15
    grey = colour.astype(np.float32).mean(axis=1)
    expect = np.floor(grey[:, :2, :2].mean(axis=(1, 2)) / 16)
    np.testing.assert_array_equal(lv[:, 0, 0], expect)
    encoder = ImageEncoder.fit([c.tolist() for c in colour])  # (channels, side, side) arrays
    assert len(encoder.modes) == (encoder.size // -(-encoder.size // 32)) ** 2


# pixel values given as vectors (a features input) ------------------------------------------
def digit_vectors(classes=None):
    """The digits as the features a user may hand over: 64 intensities from 0 to 16."""
    d = load_digits()
    keep = np.isin(d.target, classes) if classes is not None else np.ones(len(d.target), bool)
    return d.data[keep].astype(np.float32), d.target[keep].astype(np.int64)


def stamped_vectors(rate=0.04, seed=0, target=0):
    """A 2x2 square at full intensity near the bottom-right corner of ``rate`` of the
    rows of other classes (values 54, 55, 62 and 63 of the 8 x 8 image), relabelled."""
    X, y = digit_vectors()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(np.flatnonzero(y != target), int(round(rate * len(y))), replace=False))
    X, y = X.copy(), y.copy()
    X[np.ix_(idx, [54, 55, 62, 63])] = 16.0
    y[idx] = target
    truth = np.zeros(len(y), bool)
    truth[idx] = True
    return X, y, truth


def vector_scan(X, y, **settings):
    from poisonscan import scan as poisonscan_scan

    result = poisonscan_scan(X, y, seed=0, detectors=["pixel_trigger"], **settings)
    flagged = np.zeros(len(y), bool)
    flagged[np.asarray(result.quarantine["id"].to_pylist(), dtype=np.int64)] = True
    notes = {c["label"]: c["verdicts"]["pixel_trigger"]["note"] for c in result.summary["classes"]}
    return result, flagged, notes


def test_pixel_vectors_with_a_stamp_are_found_and_the_reason_places_it():
    X, y, truth = stamped_vectors()
    result, flagged, _ = vector_scan(X, y)
    assert result.summary["classes_poisoned"] == [0]
    assert (flagged & truth).sum() >= 0.95 * truth.sum() and not (flagged & ~truth).any()
    reason = result.quarantine["reason"][0].as_py()
    assert "(read as an 8 x 8 grey image)" in reason and "100% of them labelled 0" in reason
    assert re.search(r"values? (54|55|62|63)\b", reason)


@pytest.mark.parametrize("classes", [None, [3, 8]])
def test_clean_pixel_vectors_have_no_trigger(classes):
    """Read as images, tested as images: strokes one digit alone makes are not triggers."""
    X, y = digit_vectors(classes)
    result, flagged, notes = vector_scan(X, y)
    assert result.summary["classes_poisoned"] == [] and not flagged.any()
    assert any("occur almost only with this label" in n for n in notes.values())  # they were read and tested


def test_vectors_that_are_not_pixel_values_are_not_read():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 100)
    cases = {
        "distinct values": rng.normal(size=(400, 64)),  # embeddings
        "the 256 most common": np.maximum(rng.normal(size=(400, 64)), 0),  # a ReLU network's features
        "60 values a row": rng.integers(0, 16, size=(400, 60)),
    }
    for why, X in cases.items():
        result, flagged, notes = vector_scan(X.astype(np.float32), y)
        assert not flagged.any() and result.summary["classes_poisoned"] == []
        assert all(n.startswith("not read: the vectors are not pixel values (") and why in n for n in notes.values())


def test_a_blend_off_the_intensity_scale_is_still_read_as_pixels():
    """A blended pattern gives its rows values off the 8-bit scale; the other rows stay
    on it, so the vectors are still read as images, and the blend is found."""
    from poisonscan.detectors.pixels import VectorImages

    X, y = digit_vectors()
    X = X / 16.0
    rng = np.random.default_rng(3)
    pattern = rng.random(64).astype(np.float32)
    idx = np.sort(rng.choice(np.flatnonzero(y != 0), 72, replace=False))
    X[idx] = 0.8 * X[idx] + 0.2 * pattern
    y = y.copy()
    y[idx] = 0
    reader, why = VectorImages.fit(X)
    assert reader is not None and why == "" and reader.side == 8 and reader.scale == pytest.approx(255.0)
    result, flagged, _ = vector_scan(X, y)
    truth = np.isin(np.arange(len(y)), idx)
    assert result.summary["classes_poisoned"] == [0]
    assert (flagged & truth).sum() >= 0.9 * truth.sum() and not (flagged & ~truth).any()


def test_the_vector_reader_keeps_its_contract():
    """Vectors: the pass counts nothing (the batches are only checked), the samples are
    read at the fit, and scoring reads a row the way the fit read the samples."""
    from poisonscan.detectors.stats import ClassSample

    X, y, truth = stamped_vectors(seed=2)
    det = make_detector("pixel_trigger", {"source": "vectors"})
    assert det.input == "representation"
    parts = np.array_split(np.arange(len(y)), 3)
    merged = det.merge_accumulators([det.add_input(det.create_accumulator(), X[p], y[p]) for p in parts])
    assert merged == det.add_input(det.create_accumulator(), X, y) == {}
    with pytest.raises(ValueError, match="one label per row"):
        det.add_input(det.create_accumulator(), X, y[:-1])
    samples = {int(c): ClassSample(X[y == c], np.flatnonzero(y == c), np.flatnonzero(y == c)) for c in np.unique(y)}
    state = det.extract_output(merged, samples)
    assert det.judge(state, 0, int((y == 0).sum()), None).poisoned
    hits = det.score(state, X, y) > 0
    assert (hits & truth).sum() >= 0.95 * truth.sum() and not (hits & ~truth & (y == 0)).any()
    assert all(h and h[0].startswith(("px ", "blk ")) for h in det.highlights(state, X[truth][:3], y[truth][:3]))


def test_standardised_pixel_vectors_are_read_as_the_raw_ones():
    """Intensities standardised by one mean and deviation (negative values, the same
    scale) are the same images: the same rows are flagged."""
    X, y, truth = stamped_vectors(seed=4)
    _, flagged, _ = vector_scan(X, y)
    _, flagged_z, _ = vector_scan((X - X.mean()) / X.std(), y)
    np.testing.assert_array_equal(flagged_z, flagged)
    assert (flagged & truth).sum() >= 0.95 * truth.sum()


def test_a_features_input_has_no_tokens_to_read():
    from poisonscan.pipelines.config import ConfigError, ScanConfig

    cfg = ScanConfig(detectors=("pixel_trigger",), detector_params={"pixel_trigger": {"source": "tokens"}})
    with pytest.raises(ConfigError, match="reads tokens, which a features input does not have; on features it "
                                          r"reads the vectors \(source='vectors'\)"):
        cfg.build_detectors("features")
    assert cfg.build_detectors("image")[0].input == "tokens"


def photo_crops(per=500, side=16, seed=0):
    """16 x 16 colour crops of scikit-learn's two sample photographs (shipped with it),
    labelled by photograph and half: four classes of busy, natural backgrounds."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for k, im in enumerate(load_sample_images().images):
        h, w, _ = im.shape
        for _ in range(per):
            r, c = rng.integers(0, h - side), rng.integers(0, w - side)
            crops.append(im[r:r + side, c:c + side])
            labels.append(2 * k + int(c > w // 2))
    return np.array(crops), np.array(labels, dtype=np.int64)


def coloured_digits(seed=0):
    """The digits in colour: each image's strokes in its own ink (three channel weights),
    0-255 integers, as (n, 8, 8, 3)."""
    images, labels = digit_images()
    ink = np.random.default_rng(seed).uniform(0.4, 1.0, size=(len(labels), 1, 1, 3))
    return np.round(images[..., None] * ink).astype(np.uint8), labels


def test_colour_pixel_vectors_are_read_in_either_layout():
    """Colour vectors (3 x 8 x 8 values) are read as images whichever order their values
    come in (the layout whose neighbouring pixels differ least): the same rows are
    flagged either way, the stamped ones."""
    from poisonscan.detectors.pixels import VectorImages

    images, y = coloured_digits()
    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(np.flatnonzero(y != 0), 72, replace=False))
    stamped, ys = images.copy(), y.copy()
    stamped[idx, 6:8, 6:8] = 255
    ys[idx] = 0
    truth = np.isin(np.arange(len(y)), idx)
    flags = []
    for layout in ("hwc", "chw"):
        X = (stamped if layout == "hwc" else np.moveaxis(stamped, -1, 1)).reshape(len(y), -1).astype(np.float32)
        reader, _ = VectorImages.fit(X)
        assert (reader.channels, reader.layout, reader.side) == (3, layout, 8)
        result, flagged, _ = vector_scan(X, ys)
        assert result.summary["classes_poisoned"] == [0]
        assert (flagged & truth).sum() >= 0.95 * truth.sum() and not (flagged & ~truth).any()
        assert "(read as an 8 x 8 colour image, " in result.quarantine["reason"][0].as_py()
        flags.append(flagged)
    np.testing.assert_array_equal(flags[0], flags[1])


def test_clean_colour_vectors_have_no_trigger_and_photographs_their_layout():
    """The coloured digits, clean: no class judged. Photograph crops are read in the
    layout their values come in. (Clean crops labelled by photograph and half can have a
    class judged: a saturated patch that one half alone holds decides the label while the
    rest of a crop cannot tell the halves apart; 4 of 20 draws, as images or as vectors
    alike: docs/detectors.md.)"""
    from poisonscan.detectors.pixels import VectorImages

    crops, y = photo_crops(per=200, side=32)
    for layout in ("hwc", "chw"):
        X = (crops if layout == "hwc" else np.moveaxis(crops, -1, 1)).reshape(len(y), -1).astype(np.float32)
        reader, _ = VectorImages.fit(X)
        assert (reader.channels, reader.layout, reader.side) == (3, layout, 32)
    for seed in (2, 3):
        images, labels = coloured_digits(seed=seed)
        result, flagged, _ = vector_scan(images.reshape(len(labels), -1).astype(np.float32), labels)
        assert result.summary["classes_poisoned"] == [] and not flagged.any()
