"""A run folder records the shards it trained on (run.json: manifest.json's sha256 and
each split's cases): evaluate, translate and a resumed fit refuse other or rebuilt
shards in one line naming what changed, `--allow-changed-data` lets them through (and
the report records it), and a run folder of release 0.1.0, which records no hash, is
used with one warning line."""

import json
import os
import shutil

import pytest

from dygan_tf import evaluate, fit, translate
from dygan_tf.config.run_config import get_preset
from dygan_tf.data.manifest import manifest_path
from dygan_tf.run_folder import files as run_files
from tests.helpers import REPO, case_folder, one_error_line, run_in_process, save_untrained_run

pytestmark = pytest.mark.slow
RELEASE = os.path.join(REPO, "tests", "data", "release_0_1_0")


def _swap_splits(shards):
    """Rewrites the folder's manifest with train and test swapped, as a rebuild with
    another split would (the shards themselves stay valid)."""
    with open(manifest_path(shards), encoding="utf-8") as f:
        manifest = json.load(f)
    splits = manifest["splits"]
    splits["train"], splits["test"] = splits["test"], splits["train"]
    record = manifest["split"]
    record["train_cases"], record["test_cases"] = record["test_cases"], record["train_cases"]
    with open(manifest_path(shards), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return sorted(c["case_id"] for c in splits["test"]["cases"])


def test_rebuilt_shards_are_refused_and_allowed_with_the_flag(tfrecord_dir, phantom_root, tmp_path):
    shards = shutil.copytree(tfrecord_dir, tmp_path / "shards")
    (tmp_path / "run").mkdir()
    run = save_untrained_run(tmp_path / "run", get_preset("tiny"))
    info = run_files.write_info(run, shards, ["BraTS19_PHANTOM_001_1"])
    assert len(info["shards"]["manifest_sha256"]) == 64
    assert info["shards"]["splits"]["test"] == ["BraTS19_PHANTOM_004_1", "BraTS19_PHANTOM_005_1"]
    moved = _swap_splits(shards)  # the 4 training cases are now the test split

    out = tmp_path / "eval"
    line = one_error_line(run_in_process(evaluate.main, "--run", run, "--out", out))
    assert line.startswith(f"error: {shards}: not the shards {run} trained on (manifest.json ")
    assert f"4 cases moved from train to test ({', '.join(moved)})" in line
    assert "2 cases moved from test to train" in line
    assert line.endswith("--allow-changed-data scores them anyway")
    assert not out.exists()

    folder, cid = case_folder(phantom_root)
    t2 = os.path.join(folder, f"{cid}_t2.nii.gz")
    result = run_in_process(
        translate.main, *("--model", run, "--input", t2, "--out-dir", tmp_path / "t")
    )
    assert "4 cases moved from train to test" in one_error_line(result)
    assert not (tmp_path / "t").exists()

    argv = ("--data", shards, "--out", run, "--preset", "tiny", "--epochs", "1")
    line = one_error_line(run_in_process(fit.main, *argv))
    assert "4 cases moved from train to test" in line
    assert line.endswith("--allow-changed-data resumes on them anyway")

    result = run_in_process(evaluate.main, "--run", run, "--out", out, "--allow-changed-data")
    assert result.returncode == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "4 cases moved from train to test" in warnings[0]
    check = json.loads((out / "report.json").read_text())["data_check"]
    assert check[0]["allowed"] is True and check[0]["recorded"] != check[0]["manifest_sha256"]
    assert check[0]["changes"][0].startswith("4 cases moved from train to test")
    # The model card says so: other shards, and every scored case a training case.
    from dygan_tf.inference.model_card import card_markdown, model_card

    text = card_markdown(model_card(run_files.read_config(run), str(run)))
    assert "(**not those it trained on**: scored with `--allow-changed-data`): 4 cases" in text
    assert "**4 of the 4 scored cases were in this run's training split**" in text


def test_a_release_0_1_0_run_is_used_with_one_warning(tmp_path):
    # A copy: `evaluate --run` writes the run's evaluation record into its folder, and
    # the release's files stay as 0.1.0 wrote them.
    out = tmp_path / "eval"
    run = str(tmp_path / "run_tiny")
    shutil.copytree(os.path.join(RELEASE, "run_tiny"), run)
    shards = os.path.join(RELEASE, "shards")
    result = run_in_process(evaluate.main, "--run", run, "--data", shards, "--out", out)
    assert result.returncode == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert warnings == [
        f"warning: {os.path.join(run, 'run.json')} records no manifest hash (a run folder "
        f"of an earlier release): whether the shards in {shards} are those it trained on "
        "cannot be checked"
    ], result.stderr
    check = json.loads((out / "report.json").read_text())["data_check"]
    assert check[0]["recorded"] is None and check[0]["changes"] == []
