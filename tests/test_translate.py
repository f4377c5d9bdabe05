"""Whole-volume translation: geometry kept, orientation-independent, case folders filled,
bad input refused with one line and nothing written."""

import os
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from dygan_tf.data import nifti, preprocessing
from dygan_tf.inference.predictor import load_predictor
from dygan_tf.inference.translation import translate
from dygan_tf.translate import main as translate_main
from tests.helpers import case_folder, one_error_line, run_cli, run_in_process, t2_task_batch

pytestmark = pytest.mark.slow
TARGETS = ("flair", "t1", "t1ce")
_LOADED = {}


def _predictor(path):
    if path not in _LOADED:
        _LOADED[path] = load_predictor(str(path))
    return _LOADED[path]


def test_a_generator_keras_file_loads_as_its_run_folder_does(run_dir):
    """A bare .keras file gives the run's numbers; what only the run folder knows (the
    tasks it was trained for, its model card) is unknown, not made up."""
    from_run, from_file = _predictor(run_dir), load_predictor(run_dir / "generator.keras")
    image, _, task = t2_task_batch(2, 64)
    np.testing.assert_array_equal(from_file(image, task), from_run(image, task))
    assert (from_file.kind, from_file.inputs, from_file.image_size) == ("keras", "single", 64)
    assert from_file.trained_rows is None and from_file.model_card is None
    assert from_run.trained_rows == ("t2->flair", "t2->t1", "t2->t1ce")


def _tree(root):
    return sorted(str(p) for p in root.rglob("*"))


def test_translate_cli_keeps_shape_affine_and_header(savedmodel_dir, phantom_root, tmp_path):
    folder, cid = case_folder(phantom_root)
    source = os.path.join(folder, f"{cid}_t2.nii.gz")
    out = tmp_path / "out"
    # The TF Serving base path (holding version 1) is accepted; --source comes from the name.
    result = run_cli(
        "dygan_tf.translate",
        "--model",
        os.path.dirname(savedmodel_dir),
        "--input",
        source,
        "--out-dir",
        out,
        "--batch",
        8,
    )
    assert result.returncode == 0, result.stderr
    assert "slices/s" in result.stdout
    # Output to a pipe: plain progress lines up to 100%, no terminal control codes.
    assert not any(c in result.stdout for c in ("\x1b", "\r", "\b")), repr(result.stdout)
    progress = re.findall(r"^(\d+)/(\d+) slices \((\d+)%\)", result.stdout, re.M)
    assert 2 <= len(progress) <= 10 and progress[-1][0] == progress[-1][1]
    assert progress[-1][2] == "100"
    assert sorted(os.listdir(out)) == [f"{cid}_{t}_synth.nii.gz" for t in TARGETS]
    original = nib.load(source)
    t2 = np.asanyarray(original.dataobj)
    for target in TARGETS:
        written = nib.load(out / f"{cid}_{target}_synth.nii.gz")
        data = np.asanyarray(written.dataobj)
        assert data.shape == original.shape and data.dtype == np.float32
        assert written.get_data_dtype() == np.float32
        np.testing.assert_array_equal(written.affine, original.affine)
        for key in (
            "pixdim",
            "qform_code",
            "sform_code",
            "srow_x",
            "srow_y",
            "srow_z",
            "quatern_b",
            "quatern_c",
            "quatern_d",
            "xyzt_units",
            "dim",
        ):
            np.testing.assert_array_equal(written.header[key], original.header[key], key)
        assert np.isnan(written.header["scl_slope"]) or written.header["scl_slope"] == 1
        assert np.isfinite(data).all() and data.std() > 0 and data.min() >= 0
        assert not data[t2 == 0].any() and data[t2 != 0].std() > 0


