"""The model card of an export: what a model was trained on, how well it did, and what
it is for, from what its run folder knows. Written into metadata.json ("model_card")
and as README.md beside every SavedModel (MONAI bundles ship the same fields).

    card = model_card(config, "runs/demo")   # a dict
    text = card_markdown(card)               # the export's README.md
    line = data_source_line(card)            # translate's first line
"""

import os

from dygan_tf.utils import markdown
from dygan_tf.utils.errors import UserError

INTENDED_USE = (
    "Research on MR sequence synthesis: filling in missing sequences of brain MR exams "
    "(T1, T1CE, T2, FLAIR) for method development, benchmarking and data-completion "
    "studies such as BraSyn's, on data like the training data."
)
LIMITATIONS = (
    "Research use only; not for diagnosis, treatment or any clinical decision. A "
    "synthesised sequence can look plausible and be wrong, in tumours above all; it has "
    "been scored only on the data named here. Other scanners, field strengths, "
    "pathologies or preprocessing than the training data's are untested."
)
LICENSE = (
    "The code: Apache-2.0. The weights come from the training data named here and follow "
    "its terms (BraTS data: the challenge's data use agreement)."
)


def _name(path):
    """A folder's own name: the card names data relative to where it lives, never by an
    absolute path of the machine that wrote it."""
    return os.path.basename(os.path.normpath(path)) if path else None


def _data_source(run_dir):
    """The shards the run trained on, as run.json records them (the manifest's sha256,
    each split's cases, the validation cases held out of training) and, where they are
    still the same, what their manifest adds (None: unknown)."""
    from dygan_tf.data.manifest import split_case_ids
    from dygan_tf.data.shard_folder import ShardFolder
    from dygan_tf.run_folder import files as run_files

    data_dir = run_files.data_dir_of(run_dir) if run_dir else None
    if data_dir is None:
        return None
    info = run_files.read_info(run_dir)
    recorded = info.get(run_files.SHARDS_RECORD)
    source = {"shards": _name(data_dir)}
    try:
        shards = ShardFolder.open(data_dir)  # its manifest read once
        manifest = shards.manifest
        same = recorded is None or recorded["manifest_sha256"] == shards.sha256
    except UserError:  # moved or deleted since training: what run.json holds is known
        manifest, same = None, False
    if manifest is not None and same:
        split = manifest.get("split", {})
        source.update(
            source_root=_name(manifest.get("source_root")),
            layout=manifest.get("layout", "brats2019"),
            image_size=manifest.get("image_size"),
            split={
                "rule": split.get("rule"),
                **{k: split[k] for k in ("seed", "train_fraction") if k in split},
            },
        )
        if "file" in split:
            source["split"]["file"] = _name(split["file"])
    splits = recorded["splits"] if recorded else None
    if splits is None and manifest is not None and same:  # an earlier release's run.json
        splits = split_case_ids(manifest)
    if splits is None:
        return source
    validation = [c for c in info.get("validation_cases", []) if c in splits.get("train", ())]
    source.setdefault("split", {}).update(
        train_cases=len(splits.get("train", ())) - len(validation),
        validation_cases=len(validation),
        test_cases=len(splits.get("test", ())),
    )
    if recorded:
        source["manifest_sha256"] = recorded["manifest_sha256"]
        source.setdefault("image_size", recorded.get("image_size"))
    return source


def _evaluation(run_dir):
    """The run's own record of its latest evaluation (run_folder's evaluation.json,
    which `evaluate --run` writes wherever its report goes), or None."""
    from dygan_tf.run_folder import files as run_files

    if not run_dir or not os.path.isdir(run_dir):
        return None
    return run_files.read_evaluation(run_dir)


