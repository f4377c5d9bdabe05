"""Test-time augmentation (`--tta flip`): the mean of a model's output and the mirrored
output of its left-right mirrored input, in numpy (evaluate, translate) and in the
export's graph, and the flag's bad values."""

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from dygan_tf import evaluate as evaluate_cmd
from dygan_tf import export as export_cmd
from dygan_tf import translate as translate_cmd
from dygan_tf.inference import tta
from dygan_tf.utils.errors import UserError
from tests.helpers import case_folder, one_error_line, run_in_process, serve_alone, t2_task_batch

pytestmark = pytest.mark.slow


def _generator_call(generator):
    def call(image, task):
        return generator({"image": image, "task": task}, training=False).numpy()

    return call


def test_flip_average_by_hand():
    calls = []

    def call(image, condition, names):  # column j weighted by j: not mirror-symmetric
        calls.append((len(image), list(names)))
        weight = np.arange(image.shape[2], dtype=np.float32)[None, None, :, None]
        return image * weight + condition[:, :1, None, None]

    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (2, 3, 5, 1)).astype(np.float32)
    condition = np.array([[1.0, 0.0], [2.0, 0.0]], np.float32)
    out = tta.flip_averaged(call)(image, condition, ["a", "b"])
    # Column j: (x_j * j + c + x_j * (W - 1 - j) + c) / 2 = x_j * (W - 1) / 2 + c.
    np.testing.assert_allclose(out, image * 2.0 + condition[:, :1, None, None], rtol=1e-6)
    assert calls == [(4, ["a", "b", "a", "b"])]  # one call, the batch doubled
    symmetric = tta.flip_averaged(lambda x, c: 2 * x)
    np.testing.assert_allclose(symmetric(image, condition), 2 * image)
    assert tta.with_tta(call, "none") is call
    with pytest.raises(ValueError, match="Received: 'mirror'"):
        tta.check_mode("mirror")


def test_each_half_of_the_doubled_batch_gets_its_own_answer(tiny_generator):
    import tensorflow as tf

    _, generator = tiny_generator
    call = _generator_call(generator)
    image, _, task = t2_task_batch(1, 64)
    averaged = tta.flip_averaged(call)(image, task)
    plain = call(image, task)
    mirrored = call(image[:, :, ::-1], task)[:, :, ::-1]
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, atol=1e-5)
    assert np.abs(plain - mirrored).max() > 1e-3  # the bare model is not mirror-symmetric
    # The average is: mirroring the input mirrors the output.
    again = tta.flip_averaged(call)(image[:, :, ::-1], task)
    np.testing.assert_allclose(again, averaged[:, :, ::-1], atol=1e-5)
    # The graph version (the export's) with a dynamic batch gives the same.
    graph = tf.function(
        tta.flip_averaged_graph(lambda x, c: generator({"image": x, "task": c}, training=False)),
        input_signature=[
            tf.TensorSpec((None, 64, 64, 1), tf.float32),
            tf.TensorSpec((None, 12), tf.float32),
        ],
    )
    for n in (1, 3):
        np.testing.assert_allclose(graph(image[:n], task[:n]).numpy(), averaged[:n], atol=1e-5)


def test_export_with_tta_serves_the_average_with_tensorflow_alone(
    run_dir, tiny_generator, tmp_path
):
    from dygan_tf.inference.predictor import load_predictor

    out = tmp_path / "dygan" / "1"
    result = run_in_process(export_cmd.main, "--run", run_dir, "--out", out, "--tta", "flip")
    assert result.returncode == 0, result.stderr
    assert "flip TTA" in result.stdout
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["tta"] == "flip" and "mirrored" in metadata["tta_description"]
    _, generator = tiny_generator
    image, _, task = t2_task_batch(1, 64)
    work = tmp_path / "elsewhere"
    work.mkdir()
    served = serve_alone(out, work, image=image, task=task)
    expected = tta.flip_averaged(_generator_call(generator))(image, task)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    # Loaded with or without --tta flip, the export averages once (its signature does).
    for mode in ("none", "flip"):
        predictor = load_predictor(str(out), mode)
        assert predictor.tta == "flip" and not predictor.applies_tta
        np.testing.assert_allclose(predictor(image, task), served, atol=1e-5)
    # The run folder with --tta flip: the same numbers, averaged by the Predictor.
    from_run = load_predictor(str(run_dir), "flip")
    assert from_run.applies_tta
    np.testing.assert_allclose(from_run(image, task), served, atol=1e-5)
    # A metadata.json with an unknown mode is refused, naming the file.
    copy = tmp_path / "copy" / "1"
    shutil.copytree(out, copy)
    (copy / "metadata.json").write_text(json.dumps(dict(metadata, tta="mirror")))
    with pytest.raises(UserError, match=r"metadata.json: tta 'mirror' is not one of"):
        load_predictor(str(copy))


