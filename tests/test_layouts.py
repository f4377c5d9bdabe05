"""BraTS 2017-2021 and BraTS 2023 (BraSyn) file names, told apart by the names."""

import json
import os
import shutil

import pytest

from dygan_tf.config.tasks import MODALITIES
from dygan_tf.data import layouts
from dygan_tf.data.cases import case_files, discover_cases, layout_of
from dygan_tf.utils.errors import UserError
from tests.helpers import case_folder, one_error_line, run_in_process

# BraTS 2023 GLI / BraSyn spellings (t1n = T1, t1c = T1CE, t2w = T2, t2f = FLAIR).
BRATS2023 = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"}


def _as_brats2023(phantom_root, root, count=3, keep=MODALITIES + ("seg",)):
    """Phantom cases 0..count-1 copied into a flat BraTS 2023 root with its names."""
    ids = []
    for index in range(count):
        folder, cid = case_folder(phantom_root, index)
        new_id = f"BraTS-GLI-{index:05d}-000"
        out = root / new_id
        out.mkdir(parents=True)
        for key in keep:
            shutil.copy(
                os.path.join(folder, f"{cid}_{key}.nii.gz"),
                out / f"{new_id}-{BRATS2023[key]}.nii.gz",
            )
        ids.append(new_id)
    return ids


def test_each_naming_is_found_and_a_mix_is_refused(tmp_path):
    for naming, spell in (("brats2019", {m: m for m in BRATS2023}), ("brats2023", BRATS2023)):
        folder = tmp_path / naming / "CASE"
        folder.mkdir(parents=True)
        sep = "_" if naming == "brats2019" else "-"
        for token in spell.values():
            (folder / f"CASE{sep}{token}.nii.gz").write_bytes(b"")
        found_naming, files = layouts.case_files(folder)
        assert found_naming == naming and set(files) == set(BRATS2023)
        assert os.path.basename(files["flair"]) == f"CASE{sep}{spell['flair']}.nii.gz"
    mixed = tmp_path / "mixed" / "CASE"
    mixed.mkdir(parents=True)
    (mixed / "CASE_flair.nii.gz").write_bytes(b"")
    (mixed / "CASE-t1n.nii.gz").write_bytes(b"")
    with pytest.raises(UserError, match="mixes two namings"):
        layouts.case_files(mixed)
    assert layouts.case_files(tmp_path) == (None, {})


def test_layouts_of_a_root_and_a_mixed_root_in_one_line(phantom_root, tmp_path):
    assert layout_of(discover_cases(str(phantom_root))) == "brats2019"  # HGG/ and LGG/
    flat = tmp_path / "flat"
    folder, cid = case_folder(phantom_root, 0)
    shutil.copytree(folder, flat / cid)
    assert layout_of(discover_cases(str(flat))) == "brats2020"
    new = tmp_path / "new"
    _as_brats2023(phantom_root, new, count=2)
    assert layout_of(discover_cases(str(new))) == "brats2023"
    case = next(c for c in discover_cases(str(new)))
    assert os.path.basename(case_files(case)["t2"]) == f"{case['case_id']}-t2w.nii.gz"
    shutil.copytree(folder, new / cid)  # a 2019-named case among 2023 ones
    with pytest.raises(UserError, match="mixed layouts in one root") as e:
        layout_of(discover_cases(str(new)))
    assert f"{cid}_" in str(e.value) and "BraTS-GLI-00000-000-" in str(e.value)


def test_a_missing_2023_sequence_names_the_file_expected(phantom_root, tmp_path):
    _as_brats2023(phantom_root, tmp_path, count=1, keep=("t1", "t1ce", "t2"))
    case = discover_cases(str(tmp_path))[0]
    with pytest.raises(UserError, match="missing flair file: expected .*-t2f.nii.gz"):
        case_files(case)


