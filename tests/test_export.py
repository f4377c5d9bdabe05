"""Export: the SavedModel serves with TensorFlow alone and equals the Keras generator;
the signature, metadata and TF Serving layout; refusals; the serving request builders."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dygan_tf import export
from dygan_tf.config.tasks import TASK_CODES, task_code
from dygan_tf.inference import savedmodel, serving
from tests.helpers import one_error_line, run_cli, run_in_process, serve_alone

pytestmark = pytest.mark.slow


def _inputs(size, batch=3):
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (batch, size, size, 1)).astype("float32")
    task = np.stack([task_code("t2", t) for t in ("flair", "t1", "t1ce")] * 2)[:batch]
    return image, task


def _sanitized_env():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def test_export_cli_serves_without_the_package(export_command, run_dir, tiny_generator, tmp_path):
    # The command ran in this process (conftest.export_command; its fresh-process run is
    # in test_export_refuses_bad_target); serving below is what needs a fresh interpreter.
    out, result = export_command
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out.parent)) == ["1"]  # no staging folder left behind
    assert {"saved_model.pb", "variables", "metadata.json"} <= set(os.listdir(out))

    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["image_size"] == 64 and metadata["signature"] == "serving_default"
    assert metadata["modalities"] == ["flair", "t1", "t1ce", "t2"]
    assert {k: v["code"] for k, v in metadata["tasks"].items()} == {
        f"{s}->{t}": c for (s, t), c in TASK_CODES.items()
    }
    assert metadata["trained_tasks"] == ["t2->flair", "t2->t1", "t2->t1ce"]
    assert metadata["normalization"]["formula"] == "clip(x / robust_max * 2 - 1, -1, 1)"
    assert metadata["source_run"] == os.path.abspath(run_dir)
    assert set(metadata["versions"]) == {"dygan_tf", "keras", "tensorflow"}

    image, task = _inputs(64)
    work = tmp_path / "elsewhere"
    work.mkdir()
    served = serve_alone(out, work, image=image, task=task)
    _, generator = tiny_generator
    expected = generator({"image": image, "task": task}, training=False).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_saved_model_cli_shows_dynamic_batch(savedmodel_dir):
    tool = shutil.which("saved_model_cli")
    command = [tool] if tool else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    shown = subprocess.run(
        [
            *command,
            "show",
            "--dir",
            savedmodel_dir,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_sanitized_env(),
    )
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "inputs['image']" in text and "shape: (-1, 64, 64, 1)" in text
    assert "inputs['task']" in text and "shape: (-1, 12)" in text
    assert "outputs['synthesized']" in text and "DT_FLOAT" in text
    assert "tensorflow/serving/predict" in text


# The first case runs in a fresh interpreter (its import-time output counts too); the
# others run the same `main` in this process (helpers.run_in_process).
@pytest.mark.parametrize(
    "make, needle, fresh",
    [
        (lambda root: root / "dygan" / "v1", "must be an integer version", True),
        (lambda root: root / "dygan" / "latest", "must be an integer version", False),
        (lambda root: _non_empty(root / "dygan" / "2"), "already exists", False),
    ],
)
def test_export_refuses_bad_target(run_dir, tmp_path, make, needle, fresh):
    out = make(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    argv = ["--run", run_dir, "--out", out]
    result = run_cli("dygan_tf.export", *argv) if fresh else run_in_process(export.main, *argv)
    line = one_error_line(result)
    assert needle in line and str(out.name) in line
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def _non_empty(folder):
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"old")
    return folder


def test_export_generator_into_empty_version_folder(tiny_generator, tmp_path):
    _, generator = tiny_generator
    out = tmp_path / "dygan" / "3"
    out.mkdir(parents=True)  # an empty folder is fine: replaced atomically
    assert savedmodel.export_generator(generator, out) == str(out)
    assert os.path.isfile(out / "saved_model.pb") and not os.path.exists(out / "metadata.json")
    assert sorted(os.listdir(out.parent)) == ["3"]


def test_predict_request_round_trips_the_arrays():
    import tensorflow as tf

    image, task = _inputs(16, batch=2)
    request = serving.make_predict_request(image, task, model_name="dygan", version=1)
    assert request.model_spec.name == "dygan" and request.model_spec.version.value == 1
    assert request.model_spec.signature_name == "serving_default"
    assert sorted(request.inputs) == ["image", "task"]
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["image"]), image)
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["task"]), task)
    assert request.inputs["image"].tensor_shape.dim[0].size == 2
    # The serialised request parses back to the same tensors (what goes on the wire).
    parsed = type(request).FromString(request.SerializeToString())
    np.testing.assert_array_equal(tf.make_ndarray(parsed.inputs["image"]), image)

    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    response.outputs["synthesized"].CopyFrom(tf.make_tensor_proto(image))
    np.testing.assert_array_equal(serving.parse_predict_response(response), image)


def test_rest_payload_both_formats():
    image, task = _inputs(8, batch=2)
    columnar = json.loads(json.dumps(serving.make_rest_payload(image, task)))
    assert columnar["signature_name"] == "serving_default"
    np.testing.assert_array_equal(np.asarray(columnar["inputs"]["image"], "float32"), image)
    np.testing.assert_array_equal(np.asarray(columnar["inputs"]["task"], "float32"), task)
    rows = json.loads(json.dumps(serving.make_rest_payload(image, task, row_format=True)))
    assert len(rows["instances"]) == 2
    np.testing.assert_array_equal(np.asarray(rows["instances"][1]["image"], "float32"), image[1])
    # TF Serving answers {"outputs": ...} to columnar and {"predictions": ...} to rows.
    np.testing.assert_array_equal(
        serving.parse_predict_response({"outputs": image.tolist()}), image
    )
    np.testing.assert_array_equal(
        serving.parse_predict_response({"predictions": image.tolist()}), image
    )
    with pytest.raises(ValueError, match="task"):
        serving.make_rest_payload(image, task[:1])


def test_models_config_example_parses():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "saved_models", "models.config")
    with open(path) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "dygan" and model.model_platform == "tensorflow"


@pytest.mark.slow
def test_every_export_carries_a_model_card(fit_runs, tfrecord_dir, phantom_root, tmp_path):
    """metadata.json's model_card and README.md come from what the run folder knows,
    the evaluation included wherever `evaluate --out` wrote its report (the run keeps a
    record of it), with the baselines beside the scores and no absolute path; translate's
    first line says what the model was trained on, counting the cases as the run used
    them."""
    import subprocess

    from dygan_tf import evaluate, export, translate
    from tests.helpers import REPO, case_folder, run_in_process

    run = str(tmp_path / "run")  # a copy: the shared run stays as fit left it
    shutil.copytree(fit_runs["ms_both"].path, run)
    elsewhere = tmp_path / "elsewhere"  # not RUN/eval
    result = run_in_process(evaluate.main, "--run", run, "--out", elsewhere)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "dygan" / "1"
    result = run_in_process(export.main, "--run", run, "--out", out)
    assert result.returncode == 0, result.stderr
    card = json.loads((out / "metadata.json").read_text())["model_card"]
    source = card["data_source"]
    assert source["shards"] == os.path.basename(tfrecord_dir) and source["layout"] == "brats2019"
    assert source["source_root"] == os.path.basename(phantom_root)
    # 4 training cases in the shards, 1 of them held out for validation
    assert source["split"]["train_cases"] == 3 and source["split"]["validation_cases"] == 1
    assert source["split"]["test_cases"] == 2 and len(source["manifest_sha256"]) == 64
    assert card["training"]["backend"] == "tensorflow" and card["training"]["epochs_finished"] == 2
    assert card["training"]["inputs"] == "one T2 sequence (source t2)"
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True)
    assert card["training"]["commit"].split()[0] == (head.stdout.strip() or "not")
    evaluation = card["evaluation"]
    assert set(evaluation["per_target"]) == {"flair", "t1", "t1ce"}
    assert evaluation["report"] == os.path.join("..", "elsewhere", "report.json")
    assert evaluation["same_shards"] is True and evaluation["training_cases_scored"] == []
    assert (evaluation["split"], evaluation["cases"], evaluation["tta"]) == ("test", 2, "none")
    for b in ("copy_source", "intensity_lut"):
        assert set(evaluation["baselines"][b]) == {"flair", "t1", "t1ce"}
    assert "not for diagnosis" in card["limitations"].lower().replace(";", "")
    readme = (out / "README.md").read_text()
    assert "**Research use only, not for diagnosis.**" in readme and "| flair |" in readme
    assert (
        f"on the test split of the shards `{os.path.basename(tfrecord_dir)}` (those it trained "
        f"on): 2 cases, {evaluation['slices']} slices, no test-time augmentation" in readme
    )
    header = "| target | PSNR | SSIM | copy source PSNR | SSIM | intensity LUT PSNR | SSIM |"
    assert header in readme
    assert "Apache-2.0" in readme and "No evaluation" not in readme
    for text in (readme, json.dumps(card)):  # names relative to the data, no absolute path
        assert str(tmp_path) not in text and os.path.dirname(str(tfrecord_dir)) not in text

    folder, cid = case_folder(phantom_root, 0)
    argv = ["--model", out, "--input", os.path.join(folder, f"{cid}_t2.nii.gz")]
    result = run_in_process(translate.main, *argv, "--out-dir", tmp_path / "t")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(
        f"{out}: trained on: {os.path.basename(phantom_root)} (brats2019, 3 training, "
        "1 validation, 2 test cases"
    )
