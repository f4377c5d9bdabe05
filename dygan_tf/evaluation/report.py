"""The evaluation report (the paper's Table 2): trained generators and two baselines
scored on a split, written as report.json, report.md and figure.png.

`evaluate_report` is what `python -m dygan_tf.evaluate` and `fit --demo` call; the
scoring itself (models, baselines, rows) lives in `dygan_tf.evaluation.scoring`. A paper-mode run
gets the paper's table (a column per target); a `--source any` run one line per task
and a 4x4 source x target grid; a multi-source run one line per target x available set.
"""

import dataclasses
import os

import numpy as np

from dygan_tf.config import conditions
from dygan_tf.config.tasks import MODALITIES, targets_for
from dygan_tf.inference import tta
from dygan_tf.utils import markdown
from dygan_tf.utils.atomic import atomic_path, write_json_atomic, write_text_atomic
from dygan_tf.utils.errors import UserError, for_flag, for_flag_of

REPORT_JSON, REPORT_MD, FIGURE = "report.json", "report.md", "figure.png"
BASELINE_NAMES = {
    "copy_source": "copy source (baseline)",
    "intensity_lut": "intensity LUT (baseline)",
}


def table(results, model_names, targets):
    """Markdown in the layout of the paper's Table 2: PSNR (dB) / SSIM per target."""
    rows = [
        [BASELINE_NAMES.get(name, name)] + [_cell(results[name].get(t)) for t in targets]
        for name in list(model_names) + list(BASELINE_NAMES)
    ]
    return markdown.table(["method"] + [t.upper() for t in targets], rows)


def row_table_md(results, model_names, keys):
    """Markdown: one line per row (task, or target x available set), a column per
    method with PSNR (dB) / SSIM; "—" where a method does not do that row."""
    methods = list(model_names) + list(BASELINE_NAMES)
    rows = []
    for key in keys:
        sources, target = key.split("->")
        cells = [_cell(results[m].get(key)) for m in methods]
        rows.append([target.upper(), sources.upper(), *cells])
    header = ["target", "from"] + [BASELINE_NAMES.get(m, m) for m in methods]
    return markdown.table(header, rows)


def task_grid_md(scores):
    """Markdown 4x4 grid (rows: source, columns: target) of one method's 12 tasks."""
    rows = [
        [s.upper()] + ["—" if s == t else _cell(scores.get(f"{s}->{t}")) for t in MODALITIES]
        for s in MODALITIES
    ]
    return markdown.table(["source \\ target"] + [t.upper() for t in MODALITIES], rows)


def _cell(metrics):
    if not metrics or metrics.get("psnr") is None:
        return "—"
    return f"{metrics['psnr']:.2f} / {metrics['ssim']:.4f}"


def per_target(scores, keys):
    """{target: {metric: mean over that target's rows}} of one method's row scores."""
    out = {}
    for key in keys:
        if scores.get(key):
            out.setdefault(key.split("->")[1], []).append(scores[key])
    return {
        t: {m: float(np.mean([r[m] for r in rows if r[m] is not None])) for m in rows[0]}
        for t, rows in out.items()
    }


def figure_panels(figure, keys, paper_source):
    """Rows of (image, label) panels: in the paper's mode the source then real and
    synthesised per target; otherwise, per target, its richest input row: input (first
    available channel), real, synthesised."""
    rows = []
    for case, slice_index, row_keys, image4, real, fake in figure:
        panels = []
        if paper_source is not None:
            c = MODALITIES.index(paper_source)
            panels.append((image4[0, ..., c : c + 1], "source"))
        for key in _figure_keys(keys):
            i = row_keys.index(key)
            if i not in fake:
                continue
            available, target = conditions.parse_row_key(key)
            if paper_source is None:
                c = MODALITIES.index(available[0])
                label = "in: " + "+".join(available)
                panels.append((image4[i, ..., c : c + 1], label))
            panels += [(real[i], f"real {target}"), (fake[i], f"synth. {target}")]
        rows.append((f"{case}\nslice {slice_index}", panels))
    return rows


