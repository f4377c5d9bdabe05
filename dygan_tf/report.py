"""The evaluation report (the paper's Table 2): trained generators and two baselines
scored on a split, written as report.json, report.md and figure.png.

`evaluate_report` is what `python -m dygan_tf.evaluate` and `fit --demo` call.
Baselines scored beside every model: copy_source (the source slice itself) and
intensity_lut (per target, source intensity -> mean target intensity on the training
split).
"""

import contextlib
import os

import numpy as np

from dygan_tf import run_folder
from dygan_tf.atomic import atomic_path, write_json_atomic, write_text_atomic
from dygan_tf.errors import UserError, for_flag

REPORT_JSON, REPORT_MD, FIGURE = "report.json", "report.md", "figure.png"
BASELINE_NAMES = {
    "copy_source": "copy source (baseline)",
    "intensity_lut": "intensity LUT (baseline)",
}


def method_name(config, pix2pix3=False):
    """The paper's Table 2 name of a run's method."""
    m = config.model
    if pix2pix3:
        return "3×pix2pix"
    if m.label_mode == "input":
        return "MGAN-style (label at input)"
    if m.dyconv == "none":
        return f"pix2pix generator ({m.discriminator} D)"
    d = "multi-scale D" if m.discriminator == "multiscale" else "PatchGAN D"
    prefix = "Ms_DyGAN" if m.discriminator == "multiscale" else "DyGAN"
    extra = "" if m.dyconv == "up" else f", DyConv {m.dyconv}"
    return f"{prefix} ({d}{extra})"


def load_run_predictor(run_dir):
    """(name, config, predict, data_dir) of a run folder (one model or pix2pix3).

    `predict(image, task, target_names)` returns the synthesised rows as numpy.
    """
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir}: not a folder; expected a training run folder")
    baseline = run_folder.read_baseline(run_dir)
    if baseline is not None:
        config, member_dirs = baseline
        members = {t: run_folder.load_run(folder)[1] for t, folder in member_dirs.items()}
        info_dir = next(iter(member_dirs.values()))
        name = method_name(config, pix2pix3=True)

        def predict(image, task, names):
            out = np.zeros(np.shape(image), np.float32)
            for t, generator in members.items():
                rows = [i for i, n in enumerate(names) if n == t]
                if rows:
                    out[rows] = generator(
                        {"image": image.numpy()[rows], "task": task.numpy()[rows]}
                    ).numpy()
            return out
    else:
        config, generator = run_folder.load_run(run_dir)
        info_dir, name = run_dir, method_name(config)

        def predict(image, task, names):
            return generator({"image": image, "task": task}, training=False).numpy()

    data_dir = run_folder.data_dir_of(info_dir)
    return f"{name} [{os.path.basename(os.path.normpath(run_dir))}]", config, predict, data_dir


def check_savedmodel(path):
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise UserError(f"{path}: no saved_model.pb; expected an exported SavedModel")


def load_savedmodel_predictor(path):
    import tensorflow as tf

    check_savedmodel(path)
    serve = tf.saved_model.load(path).signatures["serving_default"]

    def predict(image, task, names):
        out = serve(image=tf.cast(image, tf.float32), task=tf.cast(task, tf.float32))
        return next(iter(out.values())).numpy()

    return f"SavedModel [{os.path.basename(os.path.normpath(path))}]", predict


def evaluate_split(predictors, data_dir, split, source, targets, figure_cases=4):
    """Scores every predictor and both baselines; returns (results, slices, figure rows).
    A shard that goes bad while it is read is named in one UserError line."""
    import tensorflow as tf

    from dygan_tf import shard_check

    try:
        return _evaluate_split(predictors, data_dir, split, source, targets, figure_cases)
    except tf.errors.DataLossError as e:  # after make_dataset's up-front check passed
        raise shard_check.data_loss_error(data_dir, ["train", split], e) from None


def _evaluate_split(predictors, data_dir, split, source, targets, figure_cases):
    from dygan_tf import evaluation
    from dygan_tf.data import make_dataset

    lut = evaluation.fit_lut(
        make_dataset(data_dir, "train", source, targets, batch_slices=8, return_meta=True), targets
    )
    methods = {
        **{name: p for name, p in predictors},
        "copy_source": lambda image, task, names: image.numpy(),
        "intensity_lut": lambda image, task, names: lut(image.numpy(), names),
    }
    acc = {name: evaluation.Accumulator(targets) for name in methods}
    figure, seen = [], set()
    primary = predictors[0][0]
    for image, target, task, meta in make_dataset(
        data_dir, split, source, targets, batch_slices=1, return_meta=True
    ):
        names = evaluation.target_names(meta)
        for name, predict in methods.items():
            fake = predict(image, task, names)
            acc[name].add(names, evaluation.row_scores(target, fake, meta))
            if name == primary:
                case = meta["case_id"].numpy()[0].decode()
                slice_index = int(meta["slice_index"].numpy()[0])
                if case not in seen and len(figure) < figure_cases and slice_index >= 0:
                    seen.add(case)
                    figure.append(
                        (case, slice_index, image.numpy()[0], names, target.numpy(), fake)
                    )
    results = {name: a.means() for name, a in acc.items()}
    return results, acc["copy_source"].count(), figure


