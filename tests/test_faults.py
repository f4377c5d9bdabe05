"""Faults at rest and in flight: corrupted shards are named, full disks (a file-size
limit, SIGXFSZ ignored) give one error line and leave the previous files as they were,
and a rerun after the limit is lifted ends with the same bytes as an undisturbed run.
"""

import hashlib
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from dygan_tf.data import shard_check
from dygan_tf.data.manifest import read_manifest
from dygan_tf.utils.errors import UserError
from tests.helpers import (
    BUILD_ARGS,
    case_folder,
    one_error_line,
    run_cli,
    run_cli_reporting_tensorflow,
    run_limited,
)


def _digests(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _build_argv(root, out):
    return [
        "--brats-root",
        root,
        "--out",
        out,
        "--image-size",
        BUILD_ARGS["image_size"],
        "--train-hgg",
        BUILD_ARGS["train_hgg"],
        "--train-lgg",
        BUILD_ARGS["train_lgg"],
        "--shards-per-split",
        BUILD_ARGS["shards_per_split"],
        "--workers",
        BUILD_ARGS["workers"],
    ]


# ------------------------------------------------------------------ corrupted at rest
def _corrupt_copy(tfrecord_dir, tmp_path, how):
    copy = tmp_path / "records"
    shutil.copytree(tfrecord_dir, copy)
    shard = copy / read_manifest(copy)["splits"]["train"]["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) // 2]
    shard.write_bytes(bytes(data))
    return copy, shard


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_corrupted_shard_is_named_before_reading(tfrecord_dir, tmp_path, how):
    from dygan_tf.data.pipeline import make_dataset

    copy, shard = _corrupt_copy(tfrecord_dir, tmp_path, how)
    with pytest.raises(UserError, match=f"^{shard}: corrupted or changed since the build"):
        make_dataset(str(copy), "train")
    make_dataset(str(copy), "test")  # the intact split still reads


def test_verify_names_each_bad_shard(tfrecord_dir, tmp_path):
    ok, imported = run_cli_reporting_tensorflow(
        "data_prep.build_tfrecords", "--verify", tfrecord_dir, timeout=120
    )
    assert ok.returncode == 0 and not imported, ok.stderr  # verify needs no TensorFlow
    assert ok.stdout.count(": ok (") == 4 and "every shard matches" in ok.stdout

    copy, flipped = _corrupt_copy(tfrecord_dir, tmp_path, "flip")
    test_shard = copy / read_manifest(copy)["splits"]["test"]["shards"][1]["file"]
    test_shard.write_bytes(test_shard.read_bytes()[:100])
    before = _digests(copy)
    result = run_cli("data_prep.build_tfrecords", "--verify", copy, timeout=120)
    line = one_error_line(result)
    assert "2 shard(s) differ" in line and flipped.name in line and test_shard.name in line
    assert f"{flipped.name}: sha256" in result.stdout and result.stdout.count(": ok (") == 2
    assert _digests(copy) == before  # verify only reads


def test_record_count_is_checked_too(tfrecord_dir, tmp_path):
    copy = tmp_path / "records"
    shutil.copytree(tfrecord_dir, copy)
    manifest = read_manifest(copy)
    entry = dict(manifest["splits"]["train"]["shards"][0], records=999)
    problem = shard_check.shard_problem(copy, entry, manifest["compression"])
    assert problem and "records; the manifest lists 999" in problem


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_records_counted_by_their_framing_as_tensorflow_reads_them(tmp_path, compression):
    # `--verify` counts records without TensorFlow; the count must be TensorFlow's, and
    # a file whose framing is broken must be named, not counted.
    import tensorflow as tf

    path = str(tmp_path / "shard.tfrecord")
    options = tf.io.TFRecordOptions("GZIP" if compression == "gzip" else "")
    sizes = (0, 1, 300, (1 << 20) + 7, 5)  # one record longer than a read block
    with tf.io.TFRecordWriter(path, options) as writer:
        for i, size in enumerate(sizes):
            writer.write(bytes([i]) * size)
    kind = "GZIP" if compression == "gzip" else ""
    assert shard_check.count_records(path, compression) == len(sizes)
    assert int(tf.data.TFRecordDataset(path, kind).reduce(0, lambda n, _: n + 1)) == len(sizes)

    plain = path if compression == "none" else str(tmp_path / "plain.tfrecord")
    if compression == "gzip":
        with tf.io.TFRecordWriter(plain) as writer:
            for i, size in enumerate(sizes):
                writer.write(bytes([i]) * size)
    data = bytearray(open(plain, "rb").read())
    second = 12 + 0 + 4  # record 1 is empty: its header and data checksum
    data[second] ^= 0x01  # a bit of record 2's length
    bad = tmp_path / "bad_length.tfrecord"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="the length of record 2 fails its checksum"):
        shard_check.count_records(str(bad), "none")
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(open(plain, "rb").read()[: 12 + 4 + 12 + 4 + 12 + 100])
    with pytest.raises(ValueError, match="the file ends inside record 3"):
        shard_check.count_records(str(cut), "none")
    entry = {"file": cut.name, "records": len(sizes)}
    assert shard_check.shard_problem(tmp_path, entry, "none") == (
        "unreadable records (the file ends inside record 3)"
    )
    if compression == "gzip":
        truncated = tmp_path / "truncated.tfrecord.gz"
        truncated.write_bytes(open(path, "rb").read()[:-20])
        problem = shard_check.shard_problem(tmp_path, {"file": truncated.name}, "gzip")
        assert problem.startswith("unreadable records ("), problem


def test_evaluate_on_a_corrupted_shard_is_one_line(run_dir, tfrecord_dir, tmp_path):
    copy, shard = _corrupt_copy(tfrecord_dir, tmp_path, "flip")
    # The corrupted shard is a training shard: evaluate it as the split it is in.
    line = one_error_line(
        run_cli(
            "dygan_tf.evaluate",
            "--run",
            run_dir,
            "--data",
            copy,
            "--split",
            "train",
            "--out",
            tmp_path / "eval",
            timeout=300,
        )
    )
    assert str(shard) in line, line


# ----------------------------------------------------------------- write errors
def test_full_disk_while_building_shards_keeps_the_previous_build(
    phantom_root, tfrecord_dir, tmp_path
):
    out = tmp_path / "records"
    shutil.copytree(tfrecord_dir, out)  # a previous good build in the folder
    before = _digests(out)
    result = run_limited("data_prep.build_tfrecords", _build_argv(phantom_root, out), 20_000)
    line = one_error_line(result)
    assert "cannot write (File too large)" in line and str(out) in line, line
    assert _digests(out) == before  # old shards and manifest untouched, no staging left
    assert sorted(os.listdir(out)) == sorted(os.listdir(tfrecord_dir))

    # The limit lifted, the same command rebuilds the same bytes.
    shutil.rmtree(out)
    result = run_cli("data_prep.build_tfrecords", *_build_argv(phantom_root, out))
    assert result.returncode == 0, result.stderr
    assert _digests(out) == _digests(tfrecord_dir)


def test_full_disk_while_translating_writes_nothing(run_dir, phantom_root, tmp_path):
    from dygan_tf.inference.translation import translate

    folder, cid = case_folder(phantom_root, 2)
    image = nib.load(os.path.join(folder, f"{cid}_t2.nii.gz"))
    shift = np.eye(4)
    shift[2, 3] = 74
    small = np.ascontiguousarray(np.asanyarray(image.dataobj)[:, :, 74:80])
    source = tmp_path / f"{cid}_t2.nii.gz"
    nib.save(nib.Nifti1Image(small, image.affine @ shift, image.header), source)
    out = tmp_path / "out"
    out.mkdir()
    old = out / f"{cid}_flair_synth.nii.gz"
    old.write_bytes(b"an earlier output")  # replaced only with --overwrite, and only whole
    before = _digests(tmp_path)
    argv = ["--model", run_dir, "--input", source, "--out-dir", out, "--overwrite", "--quiet"]
    line = one_error_line(run_limited("dygan_tf.translate", argv, 4_000))
    assert "cannot write (File too large)" in line and f"{cid}_" in line, line
    assert _digests(tmp_path) == before

    written = translate(str(run_dir), str(source), str(out), overwrite=True, verbose=False)
    reference = translate(str(run_dir), str(source), str(tmp_path / "ref"), verbose=False)
    for target, path in written.items():
        a, b = nib.load(path), nib.load(reference[target])
        np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
        assert a.header.binaryblock == b.header.binaryblock


# ----------------------------------------------------------- untrusted model files
def test_keras_file_with_code_is_refused_in_safe_mode(run_dir, tmp_path, monkeypatch):
    """A generator.keras holding a Lambda layer (arbitrary Python) is never run."""
    import keras

    from dygan_tf.inference.predictor import load_predictor

    marker = tmp_path / "code_ran"
    image = keras.Input((64, 64, 1), name="image")
    task = keras.Input((12,), name="task")
    monkeypatch.setenv("DYGAN_TEST_MARKER", str(marker))  # no closure: the code is all
    out = keras.layers.Lambda(
        lambda x: (open(__import__("os").environ["DYGAN_TEST_MARKER"], "w").close(), x)[1]
    )(image)
    model = keras.Model({"image": image, "task": task}, out)
    folder = tmp_path / "hostile_run"
    folder.mkdir()
    shutil.copy(run_dir / "config.json", folder / "config.json")
    model.save(folder / "generator.keras")
    marker.unlink()  # building the model above ran the lambda once
    with pytest.raises(UserError, match=r"generator.keras: cannot load the generator \(.*Lambda"):
        load_predictor(str(folder))
    assert not marker.exists()
    # Through the command: one line, exit 2, nothing written.
    source = tmp_path / "scan_t2.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2), np.float32), np.eye(4)), source)
    line = one_error_line(
        run_cli(
            "dygan_tf.translate", "--model", folder, "--input", source, "--out-dir", tmp_path / "o"
        )
    )
    assert line.startswith(f"error: --model {folder}") and "Lambda" in line, line
    assert not marker.exists() and not (tmp_path / "o").exists()
