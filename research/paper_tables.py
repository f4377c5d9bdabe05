"""Reruns the paper's Tables 2-4 over seeds: one resumable command, records as the state.

    python -m research.paper_tables --table all
    python -m research.paper_tables --table 2 --seeds 0-4 [--commit]
    python -m research.paper_tables --summary   # results from the records only

Each (row, seed) trains with `dygan_tf.fit` in its own run folder (RUNS/<row>/seed<k>,
a subprocess whose exact command is recorded), then is scored on the benchmark's named
test sets (`tables.BENCHMARKS`). v1: `demo`, the data's test split (the demo's shards,
7 phantom cases), and `heldout` (40 cases of a phantom with another seed, built once
under --cache). v2: `test_mni` and `test_colin27` of the physics phantom, training on
its `train` shards (built once under --cache, or `--data` and `--test-set NAME=SHARDS`).
Runs of one seed share that seed, so rows compare in pairs (`research.paired`). Each
benchmark's records live in their own folder; a record carries the benchmark, its phantom version
and the content sha256 of the training and test manifests, and a table refuses
records of two benchmarks or of rebuilt data.

A finished run leaves its small records in RECORDS/runs/<row>/seed<k>/ (record.json
last: scores, parameters, training wall time, commit, CPU flags, the command), and
RECORDS/results.json, results.md and psnr.png are rewritten from all records after
each run. A record is what "done" means: a rerun, here or on a fresh machine holding
only the committed records, skips it; a killed run is resumed from its run folder's
checkpoint by fit itself. With --commit each finished run's records are committed to
the git repository that holds RECORDS.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

from dygan_tf.config.flags import positive_int
from dygan_tf.utils.cache import cache_root
from dygan_tf.utils.cli import ArgumentParser, run_main
from dygan_tf.utils.errors import UserError, for_flag
from dygan_tf.utils.git import git_commit_of
from research import tables
from research.records import (
    copy_small_records,
    count_parameters,
    git_commit_records,
    inference_time,
    machine,
    scores_of,
    slices_per_case,
)

PROG = "research.paper_tables"
DEFAULT_RECORDS = os.path.join("docs", "results", "paper-tables")
DEFAULT_RUNS = os.path.join("runs", "paper-tables")
RECORD = tables.RECORD
ATTEMPTS = "paper_tables_attempts.json"  # in a run folder: the fit attempts' wall times
HELDOUT = dict(cases=60, seed=1, train_hgg=16, train_lgg=4)  # 40 test cases
ORDER = (2, 4, 3, tables.BACKENDS)  # within a seed


def parse_seeds(text):
    """ "0-4" or "0,2,5" (or a mix) -> a sorted tuple of distinct seeds >= 0."""
    seeds = set()
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise UserError(f"--seeds: expected seeds like 0-4 or 0,1,2, found {part!r}")
        seeds.update(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return tuple(sorted(seeds))


def parse_tables(text):
    """ "all" (Tables 2-4), or a list of 2, 3, 4 and backends."""
    found = []
    for part in (p.strip() for p in text.split(",")):
        if part == "all":
            found += tables.TABLES
        elif part == tables.BACKENDS:
            found.append(part)
        elif part in {str(t) for t in tables.TABLES}:
            found.append(int(part))
        else:
            raise UserError(
                f"--table: expected 2, 3, 4, backends, a comma-separated list of them or "
                f"all, found {part!r}"
            )
    return tuple(sorted(set(found), key=ORDER.index))


def parse_args(argv):
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument(
        "--table",
        default="all",
        help="2, 3, 4, a list (2,4), all (2-4) or backends (the demo on each Keras backend)",
    )
    p.add_argument(
        "--seeds",
        help="e.g. 0-4 or 0,1,2 for every table (default: 0-4 for Table 2, 0-2 for 3 and 4)",
    )
    p.add_argument("--rows", help="only these row ids (comma-separated; see tables.py)")
    p.add_argument(
        "--benchmark",
        default="v1",
        choices=sorted(tables.BENCHMARKS),
        help="v1: the demo's phantom and a seed-1 held-out phantom; v2: the physics "
        "phantom's train / test_mni / test_colin27 (default v1)",
    )
    p.add_argument(
        "--test-set",
        action="append",
        default=[],
        metavar="NAME=SHARDS",
        help="a named test set's shard folder (its test split is scored); repeat for each",
    )
    p.add_argument("--preset", default="demo", help="fit's preset (default demo)")
    p.add_argument("--data", help="shard folder to train on (default: the demo's shards)")
    p.add_argument(
        "--heldout",
        help="v1's heldout test set's shard folder (default: 40 cases of a seed-1 "
        "phantom); the same as --test-set heldout=SHARDS",
    )
    p.add_argument(
        "--cache",
        default=cache_root(),
        help="where the default data sets are built once",
    )
    p.add_argument("--runs", default=DEFAULT_RUNS, help="parent of the run folders")
    p.add_argument(
        "--records",
        help=f"where the records go (default: the benchmark's folder, {DEFAULT_RECORDS} for v1)",
    )
    p.add_argument("--epochs", type=positive_int, help="fit --epochs (default: the preset's)")
    p.add_argument(
        "--steps-per-epoch", type=positive_int, help="fit --steps-per-epoch (quick looks)"
    )
    p.add_argument("--commit", action="store_true", help="git-commit each run's records")
    p.add_argument(
        "--summary", action="store_true", help="only rewrite the results from the records"
    )
    args = p.parse_args(argv)
    args.tables = parse_tables(args.table)
    args.seed_list = parse_seeds(args.seeds) if args.seeds is not None else None
    args.row_ids = None
    if args.rows is not None:
        args.row_ids = [r.strip() for r in args.rows.split(",") if r.strip()]
        unknown = [r for r in args.row_ids if r not in tables.ROW_BY_ID]
        if unknown or not args.row_ids:
            raise UserError(
                f"--rows: unknown row {', '.join(unknown) or '(none)'}; expected some of "
                f"{', '.join(tables.ROW_BY_ID)}"
            )
    from dygan_tf.config.run_config import PRESETS

    if args.preset not in PRESETS:
        raise UserError(f"--preset: expected one of {', '.join(PRESETS)}, found {args.preset!r}")
    bench = tables.BENCHMARKS[args.benchmark]
    args.records = args.records or bench.records
    args.test_sets = parse_test_sets(args.test_set, bench)
    if args.heldout is not None:
        if "heldout" not in bench.test_sets:
            raise UserError(f"--heldout: benchmark {bench.name} has no heldout test set")
        args.test_sets["heldout"] = args.heldout
    from dygan_tf.data.manifest import read_manifest

    if args.data is not None:
        with for_flag("--data"):
            read_manifest(args.data)
    for name, folder in args.test_sets.items():
        with for_flag(f"--test-set {name}"):
            read_manifest(folder)
    return args


def parse_test_sets(items, bench):
    """["NAME=SHARDS", ...] -> {name: shard folder}; names must be the benchmark's."""
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not folder:
            raise UserError(f"--test-set: expected NAME=SHARDS, found {item!r}")
        if name not in bench.test_sets:
            raise UserError(
                f"--test-set: benchmark {bench.name} has test sets "
                f"{', '.join(bench.test_sets)}, found {name!r}"
            )
        out[name] = folder
    return out


