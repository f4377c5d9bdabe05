"""How hard phantom v1 and v2 are, side by side, on the named test sets.

    python -m benchmarks.phantom_difficulty --cache DIR [--versions v1 v2]
        [--out docs/results/benchmark-v2]

Reads DIR/phantom-<version>/ as `python -m dygan_tf.build_benchmark` leaves it and
writes difficulty.json (and maps.png, case.png) into --out: the copy-source and
intensity-LUT baselines (T2 source, slice PSNR/SSIM per target, LUT fitted on
`train`) on test_mni and test_colin27; the share of T1's variance a T2 -> T1 lookup
from one case explains in the next; T2's AUC for enhancing against other tumour; the
v2 geometry (tumour centres' axial span, ventricle-volume CV, WM inside oedema); and
the cost of a case of each version, simulated in this one process.
"""

import argparse
import glob
import json
import os
import subprocess
import time

import nibabel as nib
import numpy as np

from dygan_tf.data import benchmark, phantom, phantom_v2
from dygan_tf.data import manifest as manifest_lib
from dygan_tf.data.phantom_difficulty import enhancing_auc, lut_carry_r2, normalised
from dygan_tf.utils import cpu
from dygan_tf.utils.atomic import write_json_atomic, write_text_atomic

TEST_SETS = ("test_mni", "test_colin27")
PAIRS = 10  # consecutive case pairs for the lookup carried from case to case


def _cases(volumes_root):
    return sorted(glob.glob(os.path.join(volumes_root, "*", "*", "*", "*_t1.nii.gz")))


def _load(t1_path):
    stem = t1_path[: -len("_t1.nii.gz")]
    return {k: np.asanyarray(nib.load(f"{stem}_{k}.nii.gz").dataobj) for k in ("t1", "t2", "seg")}


def baselines(shard_dir):
    """{method: {target: {psnr, ssim, ...}}} of copy-source and the LUT, T2 source."""
    from dygan_tf.config import conditions
    from dygan_tf.evaluation import scoring

    table = conditions.row_table("single", "t2", ("flair", "t1", "t1ce"))
    base = manifest_lib.baseline_dir(shard_dir)
    results, slices, _ = scoring.score_rows([], shard_dir, "test", table, 0, base)
    out = {m: {k.split("->")[1]: v for k, v in results[m].items()} for m in scoring.BASELINES}
    return out, slices


def volume_measures(volumes_root):
    """LUT carry R² (T2 -> T1, case i -> i+1) and T2's enhancing AUC per case."""
    paths = _cases(volumes_root)
    r2, aucs, centres = [], [], []
    previous = None
    for n, path in enumerate(paths):
        case = _load(path)
        mask = case["t1"] > 0
        norm = {k: normalised(case[k], mask) for k in ("t1", "t2")}
        if previous is not None and n <= PAIRS:
            r2.append(lut_carry_r2(previous["t2"], previous["t1"], norm["t2"], norm["t1"]))
        previous = norm
        a = enhancing_auc(case["t2"], case["seg"])
        if a is not None:
            aucs.append(a)
        if case["seg"].any():
            centres.append(float(np.argwhere(case["seg"] > 0)[:, 2].mean()))
    return {
        "lut_carry_r2_t2_to_t1": _stats(r2),
        "t2_enhancing_auc": _stats(aucs) | {"max_abs_minus_half": _max_dev(aucs)},
        "tumour_centre_slices": [min(centres), max(centres)] if centres else None,
        "cases": len(paths),
    }


def _stats(values):
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return {"n": 0}
    return {"n": len(values), "mean": float(values.mean()), "sd": float(values.std(ddof=1))}


def _max_dev(values):
    return float(max(abs(v - 0.5) for v in values)) if values else None


def v2_geometry(cache):
    """Ventricle-volume CV over train's first 10 cases (their JSON), tumour kinds, and
    WM inside oedema against the brain's, on 3 cases simulated again with truth."""
    params = []
    for path in sorted(
        glob.glob(
            os.path.join(cache, "phantom-v2", "train", "volumes", "*", "*", "*", "*_phantom.json")
        )
    ):
        with open(path, encoding="utf-8") as f:
            params.append(json.load(f))
    ventricles = np.array([p["volumes_ml"]["ventricles"] for p in params[:10]])
    oedema_wm, brain_wm = [], []
    for index in range(3):
        _, _, truth = phantom_v2.make_case(1, index, "HGG", truth=True)
        oedema = truth["oedema"] > 0.5
        oedema_wm.append(float(truth["wm"][oedema].mean()))
        brain_wm.append(float(truth["wm"][truth["mask"]].mean()))
    return {
        "ventricle_ml_first_10_train": ventricles.round(2).tolist(),
        "ventricle_cv": float(ventricles.std(ddof=1) / ventricles.mean()),
        "enhancing_cases_train": sum(p["tumour"]["kind"] == "enhancing" for p in params),
        "oedema_mean_wm_fraction": oedema_wm,
        "brain_mean_wm_fraction": brain_wm,
    }


