"""Neighbouring slices as context (2.5-D, `--context K`) on a tiny BraTS root whose
brain reaches both ends of the volume: shards store each slice's 2K + 1 planes per
modality (0.0 beyond the ends) as record schema version 2, `make_dataset` feeds them
as channels in every input mode, and a K = 0 read of them gives the slices alone;
`fit --context 1` trains on them (and refuses shards of a smaller K in one line), its
run folder, .keras file and SavedModel translate alike, feeding each slice's
neighbours; a K = 0 model of release 0.1.0 still translates."""

import dataclasses
import json
import os

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from dygan_tf import build_tfrecords, evaluate, export, fit
from dygan_tf.config import conditions
from dygan_tf.config.run_config import get_preset
from dygan_tf.config.tasks import MODALITIES
from dygan_tf.data import pipeline, preprocessing, records
from dygan_tf.data.manifest import read_manifest
from dygan_tf.data.shard_folder import ShardFolder
from dygan_tf.inference import savedmodel, translation
from dygan_tf.inference.predictor import Predictor, load_predictor
from dygan_tf.models.builders import build_networks
from dygan_tf.run_folder import files as run_files
from dygan_tf.translate import main as translate_main
from dygan_tf.utils.errors import UserError
from tests.helpers import REPO, one_error_line, run_in_process, write_tiny_root

SHAPE = (12, 12, 6)  # 6 axial slices, brain in every one: the ends are brain slices
SIZE = 32
CASES = ("Tiny_0", "Tiny_1", "Tiny_2", "Tiny_3")
BUILD = ["--image-size", SIZE, "--train-hgg", 3, "--train-lgg", 0, "--workers", 1]
BUILD += ["--source-slices", "all", "--shards-per-split", 1]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("context_root")
    mask = np.zeros(SHAPE, bool)
    mask[2:10, 3:9, :] = True
    write_tiny_root(root, dict.fromkeys(CASES, mask))
    return root


def _build(root, out, *args):
    result = run_in_process(build_tfrecords.main, "--brats-root", root, "--out", out, *BUILD, *args)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def shards(tiny_root, tmp_path_factory):
    """{K: shard folder} built with --context 0 and --context 1 from one root."""
    base = tmp_path_factory.mktemp("context_shards")
    return {0: _build(tiny_root, base / "k0"), 1: _build(tiny_root, base / "k1", "--context", 1)}


def _records(folder, context):
    """{(case id, slice index): parsed record (numpy)} of every record in `folder`."""
    manifest = read_manifest(folder)
    found = {}
    for split in ("train", "test"):
        for shard in manifest["splits"][split]["shards"]:
            ds = tf.data.TFRecordDataset(str(folder / shard["file"]), compression_type="GZIP")
            for raw in ds:
                parsed = records.parse_example(raw, SIZE, context)
                parsed = {k: v.numpy() for k, v in parsed.items()}
                found[(parsed["case_id"].decode(), int(parsed["slice_index"]))] = parsed
    return found


# ------------------------------------------------------------------------ shards
def test_context_shards_hold_2k_plus_1_planes_zeros_beyond_the_ends(shards):
    plain, context = read_manifest(shards[0]), read_manifest(shards[1])
    assert plain["schema"] == records.schema_description() and plain["schema"]["version"] == 1
    assert context["schema"]["version"] == 2 and context["schema"]["context"] == 1
    assert ShardFolder.open(shards[0]).context == 0 and ShardFolder.open(shards[1]).context == 1
    # Only the schema differs: the same slices of the same cases.
    assert plain["splits"]["train"]["cases"] == context["splits"]["train"]["cases"]
    alone, with_planes = _records(shards[0], 0), _records(shards[1], 1)
    assert sorted(alone) == sorted(with_planes)
    depth = SHAPE[2]
    for (cid, k), parsed in with_planes.items():
        planes = parsed[records.PLANES_KEY]
        assert planes.shape == (SIZE, SIZE, 3 * len(MODALITIES))
        for i, m in enumerate(MODALITIES):
            np.testing.assert_array_equal(parsed[m], alone[(cid, k)][m])  # the slice itself
            for o in (-1, 0, 1):
                plane = planes[..., i * 3 + 1 + o]
                if 0 <= k + o < depth:
                    np.testing.assert_array_equal(plane, alone[(cid, k + o)][m])
                else:  # beyond the volume's ends: 0.0, not background (-1)
                    assert k in (0, depth - 1)
                    np.testing.assert_array_equal(plane, conditions.BEYOND_VOLUME)
        for key in ("seg", "brain_mask"):
            np.testing.assert_array_equal(parsed[key], alone[(cid, k)][key])


def test_context_planes_are_cut_with_zeros_beyond_the_volume():
    volume = np.arange(3)[None, None, :] * np.ones((2, 2, 1))
    planes = preprocessing.context_planes(lambda i: volume[:, :, i], 2, 2, 3, 2)
    assert planes.shape == (5, 2, 2) and planes.dtype == np.float32
    assert planes[:, 0, 0].tolist() == [0.0, 1.0, 2.0, 0.0, 0.0]


