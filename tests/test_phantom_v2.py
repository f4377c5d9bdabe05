"""Phantom v2: MR-physics orderings, enhancement T2 does not show, a harder lookup than
v1's, Colin27-template anatomy, determinism, v1's golden bytes, the three layouts, the
missing-package line, and the test sets' LUT fitted on `train`.

Full-size cases are few: two MNI152 v2 cases written by two worker processes (and one
of them simulated again in-process for its truth maps), two cases on a small synthetic
Colin27 stand-in (`--template`), so CI needs no apt package.
"""

import hashlib
import json
import os

import nibabel as nib
import numpy as np
import pytest

from dygan_tf.config import conditions
from dygan_tf.data import anatomy, benchmark, layouts, phantom, phantom_v2, shards
from dygan_tf.data import manifest as manifest_lib
from dygan_tf.data.phantom import PhantomSpec
from dygan_tf.data.phantom_difficulty import enhancing_auc, lut_carry_r2, normalised
from tests.helpers import case_folder, one_error_line, run_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# sha256 of v1 case 0 (seed 0, HGG)'s five .nii.gz files concatenated (t1, t1ce, t2,
# flair, seg), taken from the code before phantom v2 was added (commit ea9c0e5).
V1_CASE0_SHA256 = "c18e7511035162c199d6b6821729db0955798f196df6cf5cba2329da1e3c0a5f"
KEYS = ("t1", "t1ce", "t2", "flair", "seg")