def _figure_keys(keys):
    """Per target (first seen order), its row with the most sources (ties: the
    preferred source first)."""
    best = {}
    for key in keys:
        available, target = conditions.parse_row_key(key)
        rank = (len(available), -min(conditions.SOURCE_PREFERENCE.index(a) for a in available))
        if target not in best or rank > best[target][0]:
            best[target] = (rank, key)
    return [key for _, key in best.values()]


def save_figure(path, rows, title):
    """One figure row per test case, its panels left to right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(panels) for _, panels in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.7 * len(rows)), squeeze=False)
    for r, (label, panels) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if c < len(panels):
                img, title_text = panels[c]
                ax.imshow(np.asarray(img)[..., 0], cmap="gray", vmin=-1, vmax=1)
                if r == 0:
                    ax.set_title(title_text, fontsize=8)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(label, fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


@dataclasses.dataclass(frozen=True)
class ReportRows:
    """What a report scores: the rows of the first model's kind of run (`rows_of`)."""

    inputs: str  # "single" or "multi"
    source: str  # a modality, or "any"
    targets: tuple
    table: list  # its `conditions.Row`s
    keys: list  # their row keys ("t2->flair")
    paper: bool  # the paper's mode: one source, a column per target


def evaluate_report(
    runs,
    out,
    data_dir=None,
    split="test",
    model=None,
    figure_cases=4,
    run_flags=None,
    tta_mode="none",
    baseline_from=None,
    allow_changed_data=False,
    flags=None,
):
    """Scores run folders (and/or an exported SavedModel) on a split; writes the report.

    Every folder is opened and checked first, in pure Python: a missing run, a folder
    without a SavedModel and bad shards are refused before TensorFlow starts.

    Args:
        runs: run folders; the first one's config gives the source and targets, and its
            run.json the data folder when `data_dir` is None.
        out: folder for report.json, report.md and figure.png.
        data_dir: a `ShardFolder` (`dygan_tf.data.shard_folder`: the command opens it)
            or the path of a shard folder (default: the first run's training data);
            its manifest is read once.
        split: the manifest split to score ("test").
        model: an exported SavedModel folder, scored first (needs `data_dir`).
        figure_cases: test cases drawn in figure.png.
        run_flags: the command-line flag of each run (for error messages), if any.
        tta_mode: test-time augmentation of every model's outputs (`dygan_tf.inference.tta`;
            the baselines are never augmented).
        baseline_from: the shard folder (a `ShardFolder` or its path) whose training
            split fits the intensity LUT (default: the one `data_dir`'s manifest names,
            else `data_dir`).
        allow_changed_data: score a run on shards other than those it trained on (their
            manifest's sha256 differs from run.json's); refused otherwise
            (`dygan_tf.run_folder.data_record`). The report records the check.
        flags: the command's flag of each other parameter (`for_flag_of`), if any.

    Returns:
        The report dict written to report.json.

    Example:

    >>> evaluate_report(["runs/demo"], "runs/demo/eval")  # doctest: +SKIP
    """
    from dygan_tf.data.shard_folder import open_shards
    from dygan_tf.evaluation import scoring
    from dygan_tf.inference.savedmodel import check_savedmodel
    from dygan_tf.run_folder.data_record import ChangedData
    from dygan_tf.run_folder.folder import open_run_folder

    runs = [open_run_folder(r) for r in runs]  # each opened once here, handed down
    run_flags = list(run_flags or [None] * len(runs))
    for flag, run in zip(run_flags, runs):
        with for_flag(flag):
            run.require()
    if model:
        with for_flag_of(flags, "model"):
            check_savedmodel(model)
    if data_dir:
        with for_flag_of(flags, "data"):
            data_dir = open_shards(data_dir)
    if baseline_from:
        with for_flag_of(flags, "baseline_from"):
            baseline_from = open_shards(baseline_from)
    predictors, config, data_dir = load_predictors(runs, model, data_dir, run_flags, tta_mode)
    shards = open_shards(data_dir)  # manifest.json read once, handed down
    manifest = shards.manifest
    try:
        data_check = check_data(runs, shards, allow_changed_data)
    except ChangedData as e:
        allow = (flags or {}).get("allow_changed_data", "allow_changed_data")
        raise type(e)(f"{e}; {allow} scores them anyway") from None
    rows = rows_of(config)
    scoring.check_shards_fit(predictors, shards)
    baseline = baseline_from or shards.baseline()
    results, slices, figure = scoring.score_rows(
        predictors, shards, split, rows.table, figure_cases, baseline
    )
    per_case = results.pop(scoring.PER_CASE)
    names = [p.name for p in predictors]
    report = {
        "model": names[0],
        "split": split,
        "data": os.path.abspath(shards.path),
        "image_size": shards.image_size,
        "source": rows.source,
        "slices": slices,
    }
    report.update(data_record(shards, baseline))
    if tta_mode != "none":  # (a default report stays as it was)
        report["tta"] = tta_mode
    report["data_check"] = data_check
    results, section, heading, md_table = results_section(results, names, rows)
    report.update(section)
    report["baselines"] = {b: results[b] for b in BASELINE_NAMES}
    report[scoring.PER_CASE] = per_case
    if len(names) > 1:
        report["compare"] = {n: results[n] for n in names}
    md = report_markdown(split, shards.path, slices, heading, rows.paper, tta_mode, md_table)
    panels = figure_panels(figure, rows.keys, rows.source if rows.paper else None)
    write_report(out, report, md, panels, names[0])
    if runs and not model:  # the first run was scored: it keeps a record of where
        scores = {n: results[n] if rows.paper else per_target(results[n], rows.keys)
                  for n in [names[0], *BASELINE_NAMES]}  # fmt: skip
        record = evaluation_record(runs[0], out, report, scores, manifest, data_check[0])
        runs[0].write_evaluation(record)
    return report


