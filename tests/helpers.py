"""Plain helpers shared by the tests (no fixtures here: those live in conftest.py)."""

import contextlib
import io
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
from typing import NamedTuple

import numpy as np

from dygan_tf.config.tasks import task_code
from dygan_tf.data import phantom

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The session phantom and its shards (conftest.py builds them once).
PHANTOM_HGG, PHANTOM_LGG = 4, 2
IMAGE_SIZE = 64
TRAIN_HGG, TRAIN_LGG = 3, 1
BUILD_ARGS = dict(
    image_size=IMAGE_SIZE,
    train_hgg=TRAIN_HGG,
    train_lgg=TRAIN_LGG,
    shards_per_split=2,
    workers=2,
    verbose=False,
)

# The small `fit` runs shared by the fit, evaluate and distribute tests (conftest.py
# trains each once, in-process): name -> (extra flags, epochs), FIT_STEPS steps an epoch.
# Each configuration costs a tf.function trace of its train step, so one run carries
# several checks (patch_down also trains mirrored on the two logical CPUs).
FIT_RUNS = {
    "patch_down": (
        ["--discriminator", "patch", "--dyconv", "down"]
        + ["--strategy", "mirrored", "--cpu-replicas", "2", "--ema", "0.9"],
        1,
    ),
    # The multi-scale D; DyConv in both halves of G (the default `up` half alone is what
    # the other fit tests train: kill -9, two workers, the fault and resume runs).
    "ms_both": (["--discriminator", "multiscale", "--dyconv", "both"], 2),
    "mgan": (["--label-mode", "input", "--discriminator", "patch"], 1),
    "pix2pix3": (["--baseline", "pix2pix3"], 1),  # the paper's: each member a DyGAN run
    "pix2pix3_matched": (["--baseline", "pix2pix3-matched"], 1),  # together one run
}
FIT_STEPS = 3

# Tests whose subject is not the discriminator (faults and resume, kill -9, two workers,
# the λ search, mixed precision, XLA, replica equality) train the tiny preset with the
# PatchGAN D: a train step then traces in ~2/3 of the multi-scale D's time. The shared
# fit runs, the networks' and the stacked-D tests and the benchmarks keep the
# multi-scale D.
PATCH_D = ("--discriminator", "patch")


class FitRun(NamedTuple):
    """A shared `fit` run: its folder and what the command printed."""

    path: str
    stdout: str


# TensorFlow's native start-up log lines, which bypass Python's stderr handling.
_NATIVE_LOG_PREFIXES = ("WARNING: All log messages before absl", "I0000", "W0000", "E0000")


def write_tiny_root(root, masks, seed=0):
    """A BraTS 2019-layout root (a `pathlib.Path`) of HGG cases {case id: boolean brain
    mask}: random intensities inside each mask, zero outside, a sparse label-2 seg, an
    identity affine (1 mm voxels)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    for cid, mask in masks.items():
        folder = root / "HGG" / cid
        folder.mkdir(parents=True)
        for key in ("t1", "t1ce", "t2", "flair", "seg"):
            if key == "seg":
                volume = (mask & (rng.random(mask.shape) < 0.2)).astype(np.uint8) * 2
            else:
                volume = np.where(mask, rng.integers(1, 1000, mask.shape), 0).astype(np.int16)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folder / f"{cid}_{key}.nii.gz"))


def case_folder(root, index=0, grade="HGG"):
    """(folder, case id) of phantom case `index` under a BraTS-layout root."""
    cid = phantom.case_id(index)
    return os.path.join(root, phantom.TRAINING_FOLDER, grade, cid), cid


def run_cli(module, *args, timeout=300, cwd=REPO):
    """Runs `python -m module args`; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Runs a command as `python -m` does, then prints on stdout whether TensorFlow was