def _commit(run_dir):
    """The training code's commit as run.json records it ("not a git checkout" where it
    ran from none); where run.json predates the record, the exporting code's."""
    from dygan_tf.run_folder import files as run_files
    from dygan_tf.utils.git import commit_line, git_commit_of

    if run_dir and os.path.isfile(run_files.path(run_dir, run_files.RUN_INFO)):
        info = run_files.read_info(run_dir)
        if "commit" in info:
            return commit_line(info["commit"], info.get("commit_dirty"))
    commit, dirty = git_commit_of()
    return commit_line(commit, dirty) + " (of the export; the run recorded none)"


def _backend(run_dir):
    """The Keras backend the run began on: run.json records it; in a folder of an
    earlier release, TensorFlow checkpoints tell a TensorFlow run and .npz ones a JAX
    or PyTorch run (the only ones that wrote them then)."""
    from dygan_tf.run_folder import checkpoints
    from dygan_tf.run_folder import files as run_files

    if not run_dir or not os.path.isdir(run_dir):
        return None
    if os.path.isfile(run_files.path(run_dir, run_files.RUN_INFO)):
        recorded = run_files.read_info(run_dir).get("backend")
        if recorded:
            return recorded
    found = [
        p
        for kind in (run_files.LAST, run_files.BEST)
        for p in checkpoints.checkpoints_in(run_files.checkpoint_dir(run_dir, kind)).values()
    ]
    if not found:
        return None
    return "tensorflow" if any(map(checkpoints.is_tensorflow, found)) else "jax or torch"


def _inputs(config):
    """What the generator reads, in words."""
    from dygan_tf.config.conditions import SOURCE_ANY

    k = config.model.context
    planes = f", each slice with its {k} axial neighbour(s) a side (context {k})" if k else ""
    if config.model.inputs == "multi":
        return "every present sequence at once (multi-source)" + planes
    if config.train.source == SOURCE_ANY:
        return "one sequence, any of the four (source any)" + planes
    return f"one {config.train.source.upper()} sequence (source {config.train.source})" + planes


def model_card(config, run_dir=None):
    """The card's fields for a model of `config` trained in `run_dir` (None: unknown)."""
    from dygan_tf.run_folder import files as run_files

    history = run_files.read_history(run_dir) if run_dir and os.path.isdir(run_dir) else []
    return {
        "data_source": _data_source(run_dir),
        "input_contract": "one axial slice per row, RAS orientation, 1 mm grid, each volume "
        "scaled by its 99.5th brain percentile to [-1, 1] (see normalization, "
        "orientation, in_plane and inputs in metadata.json)",
        "training": {
            "preset": config.preset,
            "inputs": _inputs(config),
            "source": config.train.source,
            "targets": list(config.train.targets),
            "epochs": config.train.epochs,
            "epochs_finished": len(history),
            "seed": config.train.seed,
            "backend": _backend(run_dir),
            "commit": _commit(run_dir),
        },
        "evaluation": _evaluation(run_dir),
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
        "license": LICENSE,
    }


def _counts(split):
    """ "3 training, 1 validation, 2 test cases" as the run used them."""
    validation = split.get("validation_cases")
    middle = "" if validation is None else f", {validation} validation"
    return f"{split['train_cases']} training{middle}, {split['test_cases']} test cases"


def data_source_line(card):
    """One line: what the model was trained on ("unknown" when the card cannot say)."""
    source = (card or {}).get("data_source")
    if not source:
        return "trained on: unknown data (no model card)"
    split = source.get("split", {})
    if "layout" not in source:
        counts = f" ({_counts(split)})" if "train_cases" in split else ""
        return f"trained on: the shards {source['shards']}{counts}"
    return (
        f"trained on: {source['source_root']} ({source['layout']}, {_counts(split)}, "
        f"{source['image_size']} px); research use only, not for diagnosis"
    )


BASELINE_LABELS = {"copy_source": "copy source", "intensity_lut": "intensity LUT"}


def _score(scores, metric, digits):
    value = (scores or {}).get(metric)
    return "—" if value is None else f"{value:.{digits}f}"


