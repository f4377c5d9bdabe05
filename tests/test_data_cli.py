"""The data commands on bad input: one line on stderr naming the file, exit code 2,
no traceback and no shard left behind; and a build killed with SIGKILL."""

import glob
import gzip
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from data_prep import build_tfrecords, make_phantom
from dygan_tf.data import pipeline, shards
from dygan_tf.data.manifest import read_manifest
from dygan_tf.utils.errors import UserError
from tests.helpers import BUILD_ARGS, REPO, case_folder, run_cli, run_in_process

BUILD = "data_prep.build_tfrecords"
KEYS = ("t1", "t1ce", "t2", "flair", "seg")


def _one_case_root(phantom_root, tmp_path):
    """A BraTS root holding one phantom case, its files symlinked (cheap to mutate)."""
    folder, cid = case_folder(phantom_root)
    case = tmp_path / "root" / "HGG" / cid
    case.mkdir(parents=True)
    for key in KEYS:
        os.symlink(os.path.join(folder, f"{cid}_{key}.nii.gz"), case / f"{cid}_{key}.nii.gz")
    return tmp_path / "root", case, cid


def _replace(case, cid, key, volume, affine=None, header_of="t1"):
    reference = nib.load(str(case / f"{cid}_{header_of}.nii.gz"))
    path = case / f"{cid}_{key}.nii.gz"
    os.remove(path)
    nib.save(nib.Nifti1Image(volume, reference.affine if affine is None else affine), str(path))
    return path


def _assert_user_error(result, out, *needles):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    leftovers = [n for n in os.listdir(out)] if os.path.isdir(out) else []
    assert not [
        n for n in leftovers if "tfrecord" in n or n == "manifest.json" or n.startswith(".partial")
    ], leftovers


def _build(root, out, *extra, fresh=False):
    """The build command on `root`; in this process unless `fresh` (see run_in_process)."""
    args = [
        "--brats-root",
        root,
        "--out",
        out,
        "--image-size",
        32,
        "--train-hgg",
        1,
        "--train-lgg",
        0,
        "--workers",
        1,
        *extra,
    ]
    return run_cli(BUILD, *args) if fresh else run_in_process(build_tfrecords.main, *args)


def _missing(case, cid):
    os.remove(case / f"{cid}_t1ce.nii.gz")
    return f"{cid}_t1ce.nii.gz"


def _truncated(case, cid):
    path = case / f"{cid}_t2.nii.gz"
    payload = open(path, "rb").read()
    os.remove(path)
    path.write_bytes(payload[: len(payload) // 2])
    return path.name


def _shape(case, cid):
    return _replace(case, cid, "flair", np.ones((240, 240, 150), np.int16)).name


def _affine(case, cid):
    affine = nib.load(str(case / f"{cid}_t1.nii.gz")).affine.copy()
    affine[0, 3] += 5.0
    return _replace(case, cid, "t2", np.ones((240, 240, 155), np.int16), affine).name


def _four_d(case, cid):
    return _replace(case, cid, "t1", np.ones((240, 240, 155, 2), np.int16)).name


def _all_zero(case, cid):
    return _replace(case, cid, "t1ce", np.zeros((240, 240, 155), np.int16)).name


def _nan(case, cid):
    volume = np.ones((240, 240, 155), np.float32)
    volume[100, 100, 80] = np.nan
    return _replace(case, cid, "flair", volume).name


def _absurd(case, cid):
    path = case / f"{cid}_t2.nii.gz"
    header = nib.load(str(path)).header.copy()
    header.set_data_shape((2049, 2049, 2049))
    os.remove(path)
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 64, mtime=0))
    return path.name


@pytest.mark.parametrize(
    "mutate, what",
    [
        (_missing, "missing t1ce"),
        (_truncated, "truncated"),
        (_shape, "shape"),
        (_affine, "affine"),
        (_four_d, "4-D"),
        (_all_zero, "all zeros"),
        (_nan, "NaN"),
        (_absurd, "header claims"),
    ],
)
def test_bad_case_is_one_line_exit_2_and_no_shard(phantom_root, tmp_path, mutate, what):
    root, case, cid = _one_case_root(phantom_root, tmp_path)
    name = mutate(case, cid)
    out = tmp_path / "out"
    result = _build(root, out, fresh=mutate is _missing)  # one case in a fresh interpreter
    _assert_user_error(result, out, name, what, cid)


