"""Whole-volume evaluation: PSNR/SSIM against an independent numpy reference, name
matching, the split filter, the files written, and bad input refused with one line."""

import csv
import json
import os
import subprocess

import nibabel as nib
import numpy as np
import pytest

from dygan_tf.data import records
from dygan_tf.evaluate_volumes import main
from dygan_tf.evaluation.volumes import evaluate_volumes, match_prediction
from dygan_tf.utils.cli import run_main
from dygan_tf.utils.errors import UserError
from tests.helpers import one_error_line, run_cli

SHAPE = (12, 12, 6)
AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])
CASES = ("Case_1", "Case_10", "Case_2")  # Case_1 is a prefix of Case_10
MODULE = "dygan_tf.evaluate_volumes"


def _save(path, data, affine=AFFINE):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _truth(root, seed=0):
    """Three cases of 12x12x6 int16 volumes: brain = a block, tumour = a smaller one
    (Case_2 has no seg file). Returns {case: {modality or 'seg': array}}."""
    rng = np.random.default_rng(seed)
    volumes = {}
    for index, cid in enumerate(CASES):
        case = {}
        for modality in ("flair", "t1", "t1ce", "t2"):
            data = np.zeros(SHAPE, np.int16)
            data[2:10, 2:11, 1:5] = rng.integers(100, 1000, (8, 9, 4))
            case[modality] = data
        case["t2"][3, 1, 2] = 500  # a voxel only one sequence holds: brain is the union
        seg = np.zeros(SHAPE, np.uint8)
        seg[4:7, 4:8, 2:4] = 2
        seg[5, 5, 2] = 4
        if index < 2:
            case["seg"] = seg
        folder = os.path.join(root, "HGG", cid)
        for key, data in case.items():
            _save(os.path.join(folder, f"{cid}_{key}.nii.gz"), data)
        volumes[cid] = case
    return volumes


