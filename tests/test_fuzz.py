"""Every command fuzzed with generated bad argument lists: never a traceback, always
exit 2 with one `error:` line, and nothing created.

Each case starts from an argument list whose input paths are all bad (missing, a file
for a folder, an empty folder, a folder with a broken manifest, an over-long name), so
no case can start real work; one to three mutations then add unknown flags, bad
numbers, bad choices, bad modality lists, missing values and missing required flags.
The commands' `main(argv)` run in-process through `dygan_tf.utils.cli.run_main` in an empty
working folder; a few real subprocesses cross-check the in-process runs.
"""

import contextlib
import importlib
import io
import os
import random
import time
import traceback

import pytest

from dygan_tf.utils.cli import run_main
from tests.helpers import one_error_line, run_cli

SEED = 15
CASES_PER_COMMAND = 60
BAD_INTS = ["abc", "1.5", "", "0x10", "-", "1e3", "--", "0", "-1", "-99999"]
BAD_FLOATS = ["abc", "", "nan", "inf", "-1", "1e999", "0x1p3", "--"]
BAD_MODALITIES = ["bogus", "T2", "", ",", "t2,t2", "t1,,dwi", "t1 ce", "pd"]
UNKNOWN_FLAGS = ["--bogus", "-x", "--epochs-per-step", "---out", "--help-me", "--=1"]


def _flags(ints=(), floats=(), choices=None, modalities=(), texts=None):
    return {
        "ints": list(ints),
        "floats": list(floats),
        "choices": dict(choices or {}),
        "modalities": list(modalities),
        "texts": dict(texts or {}),
    }


CONFIG_FLAGS = dict(
    ints=("--epochs", "--image-size", "--base-filters", "--experts", "--seed"),
    floats=("--lr", "--lr-decay", "--ema"),
    choices={
        "--preset": ("paper", "demo", "tiny"),
        "--discriminator": ("multiscale", "patch"),
        "--dyconv": ("none", "down", "up", "both"),
        "--label-mode": ("kernel", "input"),
    },
    modalities=("--source", "--targets"),
)

# command: (argument list with {paths} to fill, the path flags, the other flags)
COMMANDS = {
    "dygan_tf.fit": (
        ["--data", "{data}", "--out", "runs/x", "--preset", "tiny"],
        ("--data",),
        _flags(
            ints=CONFIG_FLAGS["ints"] + ("--steps-per-epoch", "--train-hgg"),
            floats=CONFIG_FLAGS["floats"] + ("--lambda-l1",),
            choices=dict(CONFIG_FLAGS["choices"], **{"--baseline": ("pix2pix3",)}),
            modalities=CONFIG_FLAGS["modalities"],
        ),
    ),
    "dygan_tf.evaluate": (
        ["--run", "{data}", "--data", "{data}", "--out", "eval"],
        ("--run", "--data"),
        _flags(ints=("--figure-cases",), texts={"--split": ["bogus", "", "../x"]}),
    ),
    "dygan_tf.export": (["--run", "{data}", "--out", "saved/dygan/1"], ("--run",), _flags()),
    "dygan_tf.translate": (
        ["--model", "{data}", "--input", "{data}", "--out-dir", "out"],
        ("--model", "--input"),
        _flags(ints=("--batch",), modalities=("--source", "--targets")),
    ),
    "data_prep.build_tfrecords": (
        ["--brats-root", "{data}", "--out", "records"],
        ("--brats-root",),
        _flags(
            ints=(
                "--image-size",
                "--train-hgg",
                "--per-volume",
                "--workers",
                "--shards-per-split",
                "--seed",
            ),
            choices={"--compression": ("gzip", "none")},
            texts={"--source-slices": ["80:70", "x", "1:2:3", "-1:5", "", "150:160"]},
        ),
    ),
    # Valid counts would start a build: the base asks for zero cases.
    "data_prep.make_phantom": (
        ["--out", "phantom", "--hgg", "0", "--lgg", "0"],
        (),
        _flags(ints=("--hgg", "--lgg", "--seed", "--workers")),
    ),
    "tuning.search_lambda": (
        ["--data", "{data}", "--out", "lambda", "--preset", "tiny"],
        ("--data",),
        _flags(
            ints=CONFIG_FLAGS["ints"] + ("--max-trials", "--steps-per-epoch"),
            floats=CONFIG_FLAGS["floats"],
            choices=dict(CONFIG_FLAGS["choices"], **{"--oracle": ("grid", "bayesian")}),
            modalities=CONFIG_FLAGS["modalities"],
            texts={"--values": ["", "x", "1,,2", "-1", "nan", "0", "1,1"]},
        ),
    ),
    # An existing --work-dir would start the benchmarks: only paths that are not folders.
    "benchmarks.run": (
        ["--out", "results.json", "--tiny", "--work-dir", "{nodir}"],
        (),
        _flags(),
    ),
}