@pytest.mark.slow
def test_brats2023_root_builds_translates_brasyn_names_and_scores(
    phantom_root, savedmodel_dir, tmp_path
):
    """A BraTS 2023 GLI root: shards record the layout and the original names; translate
    over a root of cases missing FLAIR writes BraSyn's names (no input copied), reports a
    broken case in one line while the others complete, and a rerun retries only it;
    evaluate_volumes scores the outputs against the root."""
    from dygan_tf import evaluate_volumes, translate
    from dygan_tf.data import shards

    root = tmp_path / "brats2023"
    ids = _as_brats2023(phantom_root, root, count=3)
    manifest = shards.build(
        str(root), str(tmp_path / "shards"), image_size=64, train_hgg=2, train_lgg=0,
        workers=1, verbose=False,
    )  # fmt: skip
    assert manifest["layout"] == "brats2023"
    case = manifest["splits"]["train"]["cases"][0]
    assert case["files"]["flair"] == f"{case['case_id']}-t2f.nii.gz"

    # BraSyn's validation root: every case misses FLAIR; one case's T2 is broken.
    val = tmp_path / "val"
    for cid in ids:
        shutil.copytree(root / cid, val / cid)
        (val / cid / f"{cid}-t2f.nii.gz").unlink()
        (val / cid / f"{cid}-seg.nii.gz").unlink()
    broken = val / ids[1] / f"{ids[1]}-t2w.nii.gz"
    good = broken.read_bytes()
    broken.write_bytes(good[:200])
    out = tmp_path / "submission"
    argv = ["--model", savedmodel_dir, "--input", val, "--out-dir", out, "--quiet"]
    result = run_in_process(translate.main, *argv, "--naming", "brasyn")
    assert result.returncode == 1, result.stderr
    failed = [ln for ln in result.stderr.splitlines() if ln.startswith("failed: ")]
    assert len(failed) == 1 and failed[0].startswith(f"failed: {ids[1]}: ")
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(out)) == [f"{ids[0]}-t2f.nii.gz", f"{ids[2]}-t2f.nii.gz"]
    assert "2 written, 0 skipped, 1 failed of 3 cases" in result.stdout
    # A rerun retries only the failed case.
    broken.write_bytes(good)
    written = {p: os.path.getmtime(out / p) for p in os.listdir(out)}
    result = run_in_process(translate.main, *argv, "--naming", "brasyn")
    assert result.returncode == 0, result.stderr
    assert "1 written, 2 skipped, 0 failed of 3 cases" in result.stdout
    assert all(os.path.getmtime(out / p) == t for p, t in written.items())
    assert len(os.listdir(out)) == 3
    result = run_in_process(translate.main, *argv, "--naming", "brasyn", "--overwrite")
    assert result.returncode == 0 and "3 written, 0 skipped, 0 failed" in result.stdout

    report = tmp_path / "scores"
    result = run_in_process(evaluate_volumes.main, "--pred", out, "--truth", root, "--out", report)
    assert result.returncode == 0, result.stderr
    summary = (report / "per_case.csv").read_text()
    assert all(cid in summary for cid in ids)


def test_translate_naming_is_a_choice(tmp_path):
    from dygan_tf import translate

    result = run_in_process(
        translate.main, "--model", "m", "--input", "i", "--out-dir", tmp_path, "--naming", "x"
    )
    assert "--naming: invalid choice: 'x'" in one_error_line(result)


def test_split_file_and_fraction(phantom_root, tmp_path):
    from dygan_tf.data.cases import read_split_file, split_fraction

    cases = discover_cases(str(phantom_root))  # 4 HGG + 2 LGG
    ids = [c["case_id"] for c in cases]
    one = tmp_path / "train.txt"
    one.write_text(f"# colleague's split\ncase_id\n{ids[0]}\n{ids[3]}\n\n")
    split = read_split_file(one, cases)
    assert [c["case_id"] for c in split["train"]] == [ids[0], ids[3]]
    assert [c["case_id"] for c in split["test"]] == [i for i in ids if i not in (ids[0], ids[3])]
    two = tmp_path / "split.csv"
    two.write_text(f"case_id,split\n{ids[1]},test\n{ids[2]},train\n")
    split = read_split_file(two, cases)  # unlisted cases are in neither
    assert [c["case_id"] for c in split["train"]] == [ids[2]]
    assert [c["case_id"] for c in split["test"]] == [ids[1]]
    for text, needle in [
        (f"{ids[0]}\nBraTS19_NOPE\n", "split.txt:2: case 'BraTS19_NOPE' is not among the 6"),
        (f"{ids[0]} val\n", "expected one case id per line"),
        (f"{ids[0]}\n{ids[0]}\n", "listed twice"),
        ("# nothing\n", "lists no case"),
    ]:
        bad = tmp_path / "split.txt"
        bad.write_text(text)
        with pytest.raises(UserError, match=needle):
            read_split_file(bad, cases)
    drawn = split_fraction(cases, 0.5, seed=0)
    assert [c["grade"] for c in drawn["train"]].count("HGG") == 2
    assert [c["grade"] for c in drawn["train"]].count("LGG") == 1
    assert split_fraction(cases, 0.5, seed=0) == drawn


