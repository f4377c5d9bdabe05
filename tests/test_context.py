"""Neighbouring slices as context (2.5-D, `--context K`) on a tiny BraTS root whose
brain reaches both ends of the volume: shards store each slice's 2K + 1 planes per
modality (0.0 beyond the ends) as record schema version 2, `make_dataset` feeds them
as channels in every input mode, and a K = 0 read of them gives the slices alone."""

import json

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from dygan_tf import build_tfrecords
from dygan_tf.config import conditions
from dygan_tf.config.tasks import MODALITIES
from dygan_tf.data import pipeline, preprocessing, records
from dygan_tf.data.manifest import read_manifest
from dygan_tf.data.shard_folder import ShardFolder
from dygan_tf.utils.errors import UserError
from tests.helpers import one_error_line, run_in_process

SHAPE = (12, 12, 6)  # 6 axial slices, brain in every one: the ends are brain slices
SIZE = 32
CASES = ("Tiny_0", "Tiny_1", "Tiny_2", "Tiny_3")
BUILD = ["--image-size", SIZE, "--train-hgg", 3, "--train-lgg", 0, "--workers", 1]
BUILD += ["--source-slices", "all", "--shards-per-split", 1]


def _write_root(root):
    rng = np.random.default_rng(0)
    mask = np.zeros(SHAPE, bool)
    mask[2:10, 3:9, :] = True
    for cid in CASES:
        folder = root / "HGG" / cid
        folder.mkdir(parents=True)
        for key in ("t1", "t1ce", "t2", "flair", "seg"):
            if key == "seg":
                volume = (mask & (rng.random(SHAPE) < 0.2)).astype(np.uint8) * 2
            else:
                volume = np.where(mask, rng.integers(1, 1000, SHAPE), 0).astype(np.int16)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folder / f"{cid}_{key}.nii.gz"))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("context_root")
    _write_root(root)
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


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--context", "-1"], "--context: expected >= 0, found -1"),
        (["--context", "x"], "--context: invalid int value: 'x'"),
    ],
)
def test_a_bad_context_is_one_line_and_writes_nothing(tiny_root, tmp_path, args, needle):
    out = tmp_path / "out"
    result = run_in_process(
        build_tfrecords.main, "--brats-root", tiny_root, "--out", out, *BUILD, *args
    )
    assert needle in one_error_line(result)
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