def test_flipped_affine_translates_to_the_same_physical_images(
    run_dir, phantom_root, savedmodel_dir, tmp_path
):
    folder, cid = case_folder(phantom_root, 1)
    data, affine, _ = nifti.load_nifti(os.path.join(folder, f"{cid}_t2.nii.gz"))
    # 16 axial slices around the middle keep it quick; the affine moves with the crop.
    shift = np.eye(4)
    shift[2, 3] = 70
    data, affine = np.ascontiguousarray(data[:, :, 70:86]), affine @ shift
    # The same image stored with voxel axes 0 and 2 reversed: world coordinates unchanged.
    flip = np.diag([-1.0, 1.0, -1.0, 1.0])
    flip[0, 3], flip[2, 3] = data.shape[0] - 1, data.shape[2] - 1
    flipped = nib.Nifti1Image(np.ascontiguousarray(data[::-1, :, ::-1]), affine @ flip)
    np.testing.assert_allclose(
        flipped.affine @ [10, 20, 30, 1], affine @ [data.shape[0] - 11, 20, data.shape[2] - 31, 1]
    )
    plain = nib.Nifti1Image(data, affine)
    for name, image in (("plain", plain), ("flipped", flipped)):
        (tmp_path / name).mkdir()
        nib.save(image, tmp_path / name / f"{cid}_t2.nii.gz")
    loaded = _predictor(run_dir)
    outputs = {}
    for name in ("plain", "flipped"):
        paths = translate(
            loaded,
            str(tmp_path / name / f"{cid}_t2.nii.gz"),
            str(tmp_path / f"{name}_out"),
            verbose=False,
        )
        outputs[name] = {t: nib.load(p) for t, p in paths.items()}
    for target in TARGETS:
        a, b = outputs["plain"][target], outputs["flipped"][target]
        np.testing.assert_array_equal(b.affine, flipped.affine)
        ca, aff_a, _ = preprocessing.to_canonical(a.get_fdata(), a.affine)
        cb, aff_b, _ = preprocessing.to_canonical(b.get_fdata(), b.affine)
        np.testing.assert_allclose(aff_a, aff_b)
        np.testing.assert_allclose(ca, cb, atol=1e-3)
        assert np.abs(ca).max() > 0

    # The served SavedModel and the run's Keras generator give the same volume.
    served = translate(
        _predictor(savedmodel_dir),
        str(tmp_path / "plain" / f"{cid}_t2.nii.gz"),
        str(tmp_path / "served_out"),
        targets=["t1"],
        verbose=False,
    )
    keras_t1 = outputs["plain"]["t1"].get_fdata()
    scale = preprocessing.robust_max(data, data != 0)
    np.testing.assert_allclose(nib.load(served["t1"]).get_fdata(), keras_t1, atol=1e-4 * scale)


def _case_with(phantom_root, tmp_path, modalities, index=2):
    folder, cid = case_folder(phantom_root, index)
    copy = tmp_path / cid
    copy.mkdir()
    for m in modalities:
        shutil.copy(os.path.join(folder, f"{cid}_{m}.nii.gz"), copy)
    return copy, cid


@pytest.mark.parametrize(
    "present, source, chosen, expected",
    [
        (("t1", "flair"), None, "t1", ("t1ce", "t2")),  # no t2: next in t2, t1, flair, t1ce
        (("t1", "flair", "t2"), None, "t2", ("t1ce",)),
        (("t1", "flair", "t2"), "flair", "flair", ("t1ce",)),
        (("t1ce",), "t2", "t1ce", ("flair", "t1", "t2")),  # --source absent: falls back
        (("t1", "flair", "t2", "t1ce"), None, None, ()),
    ],
)
def test_case_folder_fills_exactly_the_missing(
    savedmodel_dir, phantom_root, tmp_path, present, source, chosen, expected, capsys
):
    copy, cid = _case_with(phantom_root, tmp_path, present)
    before = sorted(os.listdir(copy))
    written = translate(
        _predictor(savedmodel_dir),
        str(copy),
        str(copy),
        source=source,
        verbose=False,
    )
    # The model was trained on t2 only: from another source every target is refused.
    trained = chosen in (None, "t2")
    assert sorted(written) == (sorted(expected) if trained else [])
    assert sorted(os.listdir(copy)) == sorted(
        before + [f"{cid}_{t}_synth.nii.gz" for t in expected if trained]
    )
    if not trained:
        err = capsys.readouterr().err
        for t in expected:
            assert f"refused: {cid} {t}: the model was not trained for {chosen}->{t}" in err


def _t2_file(phantom_root):
    folder, cid = case_folder(phantom_root)
    return os.path.join(folder, f"{cid}_t2.nii.gz")


def _write_text(path, text="not an image"):
    path.write_text(text)
    return path


def _four_d(tmp_path):
    path = tmp_path / "vol4d_t2.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 2), np.float32), np.eye(4)), path)
    return path


