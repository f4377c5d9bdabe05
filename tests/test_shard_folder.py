"""`ShardFolder`: a shard folder opened once. Its record equals the manifest module's,
and `fit` and `evaluate --run` read manifest.json exactly once each (the command
opens the shards and hands them down)."""

import builtins
import os

import pytest

from dygan_tf import evaluate, fit
from dygan_tf.data import manifest as manifest_lib
from dygan_tf.data.shard_folder import ShardFolder, open_shards
from dygan_tf.utils.errors import UserError
from tests.helpers import run_in_process

pytestmark = pytest.mark.slow


def test_shard_folder_holds_what_the_manifest_module_reads(tfrecord_dir):
    shards = ShardFolder.open(tfrecord_dir)
    assert open_shards(shards) is shards
    assert os.fspath(shards) == str(tfrecord_dir) == str(shards)
    assert shards.manifest == manifest_lib.read_manifest(tfrecord_dir)
    assert shards.record() == manifest_lib.shard_record(tfrecord_dir)
    assert shards.sha256 == manifest_lib.manifest_sha256(tfrecord_dir)
    assert shards.image_size == 64
    assert shards.files("train") == manifest_lib.shard_files(tfrecord_dir, "train")
    assert shards.split_cases("test") == manifest_lib.split_cases(tfrecord_dir, "test")
    assert shards.baseline() is shards  # no baseline_from: the folder itself
    with pytest.raises(UserError, match="no split 'valid'"):
        shards.split_cases("valid")


def test_open_reports_a_missing_manifest_in_one_line(tmp_path):
    with pytest.raises(UserError, match=r"manifest\.json: not found"):
        ShardFolder.open(tmp_path)


@pytest.fixture
def manifest_reads(monkeypatch):
    """A list that grows by one for every `open` of a manifest.json."""
    reads = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)):
            if os.path.basename(os.fsdecode(file)) == manifest_lib.MANIFEST:
                reads.append(os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    return reads


def test_fit_then_evaluate_read_the_manifest_once_each(tfrecord_dir, tmp_path, manifest_reads):
    run = tmp_path / "run"
    flags = ["--preset", "tiny", "--epochs", "1", "--steps-per-epoch", "1"]
    result = run_in_process(fit.main, "--data", tfrecord_dir, "--out", run, *flags)
    assert result.returncode == 0, result.stderr
    assert len(manifest_reads) == 1, manifest_reads
    # A resume (run.json exists: the data check) still reads it once.
    manifest_reads.clear()
    result = run_in_process(fit.main, "--data", tfrecord_dir, "--out", run, *flags)
    assert result.returncode == 0, result.stderr
    assert len(manifest_reads) == 1, manifest_reads
    # evaluate --run: the shards from run.json, opened once.
    manifest_reads.clear()
    result = run_in_process(evaluate.main, "--run", run, "--out", tmp_path / "eval")
    assert result.returncode == 0, result.stderr
    assert len(manifest_reads) == 1, manifest_reads
    assert (tmp_path / "eval" / "report.json").is_file()