def data_record(shards, baseline):
    """What the report was scored on (two `ShardFolder`s): the shards' manifest sha256
    and provenance (the phantom version of a named test set), and where the baselines
    were fitted."""
    record = {"data_manifest_sha256": shards.sha256}
    if shards.manifest.get("provenance"):
        record["provenance"] = shards.manifest["provenance"]
    record["baseline_data"] = os.path.abspath(baseline.path)
    record["baseline_manifest_sha256"] = baseline.sha256
    return record


def evaluation_record(run, out, report, scores, manifest, data_check):
    """What a run keeps of its evaluation (run_folder's evaluation.json, read by the
    model card): the report (relative to the run folder), the shards by name and hash
    and whether they are those it trained on, the split, its cases and slices, the TTA,
    which scored cases were in the run's training split, and per target the model's and
    the baselines' scores."""
    from dygan_tf.run_folder.data_record import recorded_shards

    split = report["split"]
    scored = {c["case_id"] for c in manifest["splits"][split]["cases"]}
    recorded = recorded_shards(run.record_holder())
    trained = None if recorded is None else set(recorded["splits"].get("train", ()))
    keep = ("psnr", "ssim", "psnr_brain")

    def table(per):
        return {t: {m: (s or {}).get(m) for m in keep} for t, s in per.items() if s}

    first = report["model"]
    return {
        "report": os.path.relpath(os.path.join(out, REPORT_JSON), run.path),
        "data": data_check["data"],
        "manifest_sha256": data_check["manifest_sha256"],
        "same_shards": None
        if data_check["recorded"] is None
        else not (data_check.get("other_shards") or data_check["changes"]),
        "changed_data_allowed": bool(data_check["changes"]),
        "split": split,
        "cases": len(scored),
        "slices": report["slices"],
        "tta": report.get("tta", "none"),
        "training_cases_scored": None if trained is None else sorted(scored & trained),
        "epochs_finished": len(run.read_history()),
        "per_target": table(scores[first]),
        "baselines": {b: table(scores[b]) for b in BASELINE_NAMES},
    }