def _synthetic_t1(path):
    """A brain-extracted T1 at 2 mm in MNI space: an ellipsoid brain (CSF rim, GM
    shell, WM core, two ventricles), intensities 30 / 80 / 110 plus a little noise."""
    affine = np.array([[2.0, 0, 0, -90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
    i, j, k = np.meshgrid(*(np.arange(n) for n in (91, 109, 91)), indexing="ij")
    x, y, z = 2 * i - 90, 2 * j - 126, 2 * k - 72

    def inside(c, r):
        return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 < 1

    t1 = np.zeros(x.shape, np.float32)
    t1[inside((0, -18, 8), (66, 86, 60))] = 30
    t1[inside((0, -18, 8), (63, 83, 57))] = 80
    t1[inside((0, -18, 10), (50, 70, 44))] = 110
    for side in (-12, 12):
        t1[inside((side, -8, 14), (6, 24, 9))] = 30
    noise = np.random.default_rng(0).normal(0, 2, t1.shape).astype(np.float32)
    t1 = np.where(t1 > 0, t1 + noise, 0)
    nib.save(nib.Nifti1Image(t1, affine), str(path))
    return str(path)


def _read(root, index, grade="HGG"):
    folder, cid = case_folder(root, index, grade)
    return {
        k: np.asanyarray(nib.load(os.path.join(folder, f"{cid}_{k}.nii.gz")).dataobj) for k in KEYS
    }


@pytest.fixture(scope="module")
def v2_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2_mni")
    phantom.build_phantom(str(root), 2, 0, seed=0, workers=2, verbose=False, spec=PhantomSpec("v2"))
    return root


@pytest.fixture(scope="module")
def v2_truth():
    """Case 1 (enhancing) simulated again in this process, with its truth maps."""
    return phantom_v2.make_case(0, 1, "HGG", truth=True)


@pytest.fixture(scope="module")
def colin_root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colin")
    template = _synthetic_t1(folder / "t1.nii.gz")
    root = folder / "cases"
    spec = PhantomSpec("v2", "colin27", template)
    phantom.build_phantom(str(root), 1, 1, seed=0, workers=1, verbose=False, spec=spec)
    return root


def _box(volume):
    lo, hi = phantom_v2.BOX_LO, phantom_v2.BOX_HI
    return volume[tuple(slice(a, b) for a, b in zip(lo, hi))]


def test_v1_case_0_keeps_its_golden_bytes():
    volumes = phantom.make_case(0, 0, "HGG")
    digest = hashlib.sha256()
    for key in KEYS:
        digest.update(phantom.nifti_gz_bytes(volumes[key]))
    assert digest.hexdigest() == V1_CASE0_SHA256


def test_same_seed_same_bytes_in_another_process(v2_root, v2_truth):
    volumes, params, _ = v2_truth
    folder, cid = case_folder(v2_root, 1)
    for key in KEYS:
        with open(os.path.join(folder, f"{cid}_{key}.nii.gz"), "rb") as f:
            assert f.read() == phantom.nifti_gz_bytes(volumes[key]), key
    assert phantom.read_case_parameters(folder)["sequences"] == params["sequences"]


def test_physics_orderings(v2_truth):
    volumes, params, truth = v2_truth
    assert params["tumour"]["kind"] == "enhancing"
    v = {k: _box(volumes[k]).astype(np.float64) for k in KEYS}
    healthy = (v["seg"] == 0) & (truth["vessels"] < 0.02)

    def median(key, where):
        return float(np.median(v[key][where]))

    pure = {t: (truth[t] > 0.95) & healthy for t in ("csf", "gm", "wm")}
    t1 = [median("t1", pure[t]) for t in ("wm", "gm", "csf")]
    t2 = [median("t2", pure[t]) for t in ("csf", "gm", "wm")]
    assert t1[0] > t1[1] > t1[2] and t2[0] > t2[1] > t2[2]
    oedema, enhancing = truth["oedema"] > 0.95, truth["enhancing"] > 0.5
    assert median("flair", pure["csf"]) < median("flair", pure["gm"]) < median("flair", oedema)
    # T1CE over T1, against WM's ratio: up in enhancing tissue and vessels only.
    ratio = v["t1ce"] / np.maximum(v["t1"], 1)
    wm = np.median(ratio[pure["wm"]])
    assert np.median(ratio[enhancing]) > 1.3 * wm
    assert np.median(ratio[(truth["vessels"] > 0.5) & (v["seg"] == 0)]) > 1.3 * wm
    for where in (pure["gm"], oedema, truth["necrosis"] > 0.5):
        assert abs(np.median(ratio[where]) / wm - 1) < 0.15


def test_t2_does_not_reveal_enhancement(v2_truth, colin_root):
    cases = [v2_truth[0]] + [_read(colin_root, 0)]
    aucs = [enhancing_auc(c["t2"], c["seg"]) for c in cases]
    assert aucs[0] is not None
    assert all(abs(a - 0.5) <= 0.3 for a in aucs if a is not None), aucs


def test_a_lut_carries_less_of_t1_than_on_v1(v2_root, phantom_root):
    def r2(a, b):
        ma, mb = a["t1"] > 0, b["t1"] > 0
        return lut_carry_r2(
            normalised(a["t2"], ma),
            normalised(a["t1"], ma),
            normalised(b["t2"], mb),
            normalised(b["t1"], mb),
        )

    v1 = r2(_read(phantom_root, 0), _read(phantom_root, 1))
    v2 = r2(_read(v2_root, 0), _read(v2_root, 1))
    assert v1 > 0.8 and v2 < v1 - 0.15, (v1, v2)


def test_colin27_template_cases_differ_from_mni152_ones(v2_root, colin_root):
    def dice(a, b):
        return 2 * np.sum(a & b) / (a.sum() + b.sum())

    mni = [_read(v2_root, i)["t1"] > 0 for i in (0, 1)]
    colin = _read(colin_root, 0)["t1"] > 0
    assert dice(colin, mni[0]) < dice(mni[0], mni[1])
    params = phantom.read_case_parameters(case_folder(colin_root, 0)[0])
    assert params["anatomy"] == "colin27" and params["phantom"] == "v2"


def test_missing_mricron_data_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(anatomy, "COLIN27_PATH", str(tmp_path / "absent" / "ch2bet.nii.gz"))
    from dygan_tf import make_phantom

    args = ("--out", tmp_path / "out", "--cases", 2, "--phantom", "v2", "--anatomy", "colin27")
    line = one_error_line(run_in_process(make_phantom.main, *args))
    assert "apt-get install mricron-data" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.nii.gz"))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["brats2020", "brats2023"])
def test_each_layout_round_trips_through_build_tfrecords(layout, v2_root, tmp_path, monkeypatch):
    # The writer and layouts under test; the volumes are v2_root's (no new simulation).
    stored = [_read(v2_root, i) for i in (0, 1)]

    def simulate(seed, index, grade, spec):
        return {k: a.copy() for k, a in stored[index % 2].items()}, {"phantom": "v2"}

    monkeypatch.setattr(phantom, "simulate", simulate)
    root = tmp_path / "root"
    ids = phantom.build_phantom(
        str(root), 2, 1, verbose=False, spec=PhantomSpec("v2", layout=layout)
    )
    out = tmp_path / "shards"
    manifest = shards.build(
        str(root), str(out), image_size=32, train_hgg=2, train_lgg=0, workers=1, verbose=False
    )
    assert manifest["layout"] == layout
    split = {
        s: sorted(c["case_id"] for c in manifest["splits"][s]["cases"]) for s in ("train", "test")
    }
    assert sorted(split["train"] + split["test"]) == [i for i, _ in ids] and len(split["test"]) == 1
    naming = "brats2023" if layout == "brats2023" else "brats2019"
    seg = nib.load(root / ids[1][0] / layouts.file_name(ids[1][0], "seg", naming))
    labels = set(np.unique(np.asanyarray(seg.dataobj)))
    enhancing = layouts.enhancing_label(layout, [ids[1][0]])
    assert enhancing in labels and ({4, 3} - {enhancing}).isdisjoint(labels)
    assert os.path.isfile(root / ids[0][0] / f"{ids[0][0]}{layouts.NAMINGS[naming][0]}phantom.json")


@pytest.mark.slow
def test_a_test_set_fits_its_lut_on_train(v2_root, colin_root, tmp_path):
    from dygan_tf.evaluation import scoring

    train = str(tmp_path / "train")
    shards.build(
        str(v2_root), train, image_size=32, train_hgg=1, train_lgg=0, workers=1, verbose=False
    )
    test = str(tmp_path / "test_colin27")
    options = dict(image_size=32, train_hgg=0, train_lgg=0, workers=1, verbose=False)
    shards.build(
        str(colin_root), test, baseline_from=train, provenance={"set": "test_colin27"}, **options
    )
    manifest = manifest_lib.read_manifest(test)
    assert manifest["splits"]["train"]["records"] == 0
    assert manifest["baseline_from"]["manifest_sha256"] == manifest_lib.manifest_sha256(train)
    assert os.path.samefile(manifest_lib.baseline_dir(test, manifest), train)
    table = conditions.row_table("single", "t2", ("flair", "t1", "t1ce"))
    results, slices, _ = scoring.score_rows(
        [], test, "test", table, 0, manifest_lib.baseline_dir(test)
    )
    assert slices > 0 and results["intensity_lut"]["t2->t1"]["psnr"] > 0
    assert benchmark.set_folders("C", "v2", "test_colin27")[1].endswith("shards-64px")


def test_benchmark_json_keeps_the_sets_built_before(tmp_path, monkeypatch):
    built = []

    def fake_build_set(
        out, version, test_set, template=None, workers=1, verbose=True, image_size=64
    ):
        folder = benchmark.set_folders(out, version, test_set.name, image_size)[1]
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "manifest.json"), "w") as f:
            json.dump({"set": test_set.name}, f)
        built.append((test_set.name, image_size))
        return folder

    monkeypatch.setattr(benchmark, "build_set", fake_build_set)
    monkeypatch.setattr(manifest_lib, "manifest_sha256", lambda folder: os.path.basename(folder))
    out = str(tmp_path)
    first = benchmark.build_benchmark(out, sets=benchmark.SETS[:1], verbose=False)
    assert list(first["sets"]) == ["train"]
    record = benchmark.build_benchmark(out, sets=benchmark.SETS[1:], verbose=False)
    assert list(record["sets"]) == ["train", "test_mni", "test_colin27"]
    assert built == [(s.name, 64) for s in benchmark.SETS]
    with open(os.path.join(out, "phantom-v2", benchmark.BENCHMARK_JSON)) as f:
        assert json.load(f) == record


def test_build_lines_say_whether_a_set_is_the_reference_build():
    with open(os.path.join(ROOT, "docs/results/benchmark-v2/difficulty.json")) as f:
        recorded = json.load(f)["versions"]
    for version, entry in recorded.items():
        for name, built in entry["benchmark"]["sets"].items():
            assert benchmark.REFERENCE_SHA256[(version, name)] == built["manifest_sha256"]
    reference = benchmark.REFERENCE_SHA256[("v2", "train")]
    entry = {"shards": "phantom-v2/train/shards-64px", "manifest_sha256": reference}
    line = benchmark.describe_set("v2", "train", entry)
    assert (
        line
        == f"train: {entry['shards']} (manifest sha256 {reference[:12]}: the reference build's)"
    )
    other = dict(entry, manifest_sha256="1709d94f3d99" + "0" * 52)
    line = benchmark.describe_set("v2", "train", other)
    assert f"1709d94f3d99; the reference build's is {reference[:12]}" in line
    assert "do not share a table" in line and "\n" not in line
    # A build from another template has no reference: only its hash is said.
    assert benchmark.describe_set("v2", "train", other, "T1.nii.gz").endswith("1709d94f3d99)")