# imported by the time the process exits.
_RUN_AND_REPORT_TENSORFLOW = """
import atexit, runpy, sys
atexit.register(lambda: print("\\ntensorflow imported:", "tensorflow" in sys.modules))
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_cli_reporting_tensorflow(module, *args, timeout=300):
    """`run_cli`, and whether the command imported TensorFlow: (CompletedProcess with
    the report line taken off stdout, bool)."""
    result = subprocess.run(
        [sys.executable, "-c", _RUN_AND_REPORT_TENSORFLOW, module, *map(str, args)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    stdout, _, report = result.stdout.rstrip("\n").rpartition("\n")
    assert report.startswith("tensorflow imported: "), result.stdout
    result.stdout = stdout
    return result, report == "tensorflow imported: True"


def run_in_process(main, *args):
    """Runs a command's `main(argv)` as `python -m` does (through `cli.run_main`), in this
    process; returns a CompletedProcess like `run_cli`'s.

    Saves the ~10 s a fresh interpreter spends importing TensorFlow. Both Python's
    streams and file descriptors 1 and 2 are captured, so native lines written while the
    command runs count too. An exception other than the command's one-line `UserError`
    propagates (a traceback, so a failed test). Each command keeps at least one test
    that runs it in a fresh process, where its import-time output is checked as well.
    """
    from dygan_tf.utils.cli import run_main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err:
        os.dup2(fd_out.fileno(), 1)
        os.dup2(fd_err.fileno(), 2)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    run_main(main, argv)
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        fd_out.seek(0)
        fd_err.seek(0)
        native_out = fd_out.read().decode("utf-8", "replace")
        native_err = fd_err.read().decode("utf-8", "replace")
    return subprocess.CompletedProcess(
        ["<in-process>", *argv], code, out.getvalue() + native_out, err.getvalue() + native_err
    )


def one_error_line(result, code=2):
    """Asserts the command failed with exit `code` and exactly one `error:` line on
    stderr (ignoring TensorFlow's native log lines); returns that line."""
    lines = [
        line
        for line in result.stderr.strip().splitlines()
        if not line.startswith(_NATIVE_LOG_PREFIXES)
    ]
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


def run_row_command(main, run_dir, tfrecord_dir, out):
    """A per-row analysis (research.rows.run_row_main) on row t2->flair of a
    paper T2 run, its JSON to `out`; asserts it succeeded and returns (CompletedProcess,
    saved JSON)."""
    argv = ("--run", run_dir, "--row", "t2->flair", "--data", tfrecord_dir, "--out", out)
    result = run_in_process(main, *argv)
    assert result.returncode == 0, result.stderr
    return result, json.loads(pathlib.Path(out).read_text())


def check_run_row_bad_inputs(main, run_dir, tfrecord_dir, tmp_path):
    """The per-row analyses (`--run RUN --row ROW ...`, through
    research.rows.run_row_main) on a paper T2 run: every bad flag gives one
    `error:` line naming it and writes no file."""
    for argv, needle in [
        (("--row", "t2-flair"), "--row: expected a row like 't2->flair', found 't2-flair'"),
        (("--row", "flair->flair"), "--row: flair->flair: flair is both the target and"),
        (("--row", "t1->flair"), "was not trained for t1->flair"),
        (("--row", "t2->flair", "--split", "val"), "no split 'val'"),
        (("--row", "t2->flair", "--out", tmp_path / "no" / "r.json"), "--out: the folder of"),
    ]:
        bad = tmp_path / "bad.json"
        argv = ("--out", bad, *argv) if "--out" not in argv else argv
        line = one_error_line(run_in_process(main, "--run", run_dir, "--data", tfrecord_dir, *argv))
        assert needle in line, line
        assert not bad.exists()
    line = one_error_line(run_in_process(main, "--run", run_dir, "--row", "t2->flair"))
    assert "--data:" in line and "records no training data" in line


def t2_task_batch(slices, size, seed=0):
    """`slices` random source slices, each expanded into the 3 T2 tasks (as the data
    pipeline does): (image, target, task) numpy arrays."""
    rng = np.random.RandomState(seed)
    image = np.repeat(rng.uniform(-1, 1, (slices, size, size, 1)), 3, axis=0).astype("float32")
    target = rng.uniform(-1, 1, (3 * slices, size, size, 1)).astype("float32")
    task = np.tile(np.stack([task_code("t2", t) for t in ("flair", "t1", "t1ce")]), (slices, 1))
    return image, target, task


# Runs in a folder where `dygan_tf` is not importable (and blocked, for a checkout
# installed with `pip install -e .`): TensorFlow alone serves the export.
_SERVE_ALONE = """
import sys
sys.modules["dygan_tf"] = None
import numpy as np
import tensorflow as tf
try:
    import dygan_tf
except ImportError:
    pass
else:
    sys.exit("dygan_tf is importable here")
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
x = np.load("inputs.npz")
out = serve(**{key: tf.constant(x[key]) for key in x.files})
np.save("served.npy", out["synthesized"].numpy())
"""


def serve_alone(saved_model, work, **inputs):
    """`serving_default` of `saved_model` called on `inputs` (numpy arrays by input
    name) in a fresh interpreter that imports TensorFlow alone, from folder `work`
    (no PYTHONPATH, so this package is not importable there); returns the output."""
    np.savez(os.path.join(work, "inputs.npz"), **inputs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    served = subprocess.run(
        [sys.executable, "-c", _SERVE_ALONE, str(saved_model)],
        cwd=work,
        env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert served.returncode == 0, served.stderr
    return np.load(os.path.join(work, "served.npy"))


def save_untrained_run(folder, config, seed=0):
    """A run folder as `fit` leaves it (config.json, generator.keras) with `config`'s
    generator at its random initial weights."""
    import keras

    from dygan_tf.models.builders import build_networks

    keras.utils.set_random_seed(seed)
    generator, _ = build_networks(config.model)
    generator.save(os.path.join(folder, "generator.keras"))
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        f.write(config.to_json())
    return folder


def run_limited(module, argv, max_bytes, timeout=300):
    """Runs `module.main(argv)` through run_main in a child whose files may not grow
    past `max_bytes` (RLIMIT_FSIZE) with SIGXFSZ ignored: writes fail with EFBIG, as on
    a full disk."""
    code = textwrap.dedent(
        f"""
        import importlib, resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({max_bytes}, {max_bytes}))
        from dygan_tf.utils.cli import run_main
        run_main(importlib.import_module({module!r}).main, {[str(a) for a in argv]!r})
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def checkpoint_counts(prefix):
    """(epoch, G's optimizer steps, D's optimizer steps) stored in the run folder's
    checkpoint at `prefix` (a `ckpt-N` of `dygan_tf.run_folder.checkpoints`)."""
    from dygan_tf.run_folder import checkpoints

    values = checkpoints.read(prefix)

    def steps(name):
        return next(int(v) for p, v in values[name].items() if p.endswith("/iteration"))

    return values["epoch"], steps("g_optimizer"), steps("d_optimizer")