@pytest.fixture(scope="module")
def bad_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_inputs")
    (root / "file.txt").write_text("not a folder\n")
    (root / "empty").mkdir()
    junk = root / "junk"
    junk.mkdir()
    (junk / "manifest.json").write_text("{")
    (junk / "config.json").write_text("[]")
    (junk / "saved_model.pb").write_bytes(b"\x00garbage")
    (junk / "generator.keras").write_bytes(b"PK\x03\x04 not a zip")
    (root / "scan_t2.nii.gz").write_bytes(b"\x1f\x8b not gzip")
    nodir = [str(root / "missing"), str(root / "file.txt"), "x" * 300, str(root / "ünï cødé")]
    return {
        "data": nodir + [str(root / "empty"), str(junk), str(root / "scan_t2.nii.gz")],
        "nodir": nodir,
    }


def _mutate(rng, argv, path_flags, flags, paths):
    kinds = ["unknown", "dangling", "drop_value"]
    kinds += ["int"] * bool(flags["ints"]) + ["float"] * bool(flags["floats"])
    kinds += ["choice"] * bool(flags["choices"]) + ["modality"] * bool(flags["modalities"])
    kinds += ["text"] * bool(flags["texts"]) + ["path"] * bool(path_flags)
    kinds += ["drop_required"]
    kind = rng.choice(kinds)
    argv = list(argv)
    if kind in ("dangling", "drop_value") and not any(a.startswith("--") for a in argv):
        kind = "unknown"  # earlier mutations dropped every flag
    if kind == "unknown":
        argv.insert(rng.randrange(0, len(argv) + 1, 2), rng.choice(UNKNOWN_FLAGS))
    elif kind == "dangling":  # a flag with its value missing at the very end
        argv.append(rng.choice([a for a in argv if a.startswith("--")]))
    elif kind == "drop_value":
        i = rng.choice([i for i, a in enumerate(argv) if a.startswith("--")])
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            del argv[i + 1]
    elif kind == "int":
        argv += [rng.choice(flags["ints"]), rng.choice(BAD_INTS)]
    elif kind == "float":
        argv += [rng.choice(flags["floats"]), rng.choice(BAD_FLOATS)]
    elif kind == "choice":
        flag = rng.choice(sorted(flags["choices"]))
        argv += [flag, rng.choice(["bogus", "", flags["choices"][flag][0].upper(), "1"])]
    elif kind == "modality":
        argv += [rng.choice(flags["modalities"]), rng.choice(BAD_MODALITIES)]
    elif kind == "text":
        flag = rng.choice(sorted(flags["texts"]))
        argv += [flag, rng.choice(flags["texts"][flag])]
    elif kind == "path":
        flag = rng.choice(path_flags)  # given again: the last one counts
        argv += [flag, rng.choice(paths["data"])]
    else:  # drop the first flag and its value
        argv = argv[2:]
    return kind, argv