def plan(table_numbers, seed_list=None, row_ids=None):
    """[(row, seed)] in the order they run: seed by seed (so every seed's pairs finish
    together), Table 2 then 4 then 3 (then the backends) within a seed. A row with
    `same_as` is run as that row, a row made of members as its members (each run
    listed once: the paper's 3×pix2pix T1 member is Table 4's pix2pix)."""
    order = sorted(table_numbers, key=ORDER.index)
    seeds_of = {t: tuple(seed_list) if seed_list else tables.DEFAULT_SEEDS[t] for t in order}
    out, seen = [], set()
    for seed in sorted(set().union(*seeds_of.values())):
        for t in order:
            if seed not in seeds_of[t]:
                continue
            for row in tables.rows_of((t,)):
                if row_ids is not None and row.id not in row_ids:
                    continue
                for run_row in tables.run_rows(row):
                    if (run_row.id, seed) not in seen:
                        seen.add((run_row.id, seed))
                        out.append((run_row, seed))
    return out


def record_dir(records, row_id, seed):
    return os.path.join(records, "runs", row_id, f"seed{seed}")


def is_done(records, row_id, seed):
    return os.path.isfile(os.path.join(record_dir(records, row_id, seed), RECORD))


def fit_command(row, seed, args, data_dir, run_dir):
    command = [sys.executable, "-m", "dygan_tf.fit", "--data", data_dir, "--out", run_dir]
    command += ["--preset", args.preset, "--seed", str(seed), *row.flags]
    if args.epochs is not None:
        command += ["--epochs", str(args.epochs)]
    if args.steps_per_epoch is not None:
        command += ["--steps-per-epoch", str(args.steps_per_epoch)]
    return command