def load_predictors(runs, model, data_dir, run_flags, tta_mode):
    """(predictors, the first config or None, the shard folder): the SavedModel's first,
    then each run's; the shard folder `data_dir`, else the first run's."""
    from dygan_tf.inference.predictor import load_predictor

    if not runs and not model:
        raise ValueError("evaluate_report needs run folders or a SavedModel. Received none")
    if model and not data_dir:
        raise UserError(f"{model}: a SavedModel needs a shard folder to score on")
    predictors = [load_predictor(model, tta_mode)] if model else []
    for run, flag in zip(runs, run_flags):
        with for_flag(flag):
            predictors.append(load_predictor(run, tta_mode, check_shards=False))
    data_dir = data_dir or next((p.data_dir for p in predictors if p.data_dir), None)
    if data_dir is None:
        raise UserError(f"{runs[0]}: the run does not record its data folder; pass one")
    return predictors, next((p.config for p in predictors if p.config), None), data_dir


def check_data(runs, shards, allow=False):
    """Each run's `data_record.check` of the shards scored (a pix2pix3 run: its first
    member's, which records the data); `ChangedData` unless they are those it trained
    on or `allow`."""
    from dygan_tf.run_folder import data_record

    return [data_record.check(run.record_holder(), shards, allow) for run in runs]


def rows_of(config):
    """The `ReportRows` of a run's config (None: the paper's T2 run)."""
    inputs = config.model.inputs if config else "single"
    source = config.train.source if config else "t2"
    targets = config.train.targets if config else targets_for(source)
    table = conditions.row_table(inputs, source, targets)
    paper = inputs == "single" and source != conditions.SOURCE_ANY
    return ReportRows(inputs, source, targets, table, [r.key for r in table], paper)


def results_section(results, names, rows):
    """(results keyed as the report keys them, the report's results section, the
    markdown heading, the markdown table): the paper's Table 2 keyed by target as it
    always was; otherwise per row, with its per-target means (and a single-source run's
    source x target grid)."""
    first = names[0]
    if rows.paper:
        source = rows.source
        results = {
            n: {t: r.get(f"{source}->{t}") for t in rows.targets} for n, r in results.items()
        }
        section = {"per_target": results[first]}
        return results, section, f"source {source.upper()}", table(results, names, rows.targets)
    keys = rows.keys
    results = {n: {k: r.get(k) for k in keys} for n, r in results.items()}
    section = {
        "inputs": rows.inputs,
        "rows": keys,
        "per_row": results[first],
        "per_target": per_target(results[first], keys),
    }
    heading = "multi-source" if rows.inputs == "multi" else f"{len(keys)} tasks, any source"
    md_table = row_table_md(results, names, conditions.display_order(keys))
    if rows.inputs == "single":
        md_table += "\n" + f"{first}, source x target:\n\n" + task_grid_md(results[first])
    return results, section, heading, md_table


def report_markdown(split, data_dir, slices, heading, paper, tta_mode, md_table):
    """report.md: what was scored, how, and the table."""
    return (
        f"# {split} split of {data_dir}: {slices} slices, {heading}\n\n"
        "PSNR (dB) / SSIM on images mapped to [0, 1]"
        + ("" if paper else "; a baseline of several sources uses its best single one")
        + ("" if tta_mode == "none" else f"; models: {tta.describe(tta_mode)} ({tta_mode} TTA)")
        + "\n\n"
        + md_table
    )


def write_report(out, report, md, panels, title):
    """Writes report.json, report.md and figure.png into `out` and prints the markdown."""
    os.makedirs(out, exist_ok=True)
    write_json_atomic(os.path.join(out, REPORT_JSON), report)
    write_text_atomic(os.path.join(out, REPORT_MD), md)
    save_figure(os.path.join(out, FIGURE), panels, title)
    print(md + f"\nwrote {os.path.join(out, REPORT_JSON)}, {REPORT_MD}, {FIGURE}")
