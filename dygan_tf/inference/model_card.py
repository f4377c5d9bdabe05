"""The model card of an export: what a model was trained on, how well it did, and what
it is for, from what its run folder knows. Written into metadata.json ("model_card")
and as README.md beside every SavedModel (MONAI bundles ship the same fields).

    card = model_card(config, "runs/demo")   # a dict
    text = card_markdown(card)               # the export's README.md
    line = data_source_line(card)            # translate's first line
"""

import os
import subprocess

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


def _commit():
    """The git commit of the code that writes the card, or None outside a checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _data_source(run_dir):
    """The shards the run trained on, from run.json and their manifest (None: unknown)."""
    from dygan_tf.data.manifest import read_manifest
    from dygan_tf.run_folder import files as run_folder

    data_dir = run_folder.data_dir_of(run_dir) if run_dir else None
    if data_dir is None:
        return None
    source = {"shards": data_dir}
    try:
        manifest = read_manifest(data_dir)
    except UserError:  # moved or deleted since training: the path is what is known
        return source
    split = manifest.get("split", {})
    source.update(
        source_root=manifest.get("source_root"),
        layout=manifest.get("layout", "brats2019"),
        image_size=manifest.get("image_size"),
        split={
            "rule": split.get("rule"),
            **{k: split[k] for k in ("seed", "train_fraction", "file") if k in split},
            "train_cases": len(manifest["splits"]["train"]["cases"]),
            "test_cases": len(manifest["splits"]["test"]["cases"]),
        },
    )
    return source


def _evaluation(run_dir):
    """Test-split scores from the run's own evaluation (run_dir/eval/report.json)."""
    import json

    if not run_dir:
        return None
    file = os.path.join(run_dir, "eval", "report.json")
    try:
        with open(file, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    per = report.get("per_target") or {}
    return {
        "report": os.path.abspath(file),
        "split": report.get("split"),
        "slices": report.get("slices"),
        "per_target": {
            t: {m: s.get(m) for m in ("psnr", "ssim", "psnr_brain")}
            for t, s in per.items()
            if isinstance(s, dict)
        },
    }


def _backend(run_dir):
    """The Keras backend the run began on: run.json records it; in a folder of an
    earlier release, TensorFlow checkpoints tell a TensorFlow run and .npz ones a JAX
    or PyTorch run (the only ones that wrote them then)."""
    from dygan_tf.run_folder import checkpoints
    from dygan_tf.run_folder import files as run_folder

    if not run_dir or not os.path.isdir(run_dir):
        return None
    if os.path.isfile(run_folder.path(run_dir, run_folder.RUN_INFO)):
        recorded = run_folder.read_info(run_dir).get("backend")
        if recorded:
            return recorded
    found = [
        p
        for kind in (run_folder.LAST, run_folder.BEST)
        for p in checkpoints.checkpoints_in(run_folder.checkpoint_dir(run_dir, kind)).values()
    ]
    if not found:
        return None
    return "tensorflow" if any(map(checkpoints.is_tensorflow, found)) else "jax or torch"


def model_card(config, run_dir=None):
    """The card's fields for a model of `config` trained in `run_dir` (None: unknown)."""
    from dygan_tf.run_folder import files as run_folder

    history = run_folder.read_history(run_dir) if run_dir and os.path.isdir(run_dir) else []
    return {
        "data_source": _data_source(run_dir),
        "input_contract": "one axial slice per row, RAS orientation, 1 mm grid, each volume "
        "scaled by its 99.5th brain percentile to [-1, 1] (see normalization, "
        "orientation, in_plane and inputs in metadata.json)",
        "training": {
            "preset": config.preset,
            "source": config.train.source,
            "targets": list(config.train.targets),
            "epochs": config.train.epochs,
            "epochs_finished": len(history),
            "seed": config.train.seed,
            "backend": _backend(run_dir),
            "commit": _commit(),
        },
        "evaluation": _evaluation(run_dir),
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
        "license": LICENSE,
    }


def data_source_line(card):
    """One line: what the model was trained on ("unknown" when the card cannot say)."""
    source = (card or {}).get("data_source")
    if not source:
        return "trained on: unknown data (no model card)"
    if "layout" not in source:
        return f"trained on: the shards in {source['shards']}"
    split = source["split"]
    return (
        f"trained on: {source['source_root']} ({source['layout']}, "
        f"{split['train_cases']} training / {split['test_cases']} test cases, "
        f"{source['image_size']} px); research use only, not for diagnosis"
    )


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
        f"- preset `{training['preset']}`, source `{training['source']}`, targets "
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
    ]
    if evaluation and evaluation["per_target"]:
        lines += [
            f"The run's {evaluation['split']} split ({evaluation['slices']} slices), PSNR dB / "
            "SSIM on [0, 1]:",
            "",
            "| target | PSNR | SSIM |",
            "|---|---|---|",
        ]
        for target, scores in evaluation["per_target"].items():
            psnr, ssim = scores.get("psnr"), scores.get("ssim")
            lines.append(
                f"| {target} | {'—' if psnr is None else f'{psnr:.2f}'} | "
                f"{'—' if ssim is None else f'{ssim:.4f}'} |"
            )
    else:
        lines.append("No evaluation was found in the run folder (`dygan_tf.evaluate`).")
    lines += ["", "## Limitations", "", card["limitations"], "", "## License", "", card["license"]]
    return "\n".join(lines) + "\n"