def _read_json(file, default):
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def train(command, run_dir, log_file):
    """Runs (or resumes) fit; returns {"train_wall_s", "attempts", "killed_attempts"}.

    Each attempt's start is written before it runs, so an attempt killed with the
    runner is counted as killed (its time unknown, not added)."""
    from dygan_tf.utils.atomic import write_json_atomic

    os.makedirs(run_dir, exist_ok=True)
    attempts_file = os.path.join(run_dir, ATTEMPTS)
    attempts = _read_json(attempts_file, [])
    attempts.append({"start": time.time()})
    write_json_atomic(attempts_file, attempts)
    start = time.perf_counter()
    with open(log_file, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise UserError(
            f"{run_dir}: fit exited with {result.returncode}; its output is in {log_file}"
        )
    attempts[-1]["wall_s"] = time.perf_counter() - start
    write_json_atomic(attempts_file, attempts)
    done = [a["wall_s"] for a in attempts if "wall_s" in a]
    return {
        "train_wall_s": round(sum(done), 1),
        "attempts": len(attempts),
        "killed_attempts": len(attempts) - len(done),
    }


def run_one(row, seed, args, data, commit):
    """Trains, scores and records one (row, seed); returns its record. `data` is
    {"train": shards, "test_sets": {name: shards}, "benchmark", "phantom", "manifests"}."""
    from dygan_tf.evaluation import report as report_lib
    from dygan_tf.evaluation.scoring import PER_CASE
    from dygan_tf.utils.atomic import publish_folder, write_json_atomic

    run_dir = os.path.join(args.runs, row.id, f"seed{seed}")
    command = fit_command(row, seed, args, data["train"], run_dir)
    timing = train(command, run_dir, run_dir.rstrip(os.sep) + ".log")
    out = record_dir(args.records, row.id, seed)
    staging = out + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    scores, per_case = {}, {}
    for name, folder in data["test_sets"].items():
        report = report_lib.evaluate_report(
            [run_dir], os.path.join(run_dir, f"eval_{name}"), data_dir=folder, split="test"
        )
        shutil.copy(
            os.path.join(run_dir, f"eval_{name}", report_lib.REPORT_JSON),
            os.path.join(staging, f"report_{name}.json"),
        )
        scores[name] = scores_of(report, row.targets)
        source = report.get("source", "t2")
        per_case[name] = {
            t: report.get(PER_CASE, {}).get(f"{source}->{t}", {}) for t in row.targets
        }
    copy_small_records(run_dir, staging)
    load = os.getloadavg()[0]
    record = {
        "row": row.id,
        "table": row.table,
        "label": row.label,
        "seed": seed,
        "targets": list(row.targets),
        "benchmark": data["benchmark"],
        "phantom": data["phantom"],
        "manifests": data["manifests"],
        "scores": scores,
        PER_CASE: per_case,
        "parameters": count_parameters(run_dir),
        **timing,
        "inference_s_per_case": round(inference_time(run_dir, slices_per_case(data["train"])), 4),
        "slices_per_case": slices_per_case(data["train"]),
        "load_average_1min_after": round(load, 2),
        "command": ["python", *command[1:]],
        "data": {
            "train": os.path.abspath(data["train"]),
            **{k: os.path.abspath(v) for k, v in data["test_sets"].items()},
        },
        "commit": commit[0],
        "commit_dirty": commit[1],
        "machine": machine(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(os.path.join(staging, RECORD), record)
    publish_folder(staging, out, replace=True)  # the record appears whole, or not at all
    return record


def default_data(args):
    """The run's data: {"train", "test_sets", "benchmark", "phantom", "manifests"}; v1's
    default shards are built once under --cache where not given."""
    from dygan_tf.config.run_config import get_preset
    from dygan_tf.data.manifest import content_sha256, read_manifest
    from dygan_tf.training import fit_lib

    bench = tables.BENCHMARKS[args.benchmark]
    test_sets = dict(args.test_sets)
    missing = [n for n in bench.test_sets if n not in test_sets]
    if bench.name == "v1":
        size = get_preset(args.preset).model.image_size
        train = args.data or fit_lib.demo_data(args.cache, size)
        test_sets.setdefault("demo", train)
        if "heldout" in missing:
            test_sets["heldout"] = heldout_data(args.cache, size)
    else:
        built = benchmark_data(args.cache, bench) if args.data is None or missing else {}
        train = args.data or built["train"]
        for name in missing:
            test_sets[name] = built[name]
    test_sets = {n: test_sets[n] for n in bench.test_sets}
    manifests = {"train": content_sha256(read_manifest(train))}
    manifests.update({n: content_sha256(read_manifest(f)) for n, f in test_sets.items()})
    return {
        "train": train,
        "test_sets": test_sets,
        "benchmark": bench.name,
        "phantom": bench.phantom,
        "manifests": manifests,
    }


def benchmark_data(cache, bench):
    """{set name: shard folder} of a named benchmark's sets under `cache` (built once,
    `dygan_tf.data.benchmark`, where not yet there)."""
    from dygan_tf.data import benchmark
    from dygan_tf.data.manifest import has_manifest

    names = ("train", *bench.test_sets)
    folders = {n: benchmark.set_folders(cache, bench.phantom, n)[1] for n in names}
    if not all(has_manifest(f) for f in folders.values()):
        print(f"building benchmark {bench.name}'s sets under {cache}")
        benchmark.build_benchmark(cache, bench.phantom, workers=os.cpu_count() or 1)
    return folders


def update_readme(records):
    """Rewrites README.md's generated results (`research.readme_results`) when `records`
    is one of the checkout's own records folders; returns the files it rewrote."""
    from research import readme_results

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours = {os.path.join(root, os.path.dirname(p)) for p in readme_results.PAPER_TABLES.values()}
    if os.path.abspath(records) not in ours:
        return ()
    readme_results.main(["--root", root])
    return (os.path.join(root, readme_results.README),)


def check_records_match(records, data):
    """Refuses, in one line, to add runs of other data to a records folder: another
    benchmark, or a training or test manifest that differs from the recorded one."""
    from research import summary

    found = summary.load_records(records)  # (refuses a folder that already mixes)
    for runs in found.values():
        for record in runs.values():
            summary.check_same_data(record, data, records)


def heldout_data(cache, image_size):
    """40 test cases of a 60-case phantom with seed 1 (none is in the demo's phantom)."""
    from dygan_tf.data import phantom
    from dygan_tf.training import fit_lib

    h = HELDOUT
    root = os.path.join(cache, f"phantom-{h['cases']}-seed{h['seed']}")
    if not os.path.exists(os.path.join(root, phantom.TRAINING_FOLDER, "name_mapping.csv")):
        print(f"building the held-out phantom ({h['cases']} cases, seed {h['seed']}) in {root}")
        hgg = h["cases"] * 3 // 4
        phantom.build_phantom(
            root, hgg, h["cases"] - hgg, seed=h["seed"], workers=os.cpu_count() or 1
        )
    out = os.path.join(cache, f"shards-{h['cases']}-seed{h['seed']}-{image_size}px")
    return fit_lib.ensure_shards(root, out, image_size, h["train_hgg"], h["train_lgg"])


def _eta(pending, done_times):
    """Seconds left: each pending run at the mean time of finished runs of its table
    (of any table while none of its own has finished)."""
    if not done_times:
        return None
    every = [t for times in done_times.values() for t in times]
    left = 0.0
    for row, _ in pending:
        times = done_times.get(row.table) or every
        left += sum(times) / len(times)
    return left


def _fmt(seconds):
    if seconds is None:
        return "unknown until one run finishes"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def main(argv=None):
    args = parse_args(argv)
    from research import summary

    todo = plan(args.tables, args.seed_list, args.row_ids)
    if args.summary:
        summary.write(args.records, args.benchmark)
        update_readme(args.records)
        return 0
    from dygan_tf.utils.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    pending = [(r, s) for r, s in todo if not is_done(args.records, r.id, s)]
    print(
        f"{PROG}: {len(todo)} runs, {len(todo) - len(pending)} already recorded in {args.records}"
    )
    data = default_data(args) if pending else None
    if data is not None:
        check_records_match(args.records, data)
    primary = tables.BENCHMARKS[args.benchmark].primary_test_set
    commit = git_commit_of()
    done_times = {}
    for i, (row, seed) in enumerate(pending):
        start = time.perf_counter()
        where = os.path.join(args.runs, row.id, f"seed{seed}")
        resumed = os.path.isdir(where)
        print(
            f"[{i + 1}/{len(pending)}] {row.id} seed {seed}: "
            f"{'resuming' if resumed else 'training'} in {where} "
            f"(time left: {_fmt(_eta(pending[i:], done_times))})",
            flush=True,
        )
        record = run_one(row, seed, args, data, commit)
        done_times.setdefault(row.table, []).append(time.perf_counter() - start)
        summary.write(args.records, args.benchmark)
        readme = update_readme(args.records)
        psnr = ", ".join(
            f"{t} {record['scores'][primary][t]['psnr']:.2f}" for t in record["targets"]
        )
        print(
            f"[{i + 1}/{len(pending)}] {row.id} seed {seed}: done in "
            f"{time.perf_counter() - start:.0f} s ({primary} PSNR {psnr}); "
            f"time left: {_fmt(_eta(pending[i + 1 :], done_times))}",
            flush=True,
        )
        if args.commit:
            git_commit_records(
                args.records, f"results: paper tables, {row.id} seed {seed}", also=readme
            )
    if not pending:
        summary.write(args.records, args.benchmark)
    print(f"{PROG}: results in {os.path.join(args.records, summary.RESULTS_MD)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
