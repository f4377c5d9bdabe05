"""Shards of every brain slice (`--source-slices all`) on a tiny BraTS root: every slice
that holds brain and no empty one; the default stays the paper's 5; each training epoch
draws the same number of slices from every case."""

import collections
import json

import numpy as np
import pytest

from dygan_tf import build_tfrecords
from dygan_tf.config.run_config import get_preset
from dygan_tf.data import DatasetSpec, epoch_draw, pipeline, preprocessing
from dygan_tf.data.manifest import read_manifest
from dygan_tf.data.shard_check import verify_or_raise
from dygan_tf.training import run as training_run
from dygan_tf.utils.errors import UserError
from tests.helpers import one_error_line, run_in_process, write_tiny_root

SHAPE = (12, 12, 96)  # the default range 75:86 fits in the depth
SIZE = 32
# Per case: the axial runs of brain, and one slice holding a single brain voxel. The
# gaps between them are empty slices, as is every slice outside.
BRAIN = {
    "Tiny_0": ([(60, 90)], 93),
    "Tiny_1": ([(70, 80), (81, 92)], 94),  # slice 80 empty between two runs
    "Tiny_2": ([(72, 87)], 70),
    "Tiny_3": ([(65, 95)], 58),
}
BUILD = ["--image-size", SIZE, "--train-hgg", 3, "--train-lgg", 0, "--workers", 1]


def _expected_slices(cid):
    runs, single = BRAIN[cid]
    return sorted([k for lo, hi in runs for k in range(lo, hi)] + [single])


def _write_root(root):
    masks = {}
    for cid, (runs, single) in BRAIN.items():
        masks[cid] = np.zeros(SHAPE, bool)
        for lo, hi in runs:
            masks[cid][2:10, 3:9, lo:hi] = True
        masks[cid][5, 5, single] = True
    write_tiny_root(root, masks)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_root")
    _write_root(root)
    return root


@pytest.fixture(scope="module")
def every_slice_dir(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("every_slice") / "shards"
    result = run_in_process(
        build_tfrecords.main,
        *["--brats-root", tiny_root, "--out", out, "--source-slices", "all", *BUILD],
    )
    assert result.returncode == 0, result.stderr
    return out


def _slices_read(folder, split, **fields):
    """[(case id, slice index)] of every slice `make_dataset` yields, with its brain mask."""
    found = []
    for *_, meta in pipeline.make_dataset(folder, split, return_meta=True, **fields):
        for r in range(0, meta["case_id"].shape[0], 3):  # 3 rows a slice
            found.append(
                (
                    meta["case_id"][r].numpy().decode(),
                    int(meta["slice_index"][r]),
                    meta["brain_mask"][r].numpy(),
                )
            )
    return found


# ------------------------------------------------------------------ pure functions
def test_brain_slices_are_those_with_at_least_the_minimum_of_brain():
    mask = np.zeros((4, 4, 9), bool)
    mask[0, 0, 2] = True
    mask[:2, :2, 5] = True
    mask[:, :, 6] = True
    assert preprocessing.brain_slices(mask) == [2, 5, 6]
    assert preprocessing.brain_slices(mask, min_voxels=4) == [5, 6]
    with pytest.raises(ValueError, match="min_voxels"):
        preprocessing.brain_slices(mask, min_voxels=0)


def test_source_slices_parse_all_or_a_range():
    assert preprocessing.parse_source_slices("all") == preprocessing.ALL_SLICES
    assert preprocessing.parse_source_slices("75:86") == (75, 86)
    for text in ("al", "", "1:2:3"):
        with pytest.raises(UserError, match="START:STOP like 75:86, or all"):
            preprocessing.parse_source_slices(text)
    with pytest.raises(UserError, match="START < STOP"):
        preprocessing.parse_source_slices("80:70")


def test_a_draw_takes_the_same_number_from_every_case():
    cases = [{"case_id": f"c{i}", "slices": list(range(10 * i, 10 * i + 4 + i))} for i in range(4)]
    drawn = epoch_draw.draw(cases, 4, seed=3)
    for case in cases:
        picked = drawn[case["case_id"]]
        assert len(picked) == 4 == len(set(picked)) and set(picked) <= set(case["slices"])
    assert epoch_draw.draw(cases, 4, seed=3) == drawn
    assert epoch_draw.draw(cases, 9, seed=3)["c1"] == cases[1]["slices"]  # holds fewer
    assert any(epoch_draw.draw(cases, 4, seed=s) != drawn for s in range(4, 8))
    for bad in (dict(per_case=2), dict(per_case=0, seed=1)):  # no seed; none drawn
        with pytest.raises(ValueError, match="per_case must be >= 1 and drawn with a seed"):
            DatasetSpec(**bad)


# ------------------------------------------------------------------------ building
def test_every_slice_shards_hold_every_brain_slice_and_no_empty_one(every_slice_dir):
    manifest = read_manifest(every_slice_dir)
    assert manifest["source_slices"] == "all" and manifest["per_volume"] is None
    assert manifest["brain_slices"]["min_voxels"] == 1
    assert epoch_draw.kind_of(manifest) == epoch_draw.PER_CASE
    verify_or_raise(str(every_slice_dir))
    for split in ("train", "test"):
        cases = manifest["splits"][split]["cases"]
        assert [c["slices"] for c in cases] == [_expected_slices(c["case_id"]) for c in cases]
        # Evaluation reads a split whole: every slice of every case, each with brain.
        found = _slices_read(every_slice_dir, split)
        assert sorted((c, k) for c, k, _ in found) == sorted(
            (c["case_id"], k) for c in cases for k in c["slices"]
        )
        assert all(mask.any() for *_, mask in found)
        assert manifest["splits"][split]["records"] == len(found)
    assert len(manifest["splits"]["test"]["cases"]) == 1


def test_the_default_stays_the_papers_5_and_its_manifest_as_it_was(tiny_root, tmp_path):
    out = tmp_path / "default"
    result = run_in_process(build_tfrecords.main, "--brats-root", tiny_root, "--out", out, *BUILD)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    assert manifest["source_slices"] == [75, 86] and manifest["per_volume"] == 5
    with open("tests/data/release_0_1_0/shards/manifest.json", encoding="utf-8") as f:
        released = json.load(f)
    assert list(manifest) == ["format", "schema", "source_root", "layout", *list(released)[3:]]
    for split in ("train", "test"):
        for case in manifest["splits"][split]["cases"]:
            assert len(case["slices"]) == 5
            assert set(case["slices"]) <= set(range(75, 86)) - {80}  # the most brain
    assert epoch_draw.kind_of(manifest) == epoch_draw.EVERY_SLICE
    assert training_run.count_slices(out, [], keep=False) == 15  # one pass, as before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--source-slices", "all", "--per-volume", 5], "--per-volume: "),
        (["--source-slices", "al"], "--source-slices 'al': expected START:STOP"),
        (["--source-slices", "all", "--per-volume", 0], "--per-volume: expected >= 1"),
    ],
)
def test_bad_source_slices_is_one_line_and_writes_nothing(tiny_root, tmp_path, args, needle):
    out = tmp_path / "out"
    result = run_in_process(
        build_tfrecords.main, "--brats-root", tiny_root, "--out", out, *BUILD, *args
    )
    assert needle in one_error_line(result)
    assert not out.exists()