def _no_signature_model(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.other = tf.function(
        lambda x: {"y": x * module.scale}, input_signature=[tf.TensorSpec((None,), tf.float32)]
    )
    path = tmp_path / "other_model"
    tf.saved_model.save(module, str(path), signatures={"other": module.other})
    return path


def _clash(phantom_root, tmp_path, symlink):
    copy, cid = _case_with(phantom_root, tmp_path, ("t2",), index=3)
    target = copy / f"{cid}_flair_synth.nii.gz"
    if symlink:  # an output name that IS an input file
        os.symlink(copy / f"{cid}_t2.nii.gz", target)
    else:
        target.write_bytes(b"someone's file")
    return copy


# The first case runs in a fresh interpreter (its import-time output counts too); the
# others run the same `main` in this process (helpers.run_in_process).
@pytest.mark.parametrize(
    "setup, extra, needle, fresh",
    [
        (lambda r, t: ("model", _write_text(t / "junk_t2.nii.gz")), [], "unreadable NIfTI", True),
        (lambda r, t: ("model", _four_d(t)), [], "4-D volume", False),
        (lambda r, t: ("model", case_folder(r)[0]), ["--source", "pd"], "Unknown source", False),
        (
            lambda r, t: ("model", case_folder(r)[0]),
            ["--targets", "t1,dwi"],
            "Unknown target",
            False,
        ),
        (lambda r, t: ("model", _write_text(t / "scan.nii.gz")), [], "give --source", False),
        (
            lambda r, t: ("model", (t / "empty_case").mkdir() or t / "empty_case"),
            [],
            "no usable modality",
            False,
        ),
        (lambda r, t: ("no_signature", _t2_file(r)), [], "no 'serving_default'", False),
        (lambda r, t: ("empty_model", _t2_file(r)), [], "neither saved_model.pb", False),
        (
            lambda r, t: ("model", _clash(r, t, symlink=False)),
            ["--overwrite-off"],
            "already exists",
            False,
        ),
        (
            lambda r, t: ("model", _clash(r, t, symlink=True)),
            ["--overwrite"],
            "is an input file",
            False,
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    savedmodel_dir, phantom_root, tmp_path, setup, extra, needle, fresh
):
    model_kind, input_path = setup(phantom_root, tmp_path)
    model = {"model": savedmodel_dir, "no_signature": None, "empty_model": None}[model_kind]
    if model_kind == "no_signature":
        model = _no_signature_model(tmp_path)
    elif model_kind == "empty_model":
        model = tmp_path / "empty_model"
        model.mkdir()
    extra = [e for e in extra if e != "--overwrite-off"]
    clash = "_clash" in setup.__code__.co_names
    out = input_path if clash else tmp_path / "out"
    before = _tree(tmp_path)
    argv = ["--model", model, "--input", input_path, "--out-dir", out, *extra]
    if fresh:
        result = run_cli("dygan_tf.translate", *argv)
    else:
        result = run_in_process(translate_main, *argv)
    line = one_error_line(result)
    assert needle in line, line
    assert _tree(tmp_path) == before


@pytest.fixture(scope="module")
def flair_multi_run(tmp_path_factory):
    """A multi-source run trained for FLAIR only (config.json + generator.keras, random
    weights): it knows the 7 rows `<available set>->flair` and no other."""
    from dygan_tf.config.run_config import get_preset
    from tests.helpers import save_untrained_run

    config = get_preset("tiny").override(inputs="multi", source="any", targets=("flair",))
    return save_untrained_run(tmp_path_factory.mktemp("flair_run"), config)


def test_an_untrained_task_is_refused_per_case_and_written_only_when_allowed(
    flair_multi_run, phantom_root, tmp_path
):
    """A case missing FLAIR and T2, completed by a FLAIR-only model: FLAIR is written, T2
    refused (named with the tasks the model knows), exit 1; --allow-untrained writes T2
    too, marked in the summary and by a JSON record beside it."""
    import json

    from dygan_tf import translate as translate_cmd

    root = tmp_path / "root"
    root.mkdir()
    _, cid = _case_with(phantom_root, root, ("t1", "t1ce"))
    out = tmp_path / "out"
    argv = ["--model", flair_multi_run, "--input", root, "--out-dir", out, "--quiet"]
    result = run_in_process(translate_cmd.main, *argv)
    assert result.returncode == 1, result.stderr
    refused = [ln for ln in result.stderr.splitlines() if ln.startswith("refused: ")]
    assert len(refused) == 1 and refused[0].startswith(
        f"refused: {cid} t2: the model was not trained for t1+t1ce->t2 (it knows "
    ), result.stderr
    assert "t1+t1ce+t2->flair" in refused[0]
    assert sorted(os.listdir(out)) == [f"{cid}_flair_synth.nii.gz"]
    row = next(ln for ln in result.stdout.splitlines() if ln.startswith(cid))
    assert re.search(r"\brefused\b.*flair.*t2: the model was not trained for t1\+t1ce->t2", row)
    assert "0 failed, 1 refused of 1 cases" in result.stdout

    result = run_in_process(translate_cmd.main, *argv, "--allow-untrained")
    assert result.returncode == 0, result.stderr
    assert f"warning: {cid} t2: written though the model was not trained for t1+t1ce->t2" in (
        result.stderr
    )
    assert sorted(os.listdir(out)) == sorted(
        [f"{cid}_flair_synth.nii.gz", f"{cid}_t2_synth.nii.gz", f"{cid}_t2_synth.untrained.json"]
    )
    row = next(ln for ln in result.stdout.splitlines() if ln.startswith(cid))
    assert "untrained" in row and "t2 untrained" in row, result.stdout
    record = json.loads((out / f"{cid}_t2_synth.untrained.json").read_text())
    assert record["untrained"] is True and record["task"] == "t1+t1ce->t2"
    assert record["output"] == f"{cid}_t2_synth.nii.gz"