def test_evaluate_tta_scores_the_models_not_the_baselines(run_dir, tfrecord_dir, tmp_path):
    reports = {}
    for mode in ("none", "flip"):
        out = tmp_path / mode
        result = run_in_process(
            evaluate_cmd.main,
            *("--run", run_dir, "--data", tfrecord_dir, "--out", out, "--tta", mode),
        )
        assert result.returncode == 0, result.stderr
        reports[mode] = json.loads((out / "report.json").read_text())
    plain, flip = reports["none"], reports["flip"]
    assert "tta" not in plain and flip["tta"] == "flip"
    assert flip["model"] == plain["model"] + ", flip TTA"
    assert flip["baselines"] == plain["baselines"]
    for target, scores in flip["per_target"].items():
        assert scores["psnr"] != pytest.approx(plain["per_target"][target]["psnr"], abs=1e-4)
    assert "(flip TTA)" in (tmp_path / "flip" / "report.md").read_text()


def test_translate_tta_is_the_mean_of_the_volume_and_its_mirror(run_dir, phantom_root, tmp_path):
    """On a volume whose axial grid is mirror-symmetric, the TTA output is the mean of
    the plain output and the mirrored plain output of the mirrored volume."""
    folder, cid = case_folder(phantom_root)
    t2 = nib.load(os.path.join(folder, f"{cid}_t2.nii.gz"))
    data = np.asanyarray(t2.dataobj)
    inputs = tmp_path / "in"
    inputs.mkdir()
    volumes = {"plain": data, "mirror": data[::-1]}  # x is the patient's left-right
    outputs = {}
    for name, volume in volumes.items():
        path = inputs / f"{name}_t2.nii.gz"
        nib.save(nib.Nifti1Image(volume, t2.affine, t2.header), path)
        for mode in ("none", "flip"):
            out = tmp_path / f"{name}_{mode}"
            result = run_in_process(
                translate_cmd.main,
                *("--model", run_dir, "--input", path, "--out-dir", out, "--tta", mode),
                *("--targets", "flair", "--quiet"),
            )
            assert result.returncode == 0, result.stderr
            image = nib.load(out / f"{name}_flair_synth.nii.gz")
            outputs[name, mode] = np.asanyarray(image.dataobj)
    assert np.diag(t2.affine)[0] != 0 and np.count_nonzero(t2.affine[:3, :3]) == 3
    expected = (outputs["plain", "none"] + outputs["mirror", "none"][::-1]) / 2
    scale = np.abs(expected).max()
    np.testing.assert_allclose(outputs["plain", "flip"], expected, atol=1e-4 * scale)
    assert np.abs(outputs["plain", "flip"] - outputs["plain", "none"]).max() > 1e-2 * scale


@pytest.mark.parametrize("command", [evaluate_cmd, translate_cmd, export_cmd])
def test_a_bad_tta_value_is_one_line_and_nothing_written(
    command, run_dir, tfrecord_dir, phantom_root, tmp_path
):
    folder, cid = case_folder(phantom_root)
    out = tmp_path / "out" / "1"
    argv = {
        evaluate_cmd: ("--run", run_dir, "--data", tfrecord_dir, "--out", out),
        translate_cmd: ("--model", run_dir, "--input", folder, "--out-dir", out),
        export_cmd: ("--run", run_dir, "--out", out),
    }[command]
    line = one_error_line(run_in_process(command.main, *argv, "--tta", "mirror"))
    assert "--tta: invalid choice: 'mirror'" in line, line
    assert not (tmp_path / "out").exists()
