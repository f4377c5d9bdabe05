"""What the commands tell a user is true: a model and shards of different sizes, the
modality spellings of every BraTS release, the flag an error names, outputs kept apart
from the inputs they were made from."""

import json
import os
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
    from research import case_gain

    result = helpers.run_in_process(
        case_gain.main, "--run", run_dir, "--row", "t2->flair", "--data", shards_of_another_size
    )
    line = helpers.one_error_line(result)
    assert line.startswith("error: --data ") and "shards are 128 px" in line, line


def _case_2023(phantom_root, root, keep=("t2", "t1")):
    """Phantom case 0 as a BraTS 2023 case folder under `root` holding only `keep`."""
    from dygan_tf.config.tasks import BRATS2023_NAMES

    folder, cid = helpers.case_folder(phantom_root)
    case = root / cid
    case.mkdir(parents=True)
    for m in keep:
        shutil.copy(
            os.path.join(folder, f"{cid}_{m}.nii.gz"), case / f"{cid}-{BRATS2023_NAMES[m]}.nii.gz"
        )
    return case, cid


def test_modality_names_in_every_spelling():
    from dygan_tf import fit
    from dygan_tf.config.conditions import parse_row_key
    from dygan_tf.config.tasks import check_modality, task_index
    from dygan_tf.inference.translation import parse_targets

    args = fit.parse_args(
        ["--data", "d", "--out", "o", "--preset", "tiny", "--source", "t2w", "--targets", "T2F,t1n"]
    )
    train = fit.resolve_config(args).train
    assert (train.source, train.targets) == ("t2", ("flair", "t1"))
    assert [check_modality(n) for n in ("FLAIR", "t2f", "T1n", "t1c", "T2")] == [
        "flair",
        "flair",
        "t1",
        "t1ce",
        "t2",
    ]
    assert task_index("t2w", "t2f") == task_index("t2", "flair")
    assert parse_row_key("t1n+t2w->t2f") == (("t1", "t2"), "flair")
    assert parse_targets("t2f, T1C") == ["flair", "t1ce"]
    line = helpers.one_error_line(
        helpers.run_in_process(fit.main, "--data", "d", "--out", "o", "--source", "pd")
    )
    assert "flair (t2f), t1 (t1n), t1ce (t1c), t2 (t2w)" in line, line


def test_translate_takes_and_prints_the_files_spelling(savedmodel_dir, phantom_root, tmp_path):
    from dygan_tf.inference.batch_translation import summary_table, translate_root
    from dygan_tf.inference.predictor import load_predictor
    from dygan_tf.inference.translation import plan_input

    root = tmp_path / "root"
    case, cid = _case_2023(phantom_root, root)
    plan = plan_input(str(case), "T2W")
    assert (plan.source, plan.targets) == ("t2", ["flair", "t1ce"])
    assert plan.spell(plan.targets) == "t2f, t1c"
    predictor = load_predictor(savedmodel_dir)
    out = root / "out"  # inside the root: a rerun must not take it for a case
    for status in ("written", "skipped"):
        rows = translate_root(str(root), str(out), lambda: predictor, "t2w", verbose=False)
        assert [(r["case"], r["source"], r["status"]) for r in rows] == [(cid, "t2w", status)]
    table = summary_table(rows)
    assert "t2w" in table and "flair" not in table, table
    rows = translate_root(str(root), str(out), lambda: predictor, overwrite=True, verbose=False)
    assert rows[0]["written"] == ["t2f", "t1c"]


def test_translate_names_the_right_flag_and_keeps_brasyn_names_out_of_the_input(
    savedmodel_dir, phantom_root, tmp_path
):
    from dygan_tf import translate

    root = tmp_path / "root"
    case, cid = _case_2023(phantom_root, root)
    line = helpers.one_error_line(
        helpers.run_in_process(
            translate.main, "--model", tmp_path / "nonexistent", "--input", root, "--out-dir", "o"
        )
    )
    assert line.startswith("error: --model ") and "--input" not in line, line
    for out in (case, root / "synth", root):
        before = sorted(root.rglob("*"))
        line = helpers.one_error_line(
            helpers.run_in_process(
                translate.main,
                *("--model", savedmodel_dir, "--input", root if out != case else case),
                *("--out-dir", out, "--naming", "brasyn"),
            )
        )
        assert line.startswith(f"error: --out-dir {out}: inside the input folder"), line
        assert sorted(root.rglob("*")) == before


def test_fit_brats_root_takes_the_split_flags_of_build_tfrecords(phantom_root, tmp_path):
    from dygan_tf import fit
    from dygan_tf.data.manifest import read_manifest
    from dygan_tf.data.phantom import case_id
    from dygan_tf.training import fit_lib

    split = tmp_path / "split.txt"
    split.write_text(f"{case_id(0)}\n{case_id(1)}\n{case_id(4)}\n")
    argv = ["--brats-root", phantom_root, "--out", tmp_path / "run", "--preset", "tiny"]
    args = fit.parse_args([*map(str, argv), "--split-file", str(split)])
    assert args.split["split_file"] == str(split)
    line = helpers.one_error_line(
        helpers.run_in_process(fit.main, *argv, "--train-fraction", "0.5", "--train-hgg", "2")
    )
    assert line == "error: --train-fraction: gives the split; drop --train-hgg/--train-lgg"
    split.write_text("BraTS19_NOT_THERE\n")
    line = helpers.one_error_line(helpers.run_in_process(fit.main, *argv, "--split-file", split))
    assert line.startswith(f"error: --split-file {split}") and "BraTS19_NOT_THERE" in line, line
    assert not (tmp_path / "run" / "data").exists()
    # The split reaches the shards fit builds.
    split.write_text(f"{case_id(0)}\n{case_id(1)}\n{case_id(4)}\n")
    out = fit_lib.ensure_shards(str(phantom_root), str(tmp_path / "data"), 64, **args.split)
    trained = read_manifest(out)["splits"]["train"]["cases"]
    assert sorted(c["case_id"] for c in trained) == sorted(case_id(i) for i in (0, 1, 4))