def test_skip_bad_lists_the_case_in_the_manifest(phantom_root, tmp_path):
    root, case, cid = _one_case_root(phantom_root, tmp_path)
    good_folder, good = case_folder(phantom_root, 1)
    os.symlink(good_folder, root / "HGG" / good)
    _nan(case, cid)
    out = tmp_path / "out"
    result = _build(root, out, "--skip-bad", "--train-hgg", 2)
    assert result.returncode == 0, result.stderr
    assert f"skipping case {cid}" in result.stderr
    # Not a terminal: plain progress lines, no terminal control codes.
    assert not any(c in result.stdout for c in ("\x1b", "\r", "\b")), repr(result.stdout)
    assert "2/2 cases (100%)" in result.stdout
    manifest = read_manifest(out)
    assert [s["case_id"] for s in manifest["skipped"]] == [cid]
    assert [c["case_id"] for c in manifest["splits"]["train"]["cases"]] == [good]
    assert manifest["splits"]["train"]["records"] == 5


@pytest.mark.parametrize(
    "setup, args, needles",
    [
        ("missing", [], ["--brats-root", "not a folder"]),
        ("empty", [], ["--brats-root", "no case folders"]),
        ("one", ["--train-hgg", 2], ["found 1 HGG cases", "--train-hgg"]),
        ("one", ["--compression", "zip"], ["--compression"]),
        ("one", ["--source-slices", "80:70"], ["--source-slices"]),
        ("one", ["--source-slices", "150:160"], ["--source-slices 150:160", "_flair"]),
    ],
)
def test_bad_root_or_flags(phantom_root, tmp_path, setup, args, needles):
    if setup == "one":
        root, _, _ = _one_case_root(phantom_root, tmp_path)
    else:
        root = tmp_path / "root"
        if setup == "empty":
            root.mkdir()
    out = tmp_path / "out"
    _assert_user_error(_build(root, out, *args), out, *needles)


def test_phantom_bad_flags(tmp_path):
    for fresh, args, needle in [
        (True, ["--cases", 1], "--cases"),  # in a fresh interpreter; the rest in this one
        (False, ["--cases", 3, "--hgg", 1], "either"),
        (False, ["--hgg", 2], "--lgg"),
        (False, ["--cases", "x"], "--cases"),
    ]:
        argv = ["--out", tmp_path, *args]
        if fresh:
            result = run_cli("data_prep.make_phantom", *argv)
        else:
            result = run_in_process(make_phantom.main, *argv)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
        assert needle in result.stderr and "Traceback" not in result.stderr
    assert not os.listdir(tmp_path)


def test_kill_9_leaves_no_finished_looking_shard(phantom_root, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=REPO)
    command = [
        sys.executable,
        "-m",
        BUILD,
        "--brats-root",
        phantom_root,
        "--out",
        out,
        "--image-size",
        64,
        "--train-hgg",
        3,
        "--train-lgg",
        1,
        "--workers",
        2,
    ]
    process = subprocess.Popen(
        [str(c) for c in command],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    # Kill once the build has made its staging folder, which lives from the start of the
    # build to its publish. (Waiting for shard files in it raced: at 64 px the builder
    # writes every shard within milliseconds, once TensorFlow has loaded.)
    while time.time() < deadline and not glob.glob(str(out / ".partial-build-*")):
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the build and its workers, as kill -9
    process.wait()
    assert glob.glob(str(out / ".partial-build-*")), "build ended before the kill"
    assert not glob.glob(str(out / "*.tfrecord*")) and not (out / "manifest.json").exists()
    with pytest.raises(UserError, match="manifest.json: not found"):
        pipeline.make_dataset(out, "train")
    shards.build(str(phantom_root), str(out), **BUILD_ARGS)  # cleans up
    assert not glob.glob(str(out / ".partial-*"))
    assert read_manifest(out)["splits"]["train"]["records"] == 20