def test_an_unknown_schema_is_refused_naming_the_manifest(shards, tmp_path):
    manifest = json.loads((shards[1] / "manifest.json").read_text())
    manifest["schema"]["context"] = 2  # the features still say 3 planes
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="manifest.json: record schema version 2 differs"):
        read_manifest(tmp_path)


def test_a_bad_context_is_one_line_and_writes_nothing(tiny_root, tmp_path):
    out = tmp_path / "out"
    for value, needle in [("-1", "expected >= 0, found -1"), ("x", "invalid int value: 'x'")]:
        argv = ["--brats-root", tiny_root, "--out", out, *BUILD, "--context", value]
        assert f"--context: {needle}" in one_error_line(run_in_process(build_tfrecords.main, *argv))
        assert not out.exists()


# ----------------------------------------------------------------------- reading
def _first_batch(folder, **fields):
    return next(iter(pipeline.make_dataset(folder, "test", return_meta=True, **fields)))


@pytest.mark.parametrize(
    "fields",
    [
        dict(source="t2"),  # one source: its planes
        dict(source="any", every_row=True),  # any source: each row's source's planes
        dict(source="any", inputs="multi"),  # several sources: every modality's planes
    ],
)
def test_the_dataset_feeds_each_sources_planes_in_every_input_mode(shards, fields):
    with_planes = _records(shards[1], 1)
    image, target, task, meta = _first_batch(shards[1], context=1, **fields)
    plain = _first_batch(shards[1], context=0, **fields)
    inputs = fields.get("inputs", "single")
    assert image.shape[-1] == conditions.image_channels(inputs, 1)
    np.testing.assert_array_equal(target, plain[1])  # the targets: the slices themselves
    np.testing.assert_array_equal(task, plain[2])
    # A K = 0 read of context shards gives what K = 0 shards give.
    np.testing.assert_array_equal(plain[0], _first_batch(shards[0], context=0, **fields)[0])
    for r in range(image.shape[0]):
        key = (meta["case_id"][r].numpy().decode(), int(meta["slice_index"][r]))
        planes = with_planes[key][records.PLANES_KEY]
        available, _ = conditions.parse_row_key(meta["row"][r].numpy().decode())
        if inputs == "single":
            (source,) = available
            want = planes[..., conditions.context_channels([MODALITIES.index(source)], 1)]
        else:
            fed = np.repeat([m in available for m in MODALITIES], 3)
            want = np.where(fed, planes, conditions.FILL_VALUE)
        np.testing.assert_array_equal(image[r], want)
        np.testing.assert_array_equal(plain[0][r], want[..., 1::3])  # each modality's centre


def test_a_dataset_of_more_context_than_the_shards_is_refused(shards):
    with pytest.raises(UserError, match="built with --context 0, the dataset reads --context 1"):
        pipeline.make_dataset(shards[0], "test", context=1)
    with pytest.raises(ValueError, match="context must be an int >= 0"):
        pipeline.make_dataset(shards[0], "test", context=-1)


# ---------------------------------------------------------------- fit and inference
RELEASE_RUN = os.path.join(REPO, "tests", "data", "release_0_1_0", "run_tiny")
FIT = ["--preset", "tiny", "--image-size", SIZE, "--discriminator", "patch"]
FIT += ["--epochs", 1, "--steps-per-epoch", 2]


@pytest.fixture(scope="module")
def context_run(shards, tmp_path_factory):
    """A tiny run trained with --context 1 (one source, t2)."""
    out = tmp_path_factory.mktemp("context_run") / "run"
    result = run_in_process(fit.main, "--data", shards[1], "--out", out, *FIT, "--context", 1)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_fit_feeds_the_planes_and_records_k(context_run):
    config, generator = run_files.load_run(str(context_run))
    assert config.model.context == 1
    assert tuple(generator.input["image"].shape) == (None, SIZE, SIZE, 3)
    assert savedmodel.input_kind(generator) == ("single", 1)
    history = run_files.read_history(str(context_run))
    assert np.isfinite(float(history[-1]["val_psnr_mean"]))  # validation read K from the run


def test_fit_context_on_shards_of_a_smaller_k_is_one_line(shards, tmp_path):
    out = tmp_path / "run"
    result = run_in_process(fit.main, "--data", shards[0], "--out", out, *FIT, "--context", 1)
    line = one_error_line(result)
    assert line.startswith(f"error: --data {shards[0]}: shards were built with --context 0")
    assert "dygan-build-tfrecords --context 1" in line
    assert not out.exists()


