"""research.case_gain: the per-case gain against hand-computed numbers, and the
command (`python -m research.case_gain`) on a run folder (result, bad inputs as one
line with nothing written)."""

import numpy as np
import pytest

from research import case_gain as case_gain_lib
from tests.helpers import check_run_row_bad_inputs, run_row_command


def _psnr(t, p):
    """Hand-computed mean slice PSNR of [0, 1] images."""
    return np.mean([10 * np.log10(1 / np.mean((a - b) ** 2)) for a, b in zip(t, p)])


def test_gain_per_case_against_hand_computed_numbers():
    rng = np.random.default_rng(0)
    truth01 = rng.uniform(0.05, 0.7, size=(5, 8, 8, 1))
    noise = rng.normal(0, 0.02, size=truth01.shape)
    # Case a drawn 25 % too dark, case b 20 % too bright, both with a little noise.
    cases = ["a", "a", "b", "b", "b"]
    scale = np.array([0.75, 0.75, 1.2, 1.2, 1.2])[:, None, None, None]
    fake01 = np.clip(truth01 * scale + noise, 0, 1)
    result = case_gain_lib.case_gain_scores(2 * truth01 - 1, 2 * fake01 - 1, cases)
    for case, rows in (("a", [0, 1]), ("b", [2, 3, 4])):
        t, p = truth01[rows], fake01[rows]
        assert result["gains"][case] == pytest.approx(np.sum(t * p) / np.sum(p * p), rel=1e-9)
    assert result["gains"]["a"] == pytest.approx(1 / 0.75, rel=0.05)
    assert result["gains"]["b"] == pytest.approx(1 / 1.2, rel=0.05)
    fitted = fake01.copy()
    fitted[:2] *= result["gains"]["a"]
    fitted[2:] *= result["gains"]["b"]
    assert result["psnr"] == pytest.approx(_psnr(truth01, fake01), abs=1e-3)
    assert result["psnr_case_gain"] == pytest.approx(
        _psnr(truth01, np.clip(fitted, 0, 1)), abs=1e-3
    )
    assert result["psnr_case_gain"] > result["psnr"] + 5  # the scale was most of the error
    gains = [result["gains"]["a"], result["gains"]["b"]]
    assert result["gain_mean"] == pytest.approx(np.mean(gains))
    assert result["gain_std"] == pytest.approx(np.std(gains))
    # Right scale already: gains 1, nothing gained.
    same = case_gain_lib.case_gain_scores(2 * truth01 - 1, 2 * truth01 - 1, cases)
    assert same["gains"] == pytest.approx({"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="must match"):
        case_gain_lib.case_gain_scores(truth01, truth01, cases[:3])


@pytest.mark.slow
def test_command_on_a_run_and_its_bad_inputs(run_dir, tfrecord_dir, tmp_path):
    result, saved = run_row_command(
        case_gain_lib.main, run_dir, tfrecord_dir, tmp_path / "gain.json"
    )
    assert "t2->flair: PSNR" in result.stdout and "after each case's best gain" in result.stdout
    assert saved["row"] == "t2->flair" and saved["slices"] > 0
    assert len(saved["gains"]) >= 1 and np.isfinite(saved["psnr_case_gain"])
    check_run_row_bad_inputs(case_gain_lib.main, run_dir, tfrecord_dir, tmp_path)