def _predictions(pred, truth, seed=1):
    """Ours, another tool's names in a subfolder, and decoys. Returns {(case, mod): array}."""
    rng = np.random.default_rng(seed)
    noisy = (truth["Case_1"]["flair"] * 0.8 + rng.normal(0, 60, SHAPE)).astype(np.float32)
    other = truth["Case_10"]["t2"].astype(np.float32)  # the copy-source baseline
    t1 = truth["Case_2"]["t1"]
    affine_image = (2.0 * t1 + 10.0 * (t1 > 0)).astype(np.float32)
    _save(os.path.join(pred, "Case_1_flair_synth.nii.gz"), noisy)
    _save(os.path.join(pred, "tool", "Case_10", "Case_10-t1c.nii.gz"), other)
    _save(os.path.join(pred, "Case_2_t1.nii"), affine_image)
    _save(os.path.join(pred, "Case_2_seg.nii.gz"), truth["Case_1"]["seg"])  # no modality
    _save(os.path.join(pred, "atlas_flair.nii.gz"), noisy)  # no case id
    return {
        ("Case_1", "flair"): noisy,
        ("Case_10", "t1ce"): other,
        ("Case_2", "t1"): affine_image,
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_volumes")
    truth = _truth(root / "brats")
    preds = _predictions(root / "pred", truth)
    return root, truth, preds


# An independent reference: np.percentile, np.pad and a direct 11x11x11 window sum.
def _unit(volume, brain):
    low, high = np.percentile(volume[brain].astype(np.float64), [0.5, 99.5])
    return np.clip((volume - low) / (high - low), 0.0, 1.0)


def _window_mean(volume):
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    kernel = g[:, None, None] * g[None, :, None] * g[None, None, :]
    padded = np.pad(volume, 5, mode="reflect")
    out = np.zeros(volume.shape)
    h, w, d = volume.shape
    for i, j, k in np.ndindex(11, 11, 11):
        out += kernel[i, j, k] * padded[i : i + h, j : j + w, k : k + d]
    return out


def _reference(truth, pred, region):
    if not region.any():
        return None, None
    mse = np.mean((truth[region] - pred[region]) ** 2)
    psnr = min(10 * np.log10(1 / mse), 100.0) if mse > 0 else 100.0
    x, y = truth * region, pred * region
    mx, my = _window_mean(x), _window_mean(y)
    vx, vy = _window_mean(x * x) - mx**2, _window_mean(y * y) - my**2
    cov = _window_mean(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ssim = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return psnr, ssim[region].mean()


def _expected(truth, preds):
    rows = {}
    for (cid, target), pred in preds.items():
        case = truth[cid]
        brain = np.zeros(SHAPE, bool)
        for m in ("flair", "t1", "t1ce", "t2"):
            brain |= case[m] != 0
        tumour = (case["seg"] > 0) & brain if "seg" in case else np.zeros(SHAPE, bool)
        t, p = _unit(case[target], brain), _unit(pred, brain)
        for name, region in (("brain", brain), ("tumour", tumour), ("outside", brain & ~tumour)):
            psnr, ssim = _reference(t, p, region)
            rows[(cid, target, f"psnr_{name}")] = psnr
            rows[(cid, target, f"ssim_{name}")] = ssim
    return rows


def test_matches_numpy_reference_and_writes_csv_md_json(data, tmp_path):
    root, truth, preds = data
    out = tmp_path / "eval"
    summary = evaluate_volumes(root / "pred", root / "brats", out, verbose=False)
    expected = _expected(truth, preds)
    assert sorted(os.listdir(out)) == ["per_case.csv", "summary.json", "summary.md"]
    with open(out / "per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case_id"], r["target"]) for r in rows] == sorted(preds)
    for row in rows:
        assert row["prediction"].endswith(".nii.gz") or row["prediction"].endswith("_t1.nii")
        for key in ("psnr_brain", "psnr_tumour", "psnr_outside", "ssim_brain", "ssim_tumour"):
            want = expected[(row["case_id"], row["target"], key)]
            if want is None:
                assert row[key] == ""  # Case_2 has no seg: no tumour
            else:
                assert float(row[key]) == pytest.approx(want, abs=2e-4), key
    # A linear map of the truth is the truth after percentile scaling: the cap, SSIM 1.
    case2 = next(r for r in rows if r["case_id"] == "Case_2")
    assert float(case2["psnr_brain"]) == pytest.approx(100.0, abs=1e-3)
    assert float(case2["ssim_brain"]) == pytest.approx(1.0, abs=1e-6)
    assert case2["tumour_voxels"] == "0" and case2["ssim_outside"] == case2["ssim_brain"]
    assert rows[0]["brain_voxels"] == str(8 * 9 * 4 + 1)

    with open(out / "summary.json") as f:
        written = json.load(f)
    assert written == summary
    assert written["cases"] == 3 and len(written["volumes"]) == 3
    assert set(written["targets"]) == {"flair", "t1", "t1ce"}
    flair = written["targets"]["flair"]
    want = expected[("Case_1", "flair", "ssim_brain")]
    assert flair["volumes"] == 1 and flair["ssim_brain"]["n"] == 1
    assert flair["ssim_brain"]["mean"] == pytest.approx(want, abs=1e-6)
    assert flair["ssim_brain"]["std"] == 0.0
    assert written["targets"]["t1"]["psnr_tumour"] == {"mean": None, "std": None, "n": 0}
    markdown = (out / "summary.md").read_text()
    assert "| flair | 1 | " in markdown and f"{want:.4f} ± 0.0000" in markdown
    assert "| t1 | 1 | 100.00 ± 0.00 | n/a |" in markdown


def test_prediction_names():
    ids = ["Case_1", "Case_10", "BraTS-GLI-00000-000"]
    assert match_prediction("Case_1_flair_synth.nii.gz", ids) == ("Case_1", "flair")
    assert match_prediction("Case_10_t1ce_synth.nii.gz", ids) == ("Case_10", "t1ce")
    assert match_prediction("Case_1_t1.nii", ids) == ("Case_1", "t1")  # not t1ce
    assert match_prediction("pred-Case_10.T1CE.nii.gz", ids) == ("Case_10", "t1ce")
    assert match_prediction("BraTS-GLI-00000-000-t2f.nii.gz", ids) == (
        "BraTS-GLI-00000-000",
        "flair",
    )
    assert match_prediction("BraTS-GLI-00000-000-t1n.nii.gz", ids) == ("BraTS-GLI-00000-000", "t1")
    for name in ("Case_1_seg.nii.gz", "Case_100_flair.nii.gz", "Case_1_flair.png", "t2.nii"):
        assert match_prediction(name, ids) is None, name
    with pytest.raises(UserError, match="Case_1_t2_to_flair.nii.gz: names several"):
        match_prediction("Case_1_t2_to_flair.nii.gz", ids)