def evaluation_markdown(evaluation, training):
    """The card's evaluation section: where it was scored (shards, split, cases,
    slices, TTA, the report), whether any scored case was a training case, and each
    target's scores beside the two baselines'."""
    from dygan_tf.inference import tta
    from dygan_tf.run_folder import files as run_files

    if not evaluation or not evaluation.get("per_target"):
        return [
            f"No evaluation is recorded in the run folder: it holds no {run_files.EVALUATION} "
            "(`python -m dygan_tf.evaluate --run RUN` writes it, whatever its `--out`)."
        ]
    same = evaluation.get("same_shards")
    shards = f"the shards `{evaluation['data']}`" + (
        " (those it trained on)"
        if same
        else " (**not those it trained on**: scored with `--allow-changed-data`)"
        if same is False
        else " (whether those it trained on is not recorded: a run of an earlier release)"
    )
    augmentation = evaluation.get("tta", "none")
    lines = [
        f"Scored by `dygan_tf.evaluate` on the {evaluation['split']} split of {shards}: "
        f"{evaluation['cases']} cases, {evaluation['slices']} slices, "
        + (
            "no test-time augmentation"
            if augmentation == "none"
            else f"{tta.describe(augmentation)} ({augmentation} TTA)"
        )
        + f"; report `{evaluation['report']}` (relative to the run folder)."
    ]
    overlap = evaluation.get("training_cases_scored")
    if overlap:
        lines += [
            "",
            f"**{len(overlap)} of the {evaluation['cases']} scored cases were in this run's "
            f"training split** ({', '.join(overlap)}): these scores are not held-out scores.",
        ]
    elif overlap is None:
        lines += ["", "Whether any scored case was a training case is not recorded."]
    finished = evaluation.get("epochs_finished")
    if finished is not None and finished != training["epochs_finished"]:
        lines += [
            "",
            f"Scored after epoch {finished}; the run has {training['epochs_finished']} "
            "epochs now: evaluate it again.",
        ]
    baselines = evaluation.get("baselines", {})
    lines += [
        "",
        "PSNR dB / SSIM on [0, 1], beside the two baselines (copy source: the source "
        "slice itself; intensity LUT: source intensity -> mean target intensity on the "
        "training split):",
        "",
    ]
    rows = []
    for target, scores in evaluation["per_target"].items():
        cells = [target, _score(scores, "psnr", 2), _score(scores, "ssim", 4)]
        for b in BASELINE_LABELS:
            other = baselines.get(b, {}).get(target)
            cells += [_score(other, "psnr", 2), _score(other, "ssim", 4)]
        rows.append(cells)
    header = ("target", "PSNR", "SSIM", "copy source PSNR", "SSIM", "intensity LUT PSNR", "SSIM")
    return lines + markdown.table_lines(header, rows)


def card_markdown(card, name="DyGAN generator"):
    """The export's README.md."""
    training, evaluation = card["training"], card["evaluation"]
    lines = [
        f"# Model card: {name}",
        "",
        "**Research use only, not for diagnosis.**",
        "",
        "## Intended use",
        "",
        card["intended_use"],
        "",
        "## Training data",
        "",
        data_source_line(card).removeprefix("trained on: "),
        "",
        "## Training",
        "",
        f"- preset `{training['preset']}`; input: "
        f"{training.get('inputs') or 'source ' + training['source']}; targets "
        f"{', '.join(training['targets'])}; {training['epochs_finished']} of "
        f"{training['epochs']} epochs; seed {training['seed']}",
        f"- Keras backend: {training['backend'] or 'unknown'}; code commit: "
        f"{training['commit'] or 'unknown'}",
        "- the full configuration: `config` in metadata.json",
        "",
        "## Input contract",
        "",
        card["input_contract"] + ".",
        "",
        "## Evaluation",
        "",
        *evaluation_markdown(evaluation, training),
    ]
    lines += ["", "## Limitations", "", card["limitations"], "", "## License", "", card["license"]]
    return "\n".join(lines) + "\n"