def cost_per_case(repeats=3):
    """Seconds per full-size case of each version in this process (templates loaded
    first; a v1 and a v2 case alternate so both see the same machine load)."""
    phantom.make_case(5, 0, "HGG")
    phantom_v2.make_case(5, 0, "HGG")
    times = {"v1": [], "v2": []}
    for index in range(1, repeats + 1):
        for version, make in (("v1", phantom.make_case), ("v2", phantom_v2.make_case)):
            start = time.perf_counter()
            make(5, index, "HGG")
            times[version].append(time.perf_counter() - start)
    return {v: _stats(t) for v, t in times.items()} | {
        "cpu": cpu.cpu_model(),
        "flags": sorted(f for f in cpu.cpu_flags() if f.startswith(("avx", "amx", "fma", "sse4"))),
        "cores": os.cpu_count(),
    }


def figures(out):
    """maps.png: the two anatomies' CSF/GM/WM fractions; case.png: a v2 case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dygan_tf.data.anatomy import load_anatomy

    fig, axes = plt.subplots(2, 3, figsize=(7.5, 5.5))
    for row, name in enumerate(("mni152", "colin27")):
        a = load_anatomy(name)
        for col, tissue in enumerate(("csf", "gm", "wm")):
            ax = axes[row, col]
            ax.imshow(np.rot90(getattr(a, tissue)[:, :, 100]), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{name} {tissue} ({a.volumes_ml()[tissue]:.0f} ml)", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "maps.png"), dpi=80)
    plt.close(fig)
    volumes, params = phantom_v2.make_case(1, 1, "HGG")
    k = int(np.argwhere(volumes["seg"] > 0)[:, 2].mean())
    fig, axes = plt.subplots(1, 5, figsize=(11, 2.6))
    for ax, key in zip(axes, ("t1", "t1ce", "t2", "flair", "seg")):
        ax.imshow(np.rot90(volumes[key][:, :, k]), cmap="gray")
        ax.set_title(f"{key} (slice {k})", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "case.png"), dpi=80)
    plt.close(fig)


def markdown(record):
    """difficulty.md: the v1 / v2 table from the record."""
    versions = list(record["versions"])
    lines = ["| measure | " + " | ".join(versions) + " |", "|---|" + "---|" * len(versions)]

    def row(label, get):
        cells = []
        for v in versions:
            try:
                cells.append(get(record["versions"][v]))
            except (KeyError, TypeError):
                cells.append("—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for name in TEST_SETS:
        for method in ("copy_source", "intensity_lut"):
            for target in ("flair", "t1", "t1ce"):
                row(
                    f"{name}: {method} T2→{target.upper()} PSNR / SSIM",
                    lambda e, n=name, m=method, t=target: "{psnr:.2f} / {ssim:.3f}".format(
                        **e["sets"][n]["baselines"][m][t]
                    ),
                )
        row(
            f"{name}: T2→T1 LUT carried to the next case, R² (mean ± SD)",
            lambda e, n=name: "{mean:.3f} ± {sd:.3f} (n {n})".format(
                **e["sets"][n]["lut_carry_r2_t2_to_t1"]
            ),
        )
        row(
            f"{name}: T2 AUC enhancing vs other tumour (mean; max abs(AUC - 0.5))",
            lambda e, n=name: "{mean:.3f}; {max_abs_minus_half:.3f} (n {n})".format(
                **e["sets"][n]["t2_enhancing_auc"]
            ),
        )
        row(
            f"{name}: tumour centres, axial slices",
            lambda e, n=name: "{}-{}".format(
                *(round(x) for x in e["sets"][n]["tumour_centre_slices"])
            ),
        )
    cost = record["cost_per_case_s"]
    lines.append("")
    lines.append(
        "Cost per full-size case, one process: "
        + ", ".join(f"{v} {cost[v]['mean']:.1f} ± {cost[v]['sd']:.1f} s" for v in ("v1", "v2"))
        + f" ({cost['cpu']}, {cost['cores']} cores; flags {' '.join(cost['flags'])})"
    )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--versions", nargs="+", default=["v1", "v2"])
    parser.add_argument("--out", default=os.path.join("docs", "results", "benchmark-v2"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit,
        "command": "python -m benchmarks.phantom_difficulty --cache CACHE",
        "versions": {},
    }
    for version in args.versions:
        with open(os.path.join(args.cache, f"phantom-{version}", benchmark.BENCHMARK_JSON)) as f:
            entry = {"benchmark": json.load(f), "sets": {}}
        for name in TEST_SETS:
            volumes, shard_dir = benchmark.set_folders(args.cache, version, name)
            scores, slices = baselines(shard_dir)
            entry["sets"][name] = {"baselines": scores, "slices": slices} | volume_measures(volumes)
            print(version, name, json.dumps(entry["sets"][name])[:400], flush=True)
        record["versions"][version] = entry
    if "v2" in args.versions:
        record["v2_geometry"] = v2_geometry(args.cache)
    record["cost_per_case_s"] = cost_per_case()
    figures(args.out)
    write_json_atomic(os.path.join(args.out, "difficulty.json"), record)
    write_text_atomic(os.path.join(args.out, "difficulty.md"), markdown(record))
    print(json.dumps(record["cost_per_case_s"]))


if __name__ == "__main__":
    main()
