"""`translate --batch N | auto` and reading the next case ahead: auto keeps the fastest of
4/8/16/32 and says so, the outputs are the same bits whatever the batch, a root's errors,
notes and summary are those of a run that reads each case in its turn."""

import nibabel as nib
import numpy as np
import pytest

from dygan_tf.inference.batch_choice import (
    CANDIDATES,
    ROUNDS,
    BatchChoice,
    parse_batch_slices,
)
from dygan_tf.utils.errors import UserError
from tests.helpers import one_error_line, run_in_process

TARGETS = ("flair", "t1", "t1ce")


class _FakeModel:
    """Row-wise model (output = 2 x the first channel) on a fake clock: a call of n rows
    takes `overhead + per_row(n) * n` seconds. Records each call's row count."""

    inputs, image_size = "single", 8

    def __init__(self, clock, overhead=1.0, per_row=lambda n: 0.1):
        self.clock, self.overhead, self.per_row, self.calls = clock, overhead, per_row, []

    def __call__(self, images, conditions):
        n = len(images)
        self.calls.append(n)
        self.clock.now += self.overhead + self.per_row(n) * n
        return 2 * np.asarray(images[..., :1], np.float32)


class _Clock:
    now = 0.0

    def __call__(self):
        return self.now


def _rows(slices, per_slice=3, seed=0):
    images = np.random.default_rng(seed).normal(size=(slices * per_slice, 8, 8, 1))
    return images.astype(np.float32), np.zeros((slices * per_slice, 12), np.float32)


