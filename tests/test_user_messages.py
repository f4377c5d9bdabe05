"""What the commands tell a user is true: a model and shards of different sizes, the
modality spellings of every BraTS release, the flag an error names, outputs kept apart
from the inputs they were made from."""

import json
import shutil

import pytest

from dygan_tf.data.manifest import MANIFEST
from tests import helpers


@pytest.fixture(scope="module")
def shards_of_another_size(tfrecord_dir, tmp_path_factory):
    """The session shards, their manifest saying 128 px (the size check reads it first)."""
    out = tmp_path_factory.mktemp("records128") / "records"
    shutil.copytree(tfrecord_dir, out)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "image_size": 128}))
    return out


@pytest.mark.parametrize("flag", ["--run", "--model"])
def test_evaluate_size_mismatch_is_one_line(
    flag, run_dir, savedmodel_dir, shards_of_another_size, tmp_path
):
    from dygan_tf import evaluate

    model = run_dir if flag == "--run" else savedmodel_dir
    result = helpers.run_in_process(
        evaluate.main, flag, model, "--data", shards_of_another_size, "--out", tmp_path / "e"
    )
    line = helpers.one_error_line(result)
    assert "shards are 128 px" in line and "expects 64 px" in line, line
    assert "--image-size 64" in line, line
    assert not (tmp_path / "e").exists()


def test_row_analysis_size_mismatch_is_one_line(run_dir, shards_of_another_size, tmp_path):
    from dygan_tf.evaluation import case_gain

    result = helpers.run_in_process(
        case_gain.main, "--run", run_dir, "--row", "t2->flair", "--data", shards_of_another_size
    )
    line = helpers.one_error_line(result)
    assert line.startswith("error: --data ") and "shards are 128 px" in line, line
