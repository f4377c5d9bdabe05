"""A multi-source model end to end (fit -> evaluate -> export -> serving in a fresh
process -> translate), case folders completed from 1, 2 and 3 present sequences, a
`--source any` model, and the bad inputs of these modes."""

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from dygan_tf import evaluate as evaluate_cmd
from dygan_tf import export as export_cmd
from dygan_tf import fit as fit_cmd
from dygan_tf import translate as translate_cmd
from dygan_tf.config import conditions
from dygan_tf.config.tasks import MODALITIES
from tests.helpers import (
    case_folder,
    one_error_line,
    run_in_process,
    save_untrained_run,
    serve_alone,
)

pytestmark = pytest.mark.slow

MULTI_ROWS = {r.key for r in conditions.row_table("multi", "any", MODALITIES)}


@pytest.fixture(scope="module")
def multi_run(tfrecord_dir, tmp_path_factory):
    """A tiny multi-source run: 1 epoch of 3 steps, through the `fit` command."""
    out = tmp_path_factory.mktemp("multi") / "run"
    result = run_in_process(
        fit_cmd.main,
        *("--data", tfrecord_dir, "--out", out, "--preset", "tiny", "--inputs", "multi"),
        *("--epochs", 1, "--steps-per-epoch", 3),
    )
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.fixture(scope="module")
def multi_export(multi_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("multi_export") / "dygan_multi" / "1"
    result = run_in_process(export_cmd.main, "--run", multi_run[0], "--out", out)
    assert result.returncode == 0, result.stderr
    assert "image, available, target -> synthesized" in result.stdout
    return out


def test_multi_fit_trains_every_target_from_every_set(multi_run):
    out, result = multi_run
    assert "3 of 28 target x available-set rows a slice" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["inputs"] == "multi" and config["train"]["source"] == "any"
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert {f"val_psnr_{m}" for m in MODALITIES} <= set(header)


def test_multi_evaluate_rows_and_compare_with_a_paper_run(
    multi_run, run_dir, tfrecord_dir, tmp_path
):
    paper = run_dir  # a paper-mode (T2) run folder
    out = tmp_path / "eval"
    result = run_in_process(
        evaluate_cmd.main, "--run", multi_run[0], "--compare", paper, "--out", out
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"] == "multi" and set(report["rows"]) == MULTI_ROWS
    for key in MULTI_ROWS:
        assert np.isfinite(report["per_row"][key]["psnr"]), key
    assert set(report["per_target"]) == set(MODALITIES)
    # The paper run answers its three T2 rows only; the rest are "—" in the table.
    paper_name = next(n for n in report["compare"] if n != report["model"])
    answered = {k for k, v in report["compare"][paper_name].items() if v is not None}
    assert answered == {"t2->flair", "t2->t1", "t2->t1ce"}
    # A baseline row of several sources is its best single source's.
    lut = report["baselines"]["intensity_lut"]
    singles = [lut[f"{m}->flair"]["psnr"] for m in ("t1", "t1ce", "t2")]
    assert lut["t1+t1ce+t2->flair"]["psnr"] == max(singles)
    lines = [ln for ln in (out / "report.md").read_text().splitlines() if ln.startswith("| ")]
    assert len(lines) == 1 + 28  # header + one line per row
    assert (out / "figure.png").stat().st_size > 0
    # The single-source rows are the paper's own scores: the paper run's report gives
    # the same numbers for its rows.
    alone = tmp_path / "alone"
    result = run_in_process(
        evaluate_cmd.main, "--run", paper, "--data", tfrecord_dir, "--out", alone
    )
    assert result.returncode == 0, result.stderr
    per_target = json.loads((alone / "report.json").read_text())["per_target"]
    for t in ("flair", "t1", "t1ce"):
        assert report["compare"][paper_name][f"t2->{t}"] == pytest.approx(per_target[t])


def test_multi_export_serves_with_tensorflow_alone(multi_run, multi_export, tmp_path):
    from dygan_tf.run_folder.files import load_run

    metadata = json.loads((multi_export / "metadata.json").read_text())
    assert metadata["model_inputs"] == "multi"
    assert metadata["inputs"]["image"]["shape"] == [None, 64, 64, 4]
    assert metadata["inputs"]["image"]["channels"] == list(MODALITIES)
    assert metadata["inputs"]["available"]["shape"] == [None, 4]
    assert set(metadata["trained_rows"]) == MULTI_ROWS
    rng = np.random.default_rng(0)
    rows = [(("t1", "t1ce", "t2"), "flair"), (("t2",), "t1"), (("flair", "t1"), "t1ce")]
    image = rng.uniform(-1, 1, (3, 64, 64, 4)).astype("float32")
    for i, (available, _) in enumerate(rows):
        for c, m in enumerate(MODALITIES):
            if m not in available:
                image[i, ..., c] = conditions.FILL_VALUE
    codes = np.stack([conditions.condition_code(a, t) for a, t in rows])
    served = serve_alone(
        multi_export, tmp_path, image=image, available=codes[:, :4], target=codes[:, 4:]
    )
    _, generator = load_run(str(multi_run[0]))
    expected = generator({"image": image, "task": codes}).numpy()
    assert served.shape == (3, 64, 64, 1)
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_evaluate_accepts_a_multi_source_savedmodel(multi_export, tfrecord_dir, tmp_path):
    out = tmp_path / "eval"
    result = run_in_process(
        evaluate_cmd.main, "--model", multi_export, "--data", tfrecord_dir, "--out", out
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"] == "multi" and set(report["rows"]) == MULTI_ROWS


def _partial_case(phantom_root, folder, present):
    """A copy of phantom case 0 holding only the `present` modalities."""
    source, cid = case_folder(phantom_root)
    case = folder / cid
    case.mkdir(parents=True)
    for m in present:
        shutil.copy(os.path.join(source, f"{cid}_{m}.nii.gz"), case)
    return case, cid


@pytest.mark.parametrize(
    "present", [("t1",), ("t1", "t2"), ("flair", "t1", "t2")], ids=["one", "two", "three"]
)
def test_case_folder_completed_from_every_present_sequence(
    multi_run, multi_export, phantom_root, tmp_path, present
):
    case, cid = _partial_case(phantom_root, tmp_path / "in", present)
    missing = [m for m in MODALITIES if m not in present]
    outputs = {}
    for kind, model in (("run", multi_run[0]), ("savedmodel", multi_export)):
        out = tmp_path / kind
        result = run_in_process(
            translate_cmd.main, "--model", model, "--input", case, "--out-dir", out
        )
        assert result.returncode == 0, result.stderr
        assert "warning" not in result.stderr
        assert f"{'+'.join(present)} -> {', '.join(missing)}" in result.stdout
        assert sorted(os.listdir(out)) == sorted(f"{cid}_{m}_synth.nii.gz" for m in missing)
        outputs[kind] = {m: nib.load(out / f"{cid}_{m}_synth.nii.gz") for m in missing}
    reference = nib.load(case / f"{cid}_{present[0]}.nii.gz")
    brain = np.zeros(reference.shape, bool)
    for m in present:
        brain |= np.asanyarray(nib.load(case / f"{cid}_{m}.nii.gz").dataobj) != 0
    for m in missing:
        data = np.asanyarray(outputs["run"][m].dataobj)
        assert data.shape == reference.shape and np.isfinite(data).all()
        np.testing.assert_array_equal(outputs["run"][m].affine, reference.affine)
        assert np.all(data[~brain] == 0) and np.any(data[brain] != 0)
        served = np.asanyarray(outputs["savedmodel"][m].dataobj)
        np.testing.assert_allclose(served, data, rtol=1e-4, atol=1e-3)


def test_multi_translate_reads_every_present_sequence(multi_run, phantom_root, tmp_path):
    """FLAIR from T2 alone differs from FLAIR from T1 + T2: the second input is read."""
    synthesized = {}
    for present in (("t2",), ("t1", "t2")):
        name = "+".join(present)
        case, cid = _partial_case(phantom_root, tmp_path / name, present)
        out = tmp_path / f"out_{name}"
        argv = ("--model", multi_run[0], "--input", case, "--out-dir", out, "--targets", "flair")
        result = run_in_process(translate_cmd.main, *argv)
        assert result.returncode == 0, result.stderr
        synthesized[name] = np.asanyarray(nib.load(out / f"{cid}_flair_synth.nii.gz").dataobj)
    assert not np.allclose(synthesized["t2"], synthesized["t1+t2"])


@pytest.fixture(scope="module")
def any_run(tmp_path_factory):
    """A `--source any` run folder (config.json + generator.keras; random weights)."""
    from dygan_tf.config.run_config import get_preset

    config = get_preset("tiny").override(source="any", targets=MODALITIES)
    return save_untrained_run(tmp_path_factory.mktemp("any_run"), config)


def test_any_source_model_translates_a_case_without_t2_silently(
    any_run, run_dir, phantom_root, tmp_path
):
    case, cid = _partial_case(phantom_root, tmp_path / "in", ("t1",))
    result = run_in_process(
        translate_cmd.main, "--model", any_run, "--input", case, "--out-dir", tmp_path / "a"
    )
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr and "t1 -> flair, t1ce, t2" in result.stdout
    # The paper's T2 model never learned T1 -> ...: every target refused, none written.
    result = run_in_process(
        translate_cmd.main, "--model", run_dir, "--input", case, "--out-dir", tmp_path / "p"
    )
    assert result.returncode == 1, result.stderr
    for t in ("flair", "t1ce", "t2"):
        assert f"refused: {cid} {t}: the model was not trained for t1->{t}" in result.stderr
    assert not (tmp_path / "p").exists()


def test_any_source_evaluate_reports_the_12_tasks(any_run, tfrecord_dir, tmp_path):
    out = tmp_path / "eval"
    result = run_in_process(
        evaluate_cmd.main, "--run", any_run, "--data", tfrecord_dir, "--out", out
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"] == "single" and report["source"] == "any"
    assert len(report["rows"]) == 12 and all(report["per_row"][k] for k in report["rows"])
    text = (out / "report.md").read_text()
    assert "| source \\ target | FLAIR | T1 | T1CE | T2 |" in text
    grid = text.split("source x target:")[1]
    assert grid.count("—") == 4  # the diagonal


def test_mismatched_volumes_are_one_line_and_nothing_written(multi_run, phantom_root, tmp_path):
    case, cid = _partial_case(phantom_root, tmp_path / "in", ("t1", "t2"))
    t1 = case / f"{cid}_t1.nii.gz"
    image = nib.load(t1)
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[:, :, :-1], image.affine), t1)
    out = tmp_path / "out"
    result = run_in_process(
        translate_cmd.main, "--model", multi_run[0], "--input", case, "--out-dir", out
    )
    line = one_error_line(result)
    assert f"{cid}_t1.nii.gz: its shape differs from" in line and f"{cid}_t2.nii.gz" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--inputs", "multi", "--source", "t2"], "inputs='multi' takes every available"),
        (["--inputs", "many"], "--inputs: invalid choice: 'many'"),
        # (an unknown name is refused by the modality-name parser, naming it)
        (["--source", "any", "--targets", "flair,pd"], "Unknown target modality 'pd'"),
    ],
)
def test_bad_mode_flags_are_one_line_and_nothing_written(tfrecord_dir, tmp_path, flags, needle):
    out = tmp_path / "run"
    argv = ["--data", tfrecord_dir, "--out", out, "--preset", "tiny", *flags]
    line = one_error_line(run_in_process(fit_cmd.main, *argv))
    assert needle in line, line
    assert not out.exists()