def generate_cases(seed=SEED, per_command=CASES_PER_COMMAND):
    """{command: [argv, ...]} with paths left as {data}/{nodir} placeholders' indices."""
    rng = random.Random(seed)
    cases = {}
    for command, (base, path_flags, flags) in COMMANDS.items():
        cases[command] = []
        for _ in range(per_command):
            argv = list(base)
            for _ in range(rng.choice([1, 1, 2, 3])):
                _, argv = _mutate(rng, argv, path_flags, flags, {"data": ["{data}"]})
            cases[command].append((rng.random(), argv))
    return cases


def _fill(argv, pick, paths):
    out = []
    for a in argv:
        if a in ("{data}", "{nodir}"):
            options = paths[a[1:-1]]
            a = options[int(pick * len(options)) % len(options)]
        out.append(a)
    return out


def run_in_process(module, argv):
    """(exit code, stdout, stderr) of `run_main(module.main, argv)`."""
    main = importlib.import_module(module).main
    out, err = io.StringIO(), io.StringIO()
    code = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_main(main, argv)
        except SystemExit as e:
            code = e.code
        except Exception:  # a bug: run_main let it through, as a traceback would
            err.write(traceback.format_exc())
            code = 1
    return code, out.getvalue(), err.getvalue()


def test_every_command_fuzzed(bad_paths, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DYGAN_CACHE", str(tmp_path / "cache"))
    start = time.perf_counter()
    counts, failures = {}, []
    for command, cases in generate_cases().items():
        counts[command] = 0
        for pick, template in cases:
            argv = _fill(template, pick, bad_paths)
            code, _, err = run_in_process(command, argv)
            lines = [x for x in err.splitlines() if x.strip()]
            errors = [x for x in lines if not x.startswith(("note: ", "warning: "))]
            ok = (
                code == 2
                and "Traceback" not in err
                and len(errors) == 1
                and errors[0].startswith("error: ")
            )
            left = sorted(os.listdir(tmp_path))
            if not ok or left:
                failures.append(f"{command} {argv}: exit {code}, left {left}, stderr {err!r}")
                for name in left:
                    os.system(f"rm -rf -- '{tmp_path / name}'")
            counts[command] += 1
    seconds = time.perf_counter() - start
    print(f"fuzzed {sum(counts.values())} cases in {seconds:.1f}s: {counts}")
    assert not failures, "\n".join(failures[:20]) + f"\n({len(failures)} failing cases)"
    assert all(n == CASES_PER_COMMAND for n in counts.values())


KNOWN = [
    # The traceback the issue found: an unknown source modality in fit.
    ("dygan_tf.fit", ["--data", "x", "--out", "y", "--source", "bogus"], "bogus"),
    ("dygan_tf.fit", ["--data", "x", "--out", "y", "--targets", "t1,dwi"], "dwi"),
    ("tuning.search_lambda", ["--data", "x", "--out", "y", "--source", "bogus"], "bogus"),
    (
        "data_prep.make_phantom",
        ["--out", "p", "--hgg", "1", "--lgg", "0", "--seed", "-1"],
        "--seed",
    ),
    ("data_prep.build_tfrecords", ["--verify", "nowhere"], "nowhere"),
    (
        "dygan_tf.translate",
        ["--model", "m", "--input", "i", "--out-dir", "o", "--batch", "0"],
        "--batch",
    ),
]


@pytest.mark.parametrize("module, argv, needle", KNOWN)
def test_known_bad_arguments_in_process(module, argv, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process(module, argv)
    assert code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "module, argv",
    [
        ("dygan_tf.fit", ["--data", "x", "--out", "y", "--source", "bogus"]),
        ("data_prep.make_phantom", ["--out", "p", "--hgg", "-1", "--lgg", "abc"]),
        ("dygan_tf.translate", ["--model", "m", "--input", "i", "--out-dir", "o", "--bogus"]),
    ],
)
def test_subprocess_cross_check(module, argv, tmp_path):
    line = one_error_line(run_cli(module, *argv, cwd=tmp_path, timeout=120))
    code, _, err = run_in_process(module, argv)
    assert code == 2 and err.strip() == line
    assert os.listdir(tmp_path) == []
