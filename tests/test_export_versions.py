"""The demo's export into a TF Serving base path: a rerun with the same weights writes
no second version, changed weights write the next one, and a version exported by
release 0.1.0 (no recorded digest) still works beside the new ones."""

import contextlib
import io
import json
import os
import shutil

import pytest

from dygan_tf.config.run_config import get_preset
from dygan_tf.inference import savedmodel
from dygan_tf.inference.predictor import load_predictor
from dygan_tf.run_folder.files import load_run
from dygan_tf.training.fit_lib import export_demo
from tests.helpers import REPO, save_untrained_run

pytestmark = pytest.mark.slow
RELEASE = os.path.join(REPO, "tests", "data", "release_0_1_0")


def _export(run, saved_models):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        out = export_demo(str(run), "dygan_demo", str(saved_models))
    return out, printed.getvalue()


def _versions(saved_models):
    return sorted(os.listdir(saved_models / "dygan_demo"))


def test_a_rerun_exports_once_and_new_weights_export_the_next_version(run_dir, tmp_path):
    saved = tmp_path / "saved_models"
    first, printed = _export(run_dir, saved)
    assert first == str(saved / "dygan_demo" / "1") and printed == ""
    _, generator = load_run(str(run_dir))
    metadata = json.loads((saved / "dygan_demo" / "1" / savedmodel.METADATA).read_text())
    assert metadata[savedmodel.WEIGHTS_DIGEST] == savedmodel.weights_digest(generator)

    again, printed = _export(run_dir, saved)  # the finished demo run again
    assert again == first and _versions(saved) == ["1"]
    assert printed.strip() == f"{first} already serves these weights: it stays the current version"

    (tmp_path / "other").mkdir()
    other = save_untrained_run(tmp_path / "other", get_preset("tiny"), seed=1)
    second, printed = _export(other, saved)
    assert second == str(saved / "dygan_demo" / "2") and _versions(saved) == ["1", "2"]
    assert printed == ""
    # The same weights as version 1 again: version 2 is the latest, so they are new to it.
    third, _ = _export(run_dir, saved)
    assert third == str(saved / "dygan_demo" / "3") and _versions(saved) == ["1", "2", "3"]
    assert savedmodel.weights_digest(generator) != savedmodel.weights_digest(generator, "flip")


def test_a_release_0_1_0_version_without_digest_counts_as_different(tmp_path):
    saved = tmp_path / "saved_models"
    shutil.copytree(os.path.join(RELEASE, "savedmodel"), saved / "dygan_demo" / "1")
    assert savedmodel.exported_digest(str(saved / "dygan_demo" / "1")) is None
    run = os.path.join(RELEASE, "run_tiny")
    out, printed = _export(run, saved)
    assert out == str(saved / "dygan_demo" / "2") and printed == ""
    out, printed = _export(run, saved)  # now the latest version records its digest
    assert out == str(saved / "dygan_demo" / "2") and _versions(saved) == ["1", "2"]
    assert "already serves these weights" in printed
    # Both load; TF Serving's base path serves the latest.
    assert load_predictor(str(saved / "dygan_demo" / "1")).image_size == 32
    assert load_predictor(str(saved / "dygan_demo")).path == str(saved / "dygan_demo" / "2")