@pytest.mark.slow
def test_build_honours_and_records_a_split_file(phantom_root, tmp_path):
    from data_prep import build_tfrecords

    cases = [c["case_id"] for c in discover_cases(str(phantom_root))]
    split = tmp_path / "split.txt"
    split.write_text("\n".join(cases[:3]) + "\n")
    out = tmp_path / "shards"
    argv = ["--brats-root", phantom_root, "--out", out, "--image-size", "64", "--workers", "1"]
    result = run_in_process(build_tfrecords.main, *argv, "--split-file", split)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"]["train_cases"] == cases[:3]
    assert manifest["split"]["test_cases"] == cases[3:]
    assert manifest["split"]["file"] == str(split) and len(manifest["split"]["sha256"]) == 64
    assert [c["case_id"] for c in manifest["splits"]["train"]["cases"]] == cases[:3]
    assert manifest["layout"] == "brats2019"
    split.write_text(cases[0] + "\nBraTS19_GONE_001\n")
    other = tmp_path / "other"
    line = one_error_line(
        run_in_process(build_tfrecords.main, *argv[:3], other, *argv[4:], "--split-file", split)
    )
    assert line == (
        f"error: --split-file {split}:2: case 'BraTS19_GONE_001' is not among the 6 cases on disk"
    )
    assert not other.exists()
    line = one_error_line(
        run_in_process(build_tfrecords.main, *argv, "--split-file", split, "--train-hgg", "2")
    )
    assert "--split-file: gives the split; drop --train-hgg/--train-lgg" in line


def _layout_root(phantom_root, tmp_path, layout):
    """A 4-case root (3 HGG + 1 LGG of the phantom) in `layout`; returns (root, ids)."""
    root = tmp_path / layout
    if layout == "brats2023":
        return root, _as_brats2023(phantom_root, root, count=4)
    ids = []
    for index, grade in ((0, "HGG"), (1, "HGG"), (2, "HGG"), (0, "LGG")):
        folder, cid = case_folder(phantom_root, index if grade == "HGG" else 4, grade)
        parent = root / grade if layout == "brats2019" else root
        shutil.copytree(folder, parent / cid)
        ids.append(cid)
    return root, ids


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["brats2019", "brats2020", "brats2023"])
def test_each_layout_end_to_end(layout, phantom_root, tmp_path):
    """build -> fit (tiny) -> translate a root of cases missing FLAIR with BraSyn's
    names -> evaluate_volumes against the root."""
    from data_prep import build_tfrecords
    from dygan_tf import evaluate_volumes, fit, translate

    root, ids = _layout_root(phantom_root, tmp_path, layout)
    shards, run = tmp_path / "shards", tmp_path / "run"
    argv = ["--brats-root", root, "--out", shards, "--image-size", "64", "--workers", "1"]
    result = run_in_process(build_tfrecords.main, *argv, "--train-fraction", "0.75")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["layout"] == layout
    argv = ["--data", shards, "--out", run, "--preset", "tiny", "--discriminator", "patch"]
    result = run_in_process(fit.main, *argv, "--epochs", "1", "--steps-per-epoch", "2")
    assert result.returncode == 0, result.stderr

    missing = tmp_path / "missing"
    for case in manifest["split"]["test_cases"]:
        folder = next(p for p in root.rglob(case) if p.is_dir())
        shutil.copytree(folder, missing / case)
        flair = next(
            c for s in manifest["splits"].values() for c in s["cases"] if c["case_id"] == case
        )["files"]["flair"]  # the case's own name for it, as the manifest recorded
        assert flair.startswith(case)
        (missing / case / flair).unlink()
    out = tmp_path / "out"
    argv = ["--model", run, "--input", missing, "--out-dir", out, "--naming", "brasyn"]
    result = run_in_process(translate.main, *argv, "--quiet")
    assert result.returncode == 0, result.stderr
    expected = sorted(f"{c}-t2f.nii.gz" for c in manifest["split"]["test_cases"])
    assert sorted(os.listdir(out)) == expected
    result = run_in_process(
        evaluate_volumes.main, "--pred", out, "--truth", root, "--out", tmp_path / "eval"
    )
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "eval" / "per_case.csv").read_text().splitlines()[1:]
    assert len(rows) == len(expected) and all(",flair," in r for r in rows)