def table(results, model_names, targets):
    """Markdown in the layout of the paper's Table 2: PSNR (dB) / SSIM per target."""
    lines = [
        "| method | " + " | ".join(t.upper() for t in targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for name in list(model_names) + list(BASELINE_NAMES):
        label = BASELINE_NAMES.get(name, name)
        cells = [
            f"{results[name][t]['psnr']:.2f} / {results[name][t]['ssim']:.4f}" for t in targets
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_figure(path, figure, targets, title):
    """Rows = test cases; columns = source, then real and synthesised per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 1 + 2 * len(targets)
    fig, axes = plt.subplots(
        len(figure), cols, figsize=(1.6 * cols, 1.7 * len(figure)), squeeze=False
    )
    for r, (case, slice_index, source, names, real, fake) in enumerate(figure):
        panels = [(source, "source")]
        for t in targets:
            i = names.index(t)
            panels += [(real[i], f"real {t}"), (fake[i], f"synth. {t}")]
        for c, (img, label) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(np.asarray(img)[..., 0], cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=8)
        axes[r, 0].set_ylabel(f"{case}\nslice {slice_index}", fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def evaluate_report(
    runs, out, data_dir=None, split="test", model=None, figure_cases=4, run_flags=None
):
    """Scores run folders (and/or an exported SavedModel) on a split; writes the report.

    Args:
        runs: run folders; the first one's config gives the source and targets, and its
            run.json the data folder when `data_dir` is None.
        out: folder for report.json, report.md and figure.png.
        data_dir: a shard folder (default: the first run's training data).
        split: the manifest split to score ("test").
        model: an exported SavedModel folder, scored first (needs `data_dir`).
        figure_cases: test cases drawn in figure.png.
        run_flags: the command-line flag of each run (for error messages), if any.

    Returns:
        The report dict written to report.json.

    Example:

    >>> evaluate_report(["runs/demo"], "runs/demo/eval")  # doctest: +SKIP
    """
    from dygan_tf.manifest import read_manifest
    from dygan_tf.tasks import targets_for

    if not runs and not model:
        raise ValueError("evaluate_report needs run folders or a SavedModel. Received none")
    run_flags = list(run_flags or [None] * len(runs))
    predictors, config = [], None
    if model:
        if not data_dir:
            raise UserError(f"{model}: a SavedModel needs a shard folder to score on")
        predictors.append(load_savedmodel_predictor(model))
    for run, flag in zip(runs, run_flags):
        with for_flag(flag) if flag else contextlib.nullcontext():
            name, run_config, predict, run_data = load_run_predictor(run)
        predictors.append((name, predict))
        config = config or run_config
        data_dir = data_dir or run_data
    if data_dir is None:
        raise UserError(f"{runs[0]}: the run does not record its data folder; pass one")
    source = config.train.source if config else "t2"
    targets = config.train.targets if config else targets_for(source)
    size = read_manifest(data_dir)["image_size"]
    results, slices, figure = evaluate_split(
        predictors, data_dir, split, source, targets, figure_cases
    )
    names = [n for n, _ in predictors]
    report = {
        "model": names[0],
        "split": split,
        "data": os.path.abspath(data_dir),
        "image_size": size,
        "source": source,
        "slices": slices,
        "per_target": results[names[0]],
        "baselines": {b: results[b] for b in BASELINE_NAMES},
    }
    if len(names) > 1:
        report["compare"] = {n: results[n] for n in names}
    os.makedirs(out, exist_ok=True)
    write_json_atomic(os.path.join(out, REPORT_JSON), report)
    md = (
        f"# {split} split of {data_dir}: {slices} slices, source {source.upper()}\n\n"
        "PSNR (dB) / SSIM on images mapped to [0, 1]\n\n" + table(results, names, targets)
    )
    write_text_atomic(os.path.join(out, REPORT_MD), md)
    save_figure(os.path.join(out, FIGURE), figure, targets, names[0])
    print(md + f"\nwrote {os.path.join(out, REPORT_JSON)}, {REPORT_MD}, {FIGURE}")
    return report
