"""What one paper-tables run leaves as its record: scores, parameters, inference time,
the machine and commit, its small files; and committing records to git.

Used by `research.paper_tables` after each (row, seed) trains.
"""

import os
import shutil
import subprocess
import time

INFERENCE_REPEATS = 5


def scores_of(report, targets):
    keep = ("psnr", "ssim", "psnr_brain", "ssim_brain")
    per = report["per_target"]
    return {t: {m: per[t].get(m) for m in keep} for t in targets if per.get(t)}


def count_parameters(run_dir):
    """{"generator", "discriminator"} parameter counts (summed over pix2pix3's members),
    from the networks built from the recorded configs."""
    from dygan_tf.models.builders import build_networks
    from dygan_tf.run_folder import files as run_files

    baseline = run_files.read_baseline(run_dir)
    folders = list(baseline[1].values()) if baseline else [run_dir]
    total = {"generator": 0, "discriminator": 0}
    for folder in folders:
        generator, discriminator = build_networks(run_files.read_config(folder).model)
        total["generator"] += generator.count_params()
        total["discriminator"] += discriminator.count_params()
    return total


def inference_time(run_dir, slices):
    """Median seconds to translate one case (`slices` T2 slices into every target of the
    run) through the run's predictor (pix2pix3: one model per target)."""
    import numpy as np

    from dygan_tf.config.tasks import task_code
    from dygan_tf.inference.predictor import load_predictor
    from dygan_tf.run_folder.folder import RunFolder

    predictor = load_predictor(RunFolder(run_dir), check_shards=False)
    config = predictor.config
    size, source = config.model.image_size, config.train.source
    names = [t for t in config.train.targets for _ in range(slices)]
    image = np.random.default_rng(0).uniform(-1, 1, (len(names), size, size, 1))
    image = image.astype("float32")
    task = np.stack([task_code(source, t) for t in names])
    predictor(image, task)  # warm-up (traces)
    times = []
    for _ in range(INFERENCE_REPEATS):
        start = time.perf_counter()
        predictor(image, task)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def slices_per_case(data_dir):
    from dygan_tf.data.manifest import split_cases

    cases = split_cases(data_dir, "test")
    return max(1, round(sum(len(c["slices"]) for c in cases) / len(cases)))


def machine():
    """The CPU this ran on: model name, kind and the flags that matter for speed."""
    from dygan_tf.utils.cpu import cpu_flags, cpu_kind

    flags = cpu_flags()
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    return {
        "cpu": name,
        "cpu_kind": cpu_kind(flags),
        "cpu_flags": [f for f in wanted if f in flags],
        "cores": os.cpu_count(),
    }


def copy_small_records(run_dir, out):
    """config.json and history.csv (pix2pix3: its description and each member's)."""
    from dygan_tf.run_folder import files as run_files

    baseline = run_files.read_baseline(run_dir)
    if baseline:
        shutil.copy(run_files.path(run_dir, run_files.BASELINE), out)
        for target, folder in baseline[1].items():
            shutil.copy(
                run_files.path(folder, run_files.CONFIG),
                os.path.join(out, f"config_{target}.json"),
            )
            shutil.copy(
                run_files.path(folder, run_files.HISTORY),
                os.path.join(out, f"history_{target}.csv"),
            )
    else:
        for name in (run_files.CONFIG, run_files.HISTORY):
            shutil.copy(run_files.path(run_dir, name), out)


def git_commit_records(records, message, also=()):
    """Commits `records` (and the files `also`, absolute paths in the same repository)
    only, in its git repository; retries a busy index."""
    paths = [".", *(os.path.relpath(p, records) for p in also)]
    for attempt in range(10):
        add = subprocess.run(
            ["git", "-C", records, "add", "--", *paths], capture_output=True, text=True
        )
        commit = subprocess.run(
            ["git", "-C", records, "commit", "-q", "-m", message, "--", *paths],
            capture_output=True,
            text=True,
        )
        if add.returncode == 0 and commit.returncode == 0:
            return True
        if "index.lock" not in add.stderr + commit.stderr:
            print(f"note: git commit of {records} failed: {(add.stderr + commit.stderr).strip()}")
            return False
        time.sleep(2 + attempt)
    return False