def _manifest(folder, splits):
    os.makedirs(folder, exist_ok=True)
    manifest = {
        "schema": records.schema_description(),
        "image_size": 64,
        "compression": "gzip",
        "splits": {
            name: {"cases": [{"case_id": c} for c in ids], "shards": []}
            for name, ids in splits.items()
        },
    }
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return os.path.join(folder, "manifest.json")


def test_cli_split_filter(data, tmp_path):
    root, _, _ = data
    path = _manifest(tmp_path / "shards", {"train": ["Case_1"], "test": ["Case_10", "Case_2"]})
    out = tmp_path / "eval"
    result = run_cli(MODULE, "--pred", root / "pred", "--truth", root / "brats",
                     "--split-from", path, "--out", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 predictions outside the split ignored" in result.stdout
    assert "2 volumes of 2 cases" in result.stdout.splitlines()[-1]
    with open(out / "per_case.csv", newline="") as f:
        assert [r["case_id"] for r in csv.DictReader(f)] == ["Case_10", "Case_2"]
    with open(out / "summary.json") as f:
        assert json.load(f)["split"]["name"] == "test"


def _bad_inputs(root, tmp):
    """(extra CLI args, text the error must hold) for each bad input."""
    pred, truth = root / "pred", root / "brats"
    empty = tmp / "empty"
    empty.mkdir()
    broken = tmp / "broken"
    broken.mkdir()
    (broken / "Case_1_flair_synth.nii.gz").write_bytes(b"not a nifti file")
    small = tmp / "small"
    _save(small / "Case_1_flair_synth.nii.gz", np.ones((12, 12, 5), np.float32))
    moved = tmp / "moved"
    _save(moved / "Case_1_flair_synth.nii.gz", np.ones(SHAPE, np.float32), np.eye(4))
    twice = tmp / "twice"
    for name in ("Case_1_flair_synth.nii.gz", "Case_1-FLAIR.nii"):
        _save(twice / name, np.ones(SHAPE, np.float32))
    manifest = _manifest(tmp / "shards", {"test": ["Case_1"]})
    (tmp / "list").mkdir()
    (tmp / "list" / "manifest.json").write_text("[1, 2]")
    return {
        "no pred": (["--pred", tmp / "nope", "--truth", truth], "nope: not a folder"),
        "no truth": (["--pred", pred, "--truth", tmp / "nope"], "nope: not a folder"),
        "no cases": (["--pred", pred, "--truth", empty], "found no case folders"),
        "no predictions": (["--pred", empty, "--truth", truth], "empty: no predictions found"),
        "unreadable": (["--pred", broken, "--truth", truth], "unreadable NIfTI"),
        "shape": (["--pred", small, "--truth", truth], "Case_1_flair.nii.gz"),
        "affine": (["--pred", moved, "--truth", truth], "Case_1_flair.nii.gz"),
        "twice": (["--pred", twice, "--truth", truth], "both predictions of Case_1 flair"),
        "split alone": (["--pred", pred, "--truth", truth, "--split", "test"], "--split-from"),
        "unknown split": (
            ["--pred", pred, "--truth", truth, "--split-from", manifest, "--split", "val"],
            "no split 'val'",
        ),
        "not a manifest": (
            ["--pred", pred, "--truth", truth, "--split-from", tmp / "list"],
            "expected a JSON object",
        ),
        "no manifest": (
            ["--pred", pred, "--truth", truth, "--split-from", empty],
            "manifest.json: not found",
        ),
    }


def _run_in_process(capsys, args):
    """`python -m dygan_tf.evaluate_volumes args` in this process (each fresh process
    pays TensorFlow's start-up, which `import dygan_tf` triggers), as a CompletedProcess."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, [str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, exit_info.value.code, captured.out, captured.err)


# A fresh process for one of them: the real command line, end to end.
IN_SUBPROCESS = ("shape",)


def test_bad_inputs_one_line_exit_2_nothing_written(data, tmp_path, capsys):
    root, _, _ = data
    for name, (args, text) in _bad_inputs(root, tmp_path).items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        args = [*args, "--out", out]
        if name in IN_SUBPROCESS:
            result = run_cli(MODULE, *args)
        else:
            result = _run_in_process(capsys, args)
        line = one_error_line(result)
        assert text in line, (name, line)
        if name in ("shape", "affine"):
            assert "Case_1_flair_synth.nii.gz" in line, line  # both files named
        assert not out.exists(), name


def test_brasyn_scores_equal_the_challenges_code_with_torchmetrics():
    """BraSyn's ssim.py, step for step, with torchmetrics' SSIM, on small volumes with a
    tumour: whole-array percentiles, regions with background, the value (1e-4)."""
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics")
    from torchmetrics.functional.image import structural_similarity_index_measure

    from dygan_tf.evaluation import volume_metrics as vm

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 900, (26, 22, 18)).astype(np.int16)
    truth[:4] = 0  # background: it moves the whole-array percentiles
    pred = (truth + rng.normal(0, 80, truth.shape)).astype(np.float32)
    seg = np.zeros(truth.shape, np.uint8)
    seg[8:15, 6:13, 5:11], seg[10:12, 8:10, 6:8] = 2, 3

    def clip(x):  # BraSyn's __percentile_clip
        low, high = np.percentile(x, [0.5, 99.5])
        low = 0 if low < 0 else low
        return (np.clip(x, low, high) - low) / (high - low)

    np.testing.assert_allclose(vm.brasyn_percentile_clip(truth), clip(truth), atol=1e-12)
    t, p = clip(truth), clip(pred)
    mask = (seg > 0).astype(np.int64)
    ssim = tm.image.StructuralSimilarityIndexMeasure()

    def theirs(a, b):
        a, b = torch.from_numpy(a[None, None]), torch.from_numpy(b[None, None])
        return float(ssim(preds=a, target=b))

    expected = (theirs(p * mask, t * mask), theirs(p * (1 - mask), t * (1 - mask)))
    np.testing.assert_allclose(vm.brasyn_ssim(truth, pred, seg), expected, atol=1e-4)
    # torchmetrics <= 1.4.1 cropped 5 voxels off every side of the SSIM map.
    _, full = structural_similarity_index_measure(
        torch.from_numpy((p * (1 - mask))[None, None]),
        torch.from_numpy((t * (1 - mask))[None, None]),
        return_full_image=True,
    )
    cropped = float(full[..., 5:-5, 5:-5, 5:-5].mean())
    assert vm.brasyn_ssim(truth, pred, seg, crop=True)[1] == pytest.approx(cropped, abs=1e-4)
    assert abs(cropped - expected[1]) > 1e-3  # the two versions differ


def test_brasyn_ssim_filters_only_the_box_around_the_non_zero_voxels():
    """A head well inside its array and a small tumour: the boxed computation equals
    torchmetrics' SSIM of the whole arrays (full and cropped maps), where the unboxed
    map is 1 wherever a window sees only zeros."""
    torch = pytest.importorskip("torch")
    from torchmetrics.functional.image import structural_similarity_index_measure

    from dygan_tf.evaluation import volume_metrics as vm

    rng = np.random.default_rng(3)
    truth = np.zeros((44, 40, 34), np.float32)
    truth[9:33, 8:30, 10:26] = rng.integers(50, 900, (24, 22, 16))
    pred = np.where(truth > 0, truth + rng.normal(0, 90, truth.shape), 0).astype(np.float32)
    pred[20, 3, 17] = 300.0  # a stray voxel outside the head, as a model may paint
    seg = np.zeros(truth.shape, np.uint8)
    seg[18:22, 15:19, 16:19] = 2
    t, p = vm.brasyn_percentile_clip(truth), vm.brasyn_percentile_clip(pred)
    mask = (seg > 0).astype(np.int64)
    for crop in (False, True):
        expected = []
        for m in (mask, 1 - mask):
            _, full = structural_similarity_index_measure(
                torch.from_numpy((p * m)[None, None]),
                torch.from_numpy((t * m)[None, None]),
                return_full_image=True,
            )
            full = full[..., 5:-5, 5:-5, 5:-5] if crop else full
            expected.append(float(full.mean()))
        got = vm.brasyn_ssim(truth, pred, seg, crop=crop)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        for m in (mask, 1 - mask):  # and to rounding, against the map of the whole arrays
            a, b = p * m, t * m
            whole = vm._ssim_map(a, b, max(np.ptp(a), np.ptp(b)))
            whole = whole[5:-5, 5:-5, 5:-5] if crop else whole
            want = whole.mean(dtype=np.float64)
            assert vm.torchmetrics_ssim_3d(a, b, crop) == pytest.approx(want, abs=1e-12)


def _reference_lut(truth, train_case, source, target, brain_of):
    """An independent LUT: 256 bins of the training case's unit-scaled source over its
    brain -> mean unit-scaled target, empty bins interpolated."""
    case = truth[train_case]
    brain = brain_of(case)
    x, y = _unit(case[source], brain)[brain], _unit(case[target], brain)[brain]
    index = np.clip(np.floor(x * 256).astype(int), 0, 255)
    centres = (np.arange(256) + 0.5) / 256
    seen = np.bincount(index, minlength=256) > 0
    means = np.bincount(index, y, 256)[seen] / np.bincount(index, minlength=256)[seen]
    table = np.interp(centres, centres[seen], means)

    def predict(volume, brain):
        unit = _unit(volume, brain)
        return np.where(brain, table[np.clip(np.floor(unit * 256).astype(int), 0, 255)], 0.0)

    return predict


def test_baselines_beside_the_model_lut_fitted_on_training_volumes(data, tmp_path):
    """Copy-source and intensity-LUT rows beside every target, the LUT fitted on the
    split's training volumes (Case_1) and never on the scored ones; an all-zero
    prediction's n/a explained; a test case without a prediction listed; the BraSyn
    SSIM variant named."""
    root, truth, _ = data

    def brain_of(case):
        return np.logical_or.reduce([case[m] != 0 for m in ("flair", "t1", "t1ce", "t2")])

    pred = tmp_path / "pred"
    t1ce = truth["Case_10"]["t1ce"] * 0.5 + 40.0 * (truth["Case_10"]["t1ce"] > 0)
    _save(pred / "Case_10_t1ce_synth.nii.gz", t1ce.astype(np.float32))
    _save(pred / "Case_10_flair_synth.nii.gz", np.zeros(SHAPE, np.float32))
    manifest = _manifest(tmp_path / "shards", {"train": ["Case_1"], "test": ["Case_10", "Case_2"]})
    out = tmp_path / "eval"
    summary = evaluate_volumes(pred, root / "brats", out, split_from=manifest, verbose=False)
    assert summary["lut"] == {
        "fitted": True, "cases": 1, "training_cases": 1, "not_in_truth": 0,
        "scored_so_left_out": 0, "not_read": 0,
    }  # fmt: skip
    markdown = (out / "summary.md").read_text()
    case = truth["Case_10"]
    brain = brain_of(case)
    for target in ("flair", "t1ce"):
        source = summary["baseline_sources"][target]
        assert source != target
        for label in ("copy", "intensity LUT"):
            assert f"| {target}: {label} {source} (baseline) | 1 | " in markdown
        rows = {
            method: [r for r in entry["volumes"] if r["target"] == target]
            for method, entry in summary["baselines"].items()
        }
        assert [(r["case_id"], r["source"]) for r in rows["copy_source"]] == [("Case_10", source)]
        assert [(r["case_id"], r["source"]) for r in rows["intensity_lut"]] == [("Case_10", source)]
        # copy-source is the case's own source volume, scored as a prediction
        want, _ = _reference(_unit(case[target], brain), _unit(case[source], brain), brain)
        assert rows["copy_source"][0]["psnr_brain"] == pytest.approx(want, abs=2e-4)
        # the LUT is Case_1's (the training case), applied to Case_10's source
        mapped = _reference_lut(truth, "Case_1", source, target, brain_of)(case[source], brain)
        want, _ = _reference(_unit(case[target], brain), _unit(mapped, brain), brain)
        assert rows["intensity_lut"][0]["psnr_brain"] == pytest.approx(want, abs=2e-4)
        # ...not one fitted on the scored case
        own = _reference_lut(truth, "Case_10", source, target, brain_of)(case[source], brain)
        other, _ = _reference(_unit(case[target], brain), _unit(own, brain), brain)
        assert abs(other - want) > 1e-3
    assert "- flair brasyn_ssim_tumour, brasyn_ssim_non_tumour (model): the prediction is 0 " in (
        markdown
    )
    assert "1 cases of the truth root asked for with no prediction (not scored): Case_2" in markdown
    assert "variant full (torchmetrics >= 1.4.2" in markdown
    crop = evaluate_volumes(
        pred, root / "brats", tmp_path / "crop", split_from=manifest, verbose=False,
        brasyn_ssim_mode="crop",
    )  # fmt: skip
    assert crop["method"]["brasyn_ssim"] == "crop"
    cropped = (tmp_path / "crop" / "summary.md").read_text()
    assert "variant crop (torchmetrics <= 1.4.1" in cropped
    assert "too small for the crop" in cropped  # 6 slices: nothing left after 5 off each side
    # Without --split-from there is no training split: copy-source alone, and why.
    alone = evaluate_volumes(pred, root / "brats", tmp_path / "alone", verbose=False)
    assert set(alone["baselines"]) == {"copy_source"} and alone["lut"]["fitted"] is False
    assert (
        "The intensity LUT baseline is not scored: no --split-from"
        in (tmp_path / "alone" / "summary.md").read_text()
    )


def test_lut_from_another_root_fits_on_its_training_cases(data, tmp_path, capsys):
    """--lut-from: the LUT is fitted on the train split of another shard folder, read from
    the root its manifest names (case ids there may repeat the scored ones': another
    root, other cases, none left out); a root that is gone is one line, nothing written."""
    root, truth, _ = data
    train_truth = _truth(tmp_path / "train_brats", seed=5)
    manifest = _manifest(tmp_path / "train_shards", {"train": ["Case_1", "Case_2"]})
    with open(manifest) as f:
        fields = json.load(f)
    fields["source_root"] = str(tmp_path / "train_brats")
    with open(manifest, "w") as f:
        json.dump(fields, f)
    pred = tmp_path / "pred"
    _save(pred / "Case_1_t1_synth.nii.gz", truth["Case_1"]["t1"].astype(np.float32))
    summary = evaluate_volumes(pred, root / "brats", tmp_path / "eval", lut_from=manifest,
                               verbose=False)  # fmt: skip
    assert summary["lut"] == {
        "fitted": True, "cases": 2, "training_cases": 2, "not_in_truth": 0,
        "scored_so_left_out": 0, "not_read": 0, "from": os.path.abspath(manifest),
    }  # fmt: skip

    def brain_of(case):
        return np.logical_or.reduce([case[m] != 0 for m in ("flair", "t1", "t1ce", "t2")])

    source = summary["baseline_sources"]["t1"]
    case = truth["Case_1"]
    brain = brain_of(case)
    # The LUT of both training cases: pooled bins, as VolumeLUT pools them.
    both = {"Case_1": train_truth["Case_1"], "Case_2": train_truth["Case_2"]}
    sums, counts = np.zeros(256), np.zeros(256)
    for other in both.values():
        b = brain_of(other)
        x, y = _unit(other[source], b)[b], _unit(other["t1"], b)[b]
        index = np.clip(np.floor(x * 256).astype(int), 0, 255)
        sums += np.bincount(index, y, 256)
        counts += np.bincount(index, minlength=256)
    centres = (np.arange(256) + 0.5) / 256
    seen = counts > 0
    table = np.interp(centres, centres[seen], sums[seen] / counts[seen])
    unit = _unit(case[source], brain)
    mapped = np.where(brain, table[np.clip(np.floor(unit * 256).astype(int), 0, 255)], 0.0)
    want, _ = _reference(_unit(case["t1"], brain), _unit(mapped, brain), brain)
    (row,) = summary["baselines"]["intensity_lut"]["volumes"]
    assert row["psnr_brain"] == pytest.approx(want, abs=2e-4)

    # baselines=False: the model's rows alone (another model on the same cases).
    alone = evaluate_volumes(pred, root / "brats", tmp_path / "alone", lut_from=manifest,
                             verbose=False, baselines=False)  # fmt: skip
    assert alone["baselines"] == {} and alone["lut"]["fitted"] is False
    assert alone["volumes"] == summary["volumes"]

    fields["source_root"] = str(tmp_path / "gone")
    with open(manifest, "w") as f:
        json.dump(fields, f)
    out = tmp_path / "refused"
    args = ["--pred", pred, "--truth", root / "brats", "--lut-from", manifest, "--out", out]
    line = one_error_line(_run_in_process(capsys, args))
    assert line.startswith(f"error: --lut-from {manifest}: its manifest's source_root "), line
    assert not out.exists()


def _step_reference(volume, brain, axis):
    """Mean |v[k+1] - v[k]| along `axis` over pairs with both voxels in the brain, by loop."""
    v, b = np.moveaxis(volume, axis, 0), np.moveaxis(brain, axis, 0)
    total, count = 0.0, 0
    for k in range(v.shape[0] - 1):
        both = b[k] & b[k + 1]
        total += np.abs(v[k + 1] - v[k])[both].sum()
        count += both.sum()
    return total / count


def test_through_plane_excess_across_the_axial_axis(data, tmp_path):
    """The prediction's mean slice-to-slice change inside the brain minus the truth's,
    across the axis that runs along world z: 0 for the truth itself, below 0 for a
    prediction that repeats one slice (the truth's voxels are independent noise), equal
    to an independent loop; found from the affine when the axial axis is not the last."""
    root, truth, _ = data
    case = truth["Case_1"]
    brain = np.logical_or.reduce([case[m] != 0 for m in ("flair", "t1", "t1ce", "t2")])
    t1 = case["t1"].astype(np.float32)
    flip = np.array([False, True] * 3)[None, None, :]  # every other slice's contrast inverted
    jumpy = np.where(flip & (t1 > 0), 1100.0 - t1, t1)
    pred = tmp_path / "pred"
    _save(pred / "Case_1_t1_synth.nii.gz", jumpy)
    _save(pred / "Case_1_t2_synth.nii.gz", case["t2"].astype(np.float32))
    flat = np.where(brain, case["flair"][:, :, 2:3], 0).astype(np.float32)  # one slice, repeated
    _save(pred / "Case_1_flair_synth.nii.gz", flat)
    summary = evaluate_volumes(pred, root / "brats", tmp_path / "eval", verbose=False)
    rows = {r["target"]: r for r in summary["volumes"]}
    assert rows["t2"]["through_plane_excess"] == pytest.approx(0.0, abs=1e-7)
    smooth = _step_reference(_unit(flat, brain), brain, 2) - _step_reference(
        _unit(case["flair"], brain), brain, 2
    )
    assert smooth < -0.1
    assert rows["flair"]["through_plane_excess"] == pytest.approx(smooth, abs=1e-5)
    want = _step_reference(_unit(jumpy, brain), brain, 2) - _step_reference(
        _unit(case["t1"], brain), brain, 2
    )
    assert abs(want) > 1e-3
    assert rows["t1"]["through_plane_excess"] == pytest.approx(want, abs=1e-5)
    assert "through-plane excess" in (tmp_path / "eval" / "summary.md").read_text()
    # z along the first array axis: the same volumes transposed, the same score.
    from dygan_tf.evaluation.volume_metrics import axial_axis

    turned = np.array([[0, 0, -1, 0], [0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    assert axial_axis(turned) == 0 and axial_axis(AFFINE) == 2
    truth2 = tmp_path / "turned" / "HGG" / "Case_1"
    for key in ("flair", "t1", "t1ce", "t2", "seg"):
        _save(truth2 / f"Case_1_{key}.nii.gz", np.transpose(case[key], (2, 1, 0)), turned)
    _save(tmp_path / "pred2" / "Case_1_t1_synth.nii.gz", np.transpose(jumpy, (2, 1, 0)), turned)
    again = evaluate_volumes(tmp_path / "pred2", tmp_path / "turned", tmp_path / "e2",
                             verbose=False)  # fmt: skip
    (row,) = again["volumes"]
    assert row["through_plane_excess"] == pytest.approx(want, abs=1e-5)