@pytest.mark.parametrize(
    "per_row, best",
    [
        (lambda n: 0.1, 32),  # a fixed cost per call: the largest call wins
        (lambda n: 0.1 if n <= 24 else 0.5, 8),  # past 8 slices (24 rows) rows get dearer
    ],
)
def test_auto_keeps_the_fastest_candidate_and_prints_it(per_row, best, capsys):
    clock = _Clock()
    model = _FakeModel(clock, per_row=per_row)
    choice = BatchChoice("auto", clock=clock)
    wrapped, per_call = choice.for_case(model, 3, "case_A")
    assert per_call == max(CANDIDATES) and wrapped.image_size == 8  # the model's own
    images, conditions = _rows(32)
    np.testing.assert_array_equal(wrapped(images, conditions), 2 * images)
    assert choice.size == best and list(choice.slices_per_s) == list(CANDIDATES)
    # A warm-up call of each size, then rounds of the 32 slices in calls of each size.
    timed = [[c * 3] * (32 // c) for c in CANDIDATES]
    assert model.calls == [c * 3 for c in CANDIDATES] + ROUNDS * [n for t in timed for n in t]
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"batch auto: {best} slices per model call"), line
    assert "case_A's first 32 slices" in line and all(f"{c} -> " in line for c in CANDIDATES)
    # The rest of the case (and every later case) goes in calls of the chosen size.
    model.calls.clear()
    images, conditions = _rows(20)
    np.testing.assert_array_equal(wrapped(images, conditions), 2 * images)
    assert model.calls == [best * 3] * (20 // best) + ([20 % best * 3] if 20 % best else [])
    assert choice.for_case(model, 2) == (model, best)


def test_auto_times_what_fits_a_small_case_and_a_number_is_kept(capsys):
    clock = _Clock()
    choice = BatchChoice("auto", clock=clock)
    model = _FakeModel(clock)
    wrapped, _ = choice.for_case(model, 2)
    images, conditions = _rows(3, per_slice=2)  # fewer slices than any candidate
    np.testing.assert_array_equal(wrapped(images, conditions), 2 * images)
    assert choice.size is None and model.calls == [6] and capsys.readouterr().out == ""
    images, conditions = _rows(20, per_slice=2)
    np.testing.assert_array_equal(wrapped(images, conditions), 2 * images)
    assert list(choice.slices_per_s) == [4, 8, 16] and choice.size == 16
    assert "first 16 slices" in capsys.readouterr().out
    fixed = BatchChoice(8, verbose=False)
    assert fixed.for_case(model, 3) == (model, 8) and not fixed.auto


def test_batch_values():
    assert [parse_batch_slices(v) for v in ("auto", " AUTO", "16", 16, 1)] == [
        "auto", "auto", 16, 16, 1,
    ]  # fmt: skip
    for bad in ("0", 0, "-4", -4, "1.5", "", "fast", "²", None, True):
        with pytest.raises(UserError, match="expected a positive number of slices or auto"):
            parse_batch_slices(bad)
    with pytest.raises(ValueError, match="Received: batch_slices=0"):
        BatchChoice(0)


@pytest.mark.parametrize("value", ["x", "0", "-2", "2.5", ""])
def test_a_bad_batch_is_one_line_exit_2(value, tmp_path):
    from dygan_tf import translate

    argv = ["--model", tmp_path / "m", "--input", tmp_path, "--out-dir", tmp_path / "o"]
    line = one_error_line(run_in_process(translate.main, *argv, "--batch", value))
    assert line == f"error: --batch: expected a positive number of slices or auto, found {value!r}"
    assert not (tmp_path / "o").exists()


def _head(shape=(40, 44, 37), seed=0, nan=False):
    """A small T2-like volume: a textured ellipsoid, zero outside, every axial slice brain
    (37: an odd count, so the last call of every batch size is a short one)."""
    rng = np.random.default_rng(seed)
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    r2 = sum(((g - n / 2) / (0.45 * n)) ** 2 for g, n in zip(grid[:2], shape[:2]))
    r2 = np.broadcast_to(r2, shape)
    volume = np.where(r2 < 1, 500 + 100 * rng.random(shape), 0).astype(np.float32)
    if nan:
        volume[0, 0, :3] = np.nan  # outside the field of view of a resampled scan
    return volume


@pytest.fixture(scope="module")
def predictor(run_dir):
    from dygan_tf.inference.predictor import load_predictor

    return load_predictor(str(run_dir))


@pytest.mark.slow
def test_outputs_are_the_same_bits_whatever_the_batch(predictor):
    """Each row of a call is computed on its own. On a CPU, TensorFlow's instance norm
    reduces the last row of a call with an odd number of rows in another order (~5e-6
    apart, measured); every candidate is a multiple of 4 slices, so a fixed batch and
    auto make calls of the same parity and the volumes are bit-identical."""
    from dygan_tf.inference.translation import synthesize_case

    volume, affine = _head(), np.diag([-1.0, -1.0, 1.0, 1.0])

    def synthesize(batch):
        model, per_call = BatchChoice(batch, verbose=False).for_case(predictor, len(TARGETS))
        return synthesize_case({"t2": volume}, affine, TARGETS, model, "t2", per_call)[0]

    four = synthesize(4)
    for batch in (32, "auto"):
        out = synthesize(batch)
        for target in TARGETS:
            np.testing.assert_array_equal(out[target], four[target], f"{batch} {target}")


def _root(tmp_path):
    """Four single-T2 cases: B's file is truncated, C's has NaN voxels (a `note:`)."""
    root = tmp_path / "root"
    for index, cid in enumerate(("A", "B", "C", "D")):
        (root / cid).mkdir(parents=True)
        image = nib.Nifti1Image(_head(seed=index, nan=cid == "C"), np.eye(4))
        nib.save(image, root / cid / f"{cid}_t2.nii.gz")
    broken = root / "B" / "B_t2.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])
    return root


@pytest.mark.slow
def test_reading_ahead_keeps_each_case_line_order_and_summary(predictor, tmp_path, capsys):
    from dygan_tf.inference.batch_translation import summary_table, translate_root

    root = _root(tmp_path)
    runs = {}
    for read_ahead in (False, True):
        out = tmp_path / f"out_{read_ahead}"
        rows = translate_root(
            str(root), str(out), lambda: predictor, batch_slices=8, verbose=False,
            read_ahead=read_ahead,
        )  # fmt: skip
        captured = capsys.readouterr()
        runs[read_ahead] = (summary_table(rows), captured.err.splitlines(), out)
    (table, err, out), (table_ahead, err_ahead, out_ahead) = runs[False], runs[True]
    assert table_ahead == table and err_ahead == err
    assert [line.split(":")[0] for line in err] == ["failed", "note"], err
    assert err[0].startswith("failed: B: ") and "B_t2.nii.gz" in err[0] and "C_t2" in err[1]
    assert "3 written, 0 skipped, 1 failed of 4 cases" in table
    names = sorted(p.name for p in out_ahead.iterdir())  # nothing of B, no temporary file
    assert names == sorted(p.name for p in out.iterdir())
    assert names == [f"{c}_{t}_synth.nii.gz" for c in "ACD" for t in TARGETS]
    for name in names:
        np.testing.assert_array_equal(
            nib.load(out_ahead / name).get_fdata(), nib.load(out / name).get_fdata()
        )


@pytest.mark.slow
def test_translate_root_with_batch_auto_says_what_it_chose(run_dir, tmp_path):
    from dygan_tf import translate

    root = _root(tmp_path)
    out = tmp_path / "out"
    argv = ["--model", run_dir, "--input", root, "--out-dir", out, "--batch", "auto"]
    result = run_in_process(translate.main, *argv)
    assert result.returncode == 1, result.stderr  # B failed; the others are written
    chosen = [ln for ln in result.stdout.splitlines() if ln.startswith("batch auto: ")]
    assert len(chosen) == 1 and "on A's first 32 slices" in chosen[0], result.stdout
    assert int(chosen[0].split()[2]) in CANDIDATES
    assert "3 written, 0 skipped, 1 failed of 4 cases" in result.stdout
    failed = [ln for ln in result.stderr.splitlines() if ln.startswith("failed: ")]
    assert len(failed) == 1 and failed[0].startswith("failed: B: ")
