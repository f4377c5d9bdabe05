"""The named phantom test sets every comparison uses: `train`, `test_mni`, `test_colin27`.

`build_benchmark(out, version)` writes, under `out/phantom-<version>/`, each set's
volumes and its 64 px shards, and `benchmark.json` (the phantom version, each set's
recipe and its manifest's sha256). `train` is the demo's 27 MNI152 cases (its shards
split 20 train + 7 test as the demo's are; `fit` draws validation from the training
split); the two test sets' shards hold every case in their `test` split and name
`train`'s shards in `baseline_from`, so `evaluate` fits the intensity LUT on `train`.
"""

import dataclasses
import json
import os

from dygan_tf.data import manifest as manifest_lib
from dygan_tf.data import phantom, shards
from dygan_tf.utils.atomic import write_json_atomic

IMAGE_SIZE = 64
BENCHMARK_JSON = "benchmark.json"
# The manifests' sha256 of the build every result page's records were made on
# (docs/results/benchmark-v2/difficulty.json). The phantom's geometry goes through
# numpy's BLAS and vectorised math, whose rounding depends on the CPU: OpenBLAS's
# Haswell kernels instead of its SkylakeX ones move 40 of 1.2e9 voxels of v2's `train`
# by one unit, and the build's hash with them (docs/results/benchmark-v2.md).
REFERENCE_SHA256 = {
    ("v1", "train"): "11f9d85a76934f2b52c9e7443713d01d87f8a6542d3dbadc1cf746551e4490c1",
    ("v1", "test_mni"): "d350e1c2722b587badf842f0a33bab891abf332a7c566662c44485bc15ad51ff",
    ("v1", "test_colin27"): "6f2b5e842f81ed45b9f9a125c75516daec930927d1b103864746092a7afc7842",
    ("v2", "train"): "bd10e2cd8b2a53bc537d2b6bbff7545b65df82a189277fd69160b91823e70f41",
    ("v2", "test_mni"): "7701c16f183275e409b0b6122060edaa3c25153cdf92cce0b18b92659a879480",
    ("v2", "test_colin27"): "3cbb13658991a9f5f41c1f01673dd8552911e71bced5bf031c821de25a3b3177",
}


@dataclasses.dataclass(frozen=True)
class TestSet:
    """One named set: its anatomy, seed, HGG and LGG counts and, for `train`, how many
    of each its shards train on (the rest form its in-domain test split)."""

    name: str
    anatomy: str
    seed: int
    hgg: int
    lgg: int
    train_hgg: int = 0
    train_lgg: int = 0


SETS = (
    TestSet("train", "mni152", seed=0, hgg=21, lgg=6, train_hgg=16, train_lgg=4),
    TestSet("test_mni", "mni152", seed=1, hgg=31, lgg=9),
    TestSet("test_colin27", "colin27", seed=2, hgg=31, lgg=9),
)


def set_folders(out, version, name, image_size=IMAGE_SIZE):
    """(volumes folder, shard folder) of set `name` of phantom `version` under `out`."""
    base = os.path.join(out, f"phantom-{version}", name)
    return os.path.join(base, "volumes"), os.path.join(base, f"shards-{image_size}px")


def build_set(
    out, version, test_set, template=None, workers=1, verbose=True, image_size=IMAGE_SIZE
):
    """Builds one set's volumes and shards under `out` (each kept where it is whole);
    returns its shard folder."""
    volumes, shard_dir = set_folders(out, version, test_set.name, image_size)
    if manifest_lib.has_manifest(shard_dir):
        return shard_dir
    spec = phantom.PhantomSpec(version, test_set.anatomy, template)
    mapping = os.path.join(volumes, phantom.TRAINING_FOLDER, "name_mapping.csv")
    if not os.path.exists(mapping):  # (written last: present = the volumes are whole)
        if verbose:
            print(f"{test_set.name}: {test_set.hgg + test_set.lgg} cases into {volumes}")
        phantom.build_phantom(
            volumes, test_set.hgg, test_set.lgg, test_set.seed, workers, verbose, spec
        )
    own = test_set.name == "train"
    shards.build(
        volumes,
        shard_dir,
        image_size=image_size,
        train_hgg=test_set.train_hgg,
        train_lgg=test_set.train_lgg,
        baseline_from=None if own else set_folders(out, version, "train", image_size)[1],
        provenance={"phantom": version, "set": test_set.name, "template": template}
        | dataclasses.asdict(test_set),
        workers=workers,
        verbose=verbose,
    )
    return shard_dir


def build_benchmark(out, version="v2", template=None, workers=1, sets=SETS, verbose=True):
    """Builds every set of `sets` (volumes, then shards; a set whose shards exist is
    kept) and writes benchmark.json (keeping the entries of sets built before); returns
    its dict."""
    file = os.path.join(out, f"phantom-{version}", BENCHMARK_JSON)
    record = {"phantom": version, "image_size": IMAGE_SIZE, "sets": {}}
    if os.path.exists(file):
        with open(file, encoding="utf-8") as f:
            record["sets"] = json.load(f).get("sets", {})
    for test_set in sets:
        shard_dir = build_set(out, version, test_set, template, workers, verbose)
        record["sets"][test_set.name] = dataclasses.asdict(test_set) | {
            "volumes": os.path.relpath(set_folders(out, version, test_set.name)[0], out),
            "shards": os.path.relpath(shard_dir, out),
            "manifest_sha256": manifest_lib.manifest_sha256(shard_dir),
        }
    write_json_atomic(file, record)
    return record


def describe_set(version, name, entry, template=None):
    """One line on a built set: its shards, their manifest's sha256 and whether that is
    the reference build's (`REFERENCE_SHA256`; a build from another template has none)."""
    sha = entry["manifest_sha256"]
    line = f"{name}: {entry['shards']} (manifest sha256 {sha[:12]}"
    reference = None if template else REFERENCE_SHA256.get((version, name))
    if reference is None:
        return line + ")"
    if sha == reference:
        return line + ": the reference build's)"
    return (
        line + f"; the reference build's is {reference[:12]}: this CPU rounded some voxels "
        "otherwise, so runs on it do not share a table with docs/results' records; "
        "docs/results/benchmark-v2.md says how to rebuild the reference)"
    )