def test_fit_export_translate_round_trip(context_run, shards, tiny_root, tmp_path):
    saved = tmp_path / "saved" / "1"
    result = run_in_process(export.main, "--run", context_run, "--out", saved)
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = json.loads((saved / "metadata.json").read_text())
    assert metadata["context"] == 1 and metadata["inputs"]["image"]["shape"] == [
        None,
        SIZE,
        SIZE,
        3,
    ]
    signature = tf.saved_model.load(str(saved)).signatures["serving_default"]
    assert signature.structured_input_signature[1]["image"].shape.as_list() == [None, SIZE, SIZE, 3]
    source = tiny_root / "HGG" / "Tiny_3" / "Tiny_3_t2.nii.gz"
    written = {}
    for name, model in [
        ("run", context_run),
        ("keras", context_run / "generator.keras"),
        ("savedmodel", saved),
    ]:
        assert load_predictor(str(model)).context == 1
        out = tmp_path / name
        result = run_in_process(
            translate_main, "--model", model, "--input", source, "--out-dir", out, "--quiet"
        )
        assert result.returncode == 0, result.stderr[-3000:]
        written[name] = {
            t: np.asanyarray(nib.load(out / f"Tiny_3_{t}_synth.nii.gz").dataobj)
            for t in ("flair", "t1", "t1ce")
        }
    for name in ("keras", "savedmodel"):
        for t, volume in written["run"].items():
            assert volume.shape == SHAPE and np.isfinite(volume).all()
            np.testing.assert_allclose(written[name][t], volume, rtol=1e-4, atol=1e-3)
    # evaluate reads K from the model: it scores context shards, refuses plain ones.
    report = tmp_path / "eval"
    result = run_in_process(
        evaluate.main, "--run", context_run, "--data", shards[1], "--out", report
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (report / "report.json").is_file()
    result = run_in_process(
        evaluate.main, "--run", context_run, "--data", shards[0], "--out", tmp_path / "eval0"
    )
    assert "shards were built with --context 0" in one_error_line(result)
    assert not (tmp_path / "eval0").exists()


def _answering_with(channel, inputs="single", seen=None):
    """A stand-in model of context 1 that answers with one channel of its input."""

    def call(image, task):
        if seen is not None:
            seen.append(image)
        return image[..., channel : channel + 1]

    return Predictor(call, f"channel {channel}", "keras", "-", SIZE, inputs, context=1)


def test_translation_feeds_each_slices_neighbours_zeros_beyond_the_ends(tiny_root):
    """Stand-in models of context 1: one answering with its input's plane k - 1 writes
    slice k - 1 of the source into output slice k, and 0.0 (denormalised) into slice
    0; one answering with plane k + 1 writes 0.0 into the last slice."""
    volume, affine, _ = translation.read_input(tiny_root / "HGG" / "Tiny_0" / "Tiny_0_t2.nii.gz")
    seen = []

    def synthesized(model, volumes=None):
        out, scale = translation.synthesize_case(
            volumes or {"t2": volume}, affine, ["flair"], model, "t2", batch_slices=2
        )
        return out["flair"], scale

    before, scale = synthesized(_answering_with(0, seen=seen))
    assert {image.shape[1:] for image in seen} == {(SIZE, SIZE, 3)}
    itself, _ = synthesized(_answering_with(1))
    after, _ = synthesized(_answering_with(2))
    brain, beyond = volume != 0, preprocessing.denormalize(conditions.BEYOND_VOLUME, scale)
    inner = brain[..., 1:-1]
    np.testing.assert_allclose(before[..., 1:-1][inner], itself[..., :-2][inner], atol=1e-3)
    np.testing.assert_allclose(after[..., 1:-1][inner], itself[..., 2:][inner], atol=1e-3)
    np.testing.assert_allclose(before[..., 0][brain[..., 0]], beyond, rtol=1e-5)
    np.testing.assert_allclose(after[..., -1][brain[..., -1]], beyond, rtol=1e-5)
    # Several sources: every modality's 3 planes, modality-major, a missing one filled.
    seen.clear()
    t2_itself = conditions.context_channels([MODALITIES.index("t2")], 0, 1)[0]
    multi, _ = synthesized(
        _answering_with(t2_itself, "multi", seen),
        {"t1": np.where(brain, volume // 2 + 1, 0), "t2": volume},
    )
    np.testing.assert_allclose(multi, itself, rtol=1e-5)
    image = np.concatenate(seen)
    assert image.shape[-1] == 12
    for m in ("flair", "t1ce"):
        planes = conditions.context_channels([MODALITIES.index(m)], 1)
        np.testing.assert_array_equal(image[..., planes], conditions.FILL_VALUE)


def test_the_networks_take_2k_plus_1_planes_per_modality():
    for inputs, channels in (("single", 3), ("multi", 12)):
        model = get_preset("tiny").model
        model = dataclasses.replace(model, inputs=inputs, context=1)
        generator, discriminator = build_networks(model)
        assert generator.input["image"].shape[-1] == channels
        assert discriminator.input["image"].shape[-1] == channels


def test_a_k0_model_of_release_0_1_0_still_translates(tiny_root, tmp_path):
    predictor = load_predictor(RELEASE_RUN)
    assert predictor.context == 0 and predictor.config.model.context == 0
    source = tiny_root / "HGG" / "Tiny_3" / "Tiny_3_t2.nii.gz"
    result = run_in_process(
        translate_main, "--model", RELEASE_RUN, "--input", source, "--out-dir", tmp_path, "--quiet"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    volume = np.asanyarray(nib.load(tmp_path / "Tiny_3_flair_synth.nii.gz").dataobj)
    assert volume.shape == SHAPE and np.isfinite(volume).all() and volume.std() > 0
