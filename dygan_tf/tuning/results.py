"""The λ search's results from a KerasTuner oracle: results.json, results.md (the layout
of the paper's Table 3: rows = λ, columns = target PSNR / SSIM) and lambda_plot.png.
"""

import math
import os

from dygan_tf.config.tasks import PAPER_TABLE3, PAPER_TARGETS
from dygan_tf.tuning.hypermodel import HP_NAME, OBJECTIVE
from dygan_tf.utils import backend
from dygan_tf.utils.atomic import atomic_path, write_json_atomic, write_text_atomic
from dygan_tf.utils.markdown import table as markdown_table

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PLOT = "lambda_plot.png"


def _last(trial, name):
    if not trial.metrics.exists(name):
        return None
    value = trial.metrics.get_last_value(name)
    return float(value) if value is not None and math.isfinite(value) else None


def collect(oracle, targets):
    """One entry per trial, sorted by λ: status, per-target PSNR/SSIM, mean PSNR/SSIM."""
    trials = []
    for trial in oracle.trials.values():
        if HP_NAME not in trial.hyperparameters.values:
            continue
        entry = {
            "trial_id": trial.trial_id,
            "lambda": float(trial.hyperparameters.get(HP_NAME)),
            "status": str(trial.status),
        }
        if entry["status"] == "COMPLETED" and _last(trial, OBJECTIVE) is not None:
            entry["per_target"] = {
                t: {"psnr": _last(trial, f"val_psnr_{t}"), "ssim": _last(trial, f"val_ssim_{t}")}
                for t in targets
            }
            entry["mean_psnr"] = _last(trial, OBJECTIVE)
            entry["mean_ssim"] = _last(trial, "val_ssim_mean")
        else:
            entry.update(per_target=None, mean_psnr=None, mean_ssim=None)
            if trial.message:
                entry["message"] = trial.message.strip().splitlines()[-1]
        trials.append(entry)
    return sorted(trials, key=lambda e: (e["lambda"], e["trial_id"]))


def best_lambda(trials):
    scored = [t for t in trials if t["mean_psnr"] is not None]
    return max(scored, key=lambda t: t["mean_psnr"])["lambda"] if scored else None


def table(trials, targets, best):
    """Markdown rows = λ, columns = PSNR (dB) / SSIM per target and the mean PSNR."""
    rows = []
    for t in trials:
        mark = t["lambda"] == best
        label = f"**{t['lambda']:g}** (best)" if mark else f"{t['lambda']:g}"
        if t["per_target"] is None:
            cells = [t["status"].lower()] * len(targets) + ["–"]
        else:
            cells = [
                f"{t['per_target'][x]['psnr']:.2f} / {t['per_target'][x]['ssim']:.4f}"
                for x in targets
            ] + [f"{t['mean_psnr']:.2f}"]
            if mark:
                cells = [f"**{c}**" for c in cells]
        rows.append([label, *cells])
    return markdown_table(["λ", *(t.upper() for t in targets), "mean PSNR"], rows)


def paper_table():
    rows = []
    for lam, row in PAPER_TABLE3.items():
        cells = [f"{v:.2f}" for v in row]
        if lam == 100:
            rows.append([f"**{lam}** (best)", *(f"**{c}**" for c in cells)])
        else:
            rows.append([lam, *cells])
    return markdown_table(["λ", *(t.upper() for t in PAPER_TARGETS)], rows)


def markdown(results):
    src, targets = results["source"], results["targets"]
    cases = results["validation_cases"]
    text = (
        f"# λ search: {src.upper()} → {', '.join(t.upper() for t in targets)}\n\n"
        f"Validation PSNR (dB) / SSIM on images mapped to [0, 1], after "
        f"{results['epochs']} epoch(s) of preset `{results['preset']}`, on "
        f"{len(cases)} case(s) held out of the training split ({', '.join(cases)}). "
        f"Objective: mean PSNR over the targets (maximised); oracle "
        f"`{results['oracle']}`.\n\n" + table(results["trials"], targets, results["best_lambda"])
    )
    best = results["best_lambda"]
    text += f"\nBest λ: {best:g}\n" if best is not None else "\nNo trial finished.\n"
    if src == "t2":
        text += (
            "\nThe paper's Table 3 (BraTS19 test split, PSNR dB), for comparison:\n\n"
            + paper_table()
        )
    return text


def save_plot(path, results):
    """PSNR and SSIM against λ (log axis), one line per target; best λ marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in results["trials"] if t["per_target"] is not None]
    lams = [t["lambda"] for t in done]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for target in results["targets"]:
            ax.plot(
                lams, [t["per_target"][target][metric] for t in done], "o-", label=target.upper()
            )
        if metric == "psnr":
            ax.plot(lams, [t["mean_psnr"] for t in done], "k--", label="mean")
        if results["best_lambda"] is not None:
            ax.axvline(
                results["best_lambda"],
                color="grey",
                linestyle=":",
                label=f"best λ = {results['best_lambda']:g}",
            )
        ax.set_xscale("log")
        ax.set_xlabel("λ (L1 weight)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"validation {results['source'].upper()} → targets vs λ", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_results(out, oracle, settings):
    """Writes results.json, results.md and the plot into `out`; returns the results."""
    trials = collect(oracle, settings["targets"])

    results = {
        "best_lambda": best_lambda(trials),
        **settings,
        "backend": backend.name(),  # the Keras backend the trials trained on
        "objective": OBJECTIVE,
        "trials": trials,
    }
    write_json_atomic(os.path.join(out, RESULTS_JSON), results)
    write_text_atomic(os.path.join(out, RESULTS_MD), markdown(results))
    save_plot(os.path.join(out, PLOT), results)
    return results