def test_an_unknown_epoch_draw_is_refused_naming_the_manifest(every_slice_dir, tmp_path):
    manifest = json.loads((every_slice_dir / "manifest.json").read_text())
    manifest["epoch_draw"]["kind"] = "per_grade"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="manifest.json: epoch_draw .*per_grade"):
        read_manifest(tmp_path)


# ------------------------------------------------------------------------ training
def test_each_epoch_draws_the_same_number_of_slices_from_every_case(every_slice_dir):
    """Through `training_dataset`: one epoch of one-slice batches takes `per_case`
    slices of each kept training case (the fewest any holds), none twice; the next
    epoch draws others."""
    manifest = read_manifest(every_slice_dir)
    cases = manifest["splits"]["train"]["cases"]
    validation = training_run.choose_validation_cases(every_slice_dir, 0)
    kept = [c for c in cases if c["case_id"] not in validation]
    per_case = min(len(c["slices"]) for c in kept)
    assert len(kept) == 2 and len({len(c["slices"]) for c in kept}) == 2  # uneven cases
    steps = training_run.count_slices(every_slice_dir, validation, keep=False)
    assert steps == per_case * len(kept)
    # Each source slice identified by its pixels (random voxels: no two alike).
    source = {
        image[0, ..., 0].numpy().tobytes(): (
            meta["case_id"][0].numpy().decode(),
            int(meta["slice_index"][0]),
        )
        for image, _, _, meta in pipeline.make_dataset(every_slice_dir, "train", return_meta=True)
    }
    assert len(source) == sum(len(c["slices"]) for c in cases)
    config = get_preset("tiny").override(epochs=2)
    ds = training_run.training_dataset(
        every_slice_dir, config, validation, 1, steps_per_epoch=steps
    )
    drawn = [source[image[0, ..., 0].numpy().tobytes()] for image, _, _ in ds]
    epochs = drawn[:steps], drawn[steps:]
    for epoch in epochs:
        assert len(set(epoch)) == steps  # no slice twice within an epoch
        counts = collections.Counter(cid for cid, _ in epoch)
        assert counts == {c["case_id"]: per_case for c in kept}
    assert set(epochs[0]) != set(epochs[1])


def test_validation_reads_a_fixed_draw_of_each_held_out_case(
    every_slice_dir, tiny_root, tmp_path, monkeypatch
):
    """Every-slice shards: validation scores `VALIDATION_SLICES` of each held-out case
    (every slice of one that holds fewer), the same slices in every call; the paper's
    shards are validated on every slice of the held-out cases, as before."""
    monkeypatch.setattr(training_run, "VALIDATION_SLICES", 4)  # the tiny cases hold 16-31
    cases = {c["case_id"]: c for c in read_manifest(every_slice_dir)["splits"]["train"]["cases"]}
    validation = training_run.choose_validation_cases(every_slice_dir, 0)
    config = get_preset("tiny")

    def read(shards, held_out):
        ds = training_run.validation_dataset(shards, config, held_out)
        return sorted(
            {(m["case_id"][0].numpy().decode(), int(m["slice_index"][0])) for *_, m in ds}
        )

    seen = read(every_slice_dir, validation)
    assert seen == read(every_slice_dir, validation)
    counts = collections.Counter(cid for cid, _ in seen)
    limit = training_run.VALIDATION_SLICES
    assert counts == {cid: min(limit, len(cases[cid]["slices"])) for cid in validation}
    assert any(len(cases[cid]["slices"]) > limit for cid in validation)  # a real draw
    assert {k for _, k in seen} <= {k for cid in validation for k in cases[cid]["slices"]}

    paper = tmp_path / "paper"
    result = run_in_process(build_tfrecords.main, "--brats-root", tiny_root, "--out", paper, *BUILD)
    assert result.returncode == 0, result.stderr
    paper_cases = read_manifest(paper)["splits"]["train"]["cases"]
    held_out = training_run.choose_validation_cases(paper, 0)
    assert read(paper, held_out) == sorted(
        (c["case_id"], k) for c in paper_cases if c["case_id"] in held_out for k in c["slices"]
    )
