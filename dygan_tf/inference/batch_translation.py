"""What `python -m dygan_tf.translate` does (`translate_input`): one file or case folder
(`translation.run_plan`), or a whole BraTS root at once: every case that misses a
modality, one progress bar, a per-case summary; a failing case is one line and the
others go on.
"""

import os
import sys

from dygan_tf.config.tasks import check_modality
from dygan_tf.inference.model_card import data_source_line
from dygan_tf.inference.translation import (
    Plan,
    case_modalities,
    check_naming,
    check_outputs,
    is_inside,
    parse_targets,
    plan_folder,
    plan_input,
    run_plan,
)
from dygan_tf.utils.errors import UserError, for_flag_of
from dygan_tf.utils.progress import Progress


def translate_input(
    model,
    input_path,
    out_dir,
    source=None,
    targets=None,
    naming="dygan",
    overwrite=False,
    batch_slices=4,
    verbose=True,
    allow_untrained=False,
    tta_mode="none",
    allow_changed_data=False,
    flags=None,
):
    """Translates a NIfTI file, a case folder or a root of case folders (`is_root`) with
    the model at `model` (loaded on first need by `load_predictor`, after the input is
    checked; its training data printed first unless not `verbose`). A root ends with
    `summary_table`; a quiet single input still prints where its outputs went.

    `targets` is a list or comma-separated text ("flair,t1"). `flags` names the
    command's flag of each parameter (`for_flag_of`) for its errors. Returns False if a
    case failed or a target was refused, else True.
    """
    from dygan_tf.inference.predictor import load_predictor
    from dygan_tf.run_folder.data_record import ChangedData

    if source is not None:
        with for_flag_of(flags, "source"):
            source = check_modality(source, "source modality")
    if batch_slices < 1:
        with for_flag_of(flags, "batch_slices"):
            raise UserError(f"expected a positive number of slices, found {batch_slices}")
    if isinstance(targets, str):
        with for_flag_of(flags, "targets"):
            targets = parse_targets(targets)
    with for_flag_of(flags, "out_dir"):
        check_naming(input_path, out_dir, naming)

    def load_model():
        try:
            with for_flag_of(flags, "model"):
                predictor = load_predictor(model, tta_mode, allow_changed_data)
        except ChangedData as e:
            allow = (flags or {}).get("allow_changed_data", "allow_changed_data")
            raise type(e)(f"{e}; {allow} translates with it anyway") from None
        if verbose:  # what the model was trained on comes first
            print(f"{predictor.path}: {data_source_line(predictor.model_card)}", flush=True)
        return predictor

    if is_root(input_path):  # a folder of cases: every case that misses a modality
        with for_flag_of(flags, "input_path"):
            rows = translate_root(
                input_path, out_dir, load_model, source, targets, naming, overwrite,
                batch_slices, verbose, allow_untrained,
            )  # fmt: skip
        print(summary_table(rows))
        return not any(r["status"] in ("failed", "refused") for r in rows)
    with for_flag_of(flags, "input_path"):
        plan = plan_input(input_path, source, targets, naming)
    with for_flag_of(flags, "out_dir"):
        check_outputs(plan.out_paths(out_dir).values(), plan.inputs.values(), overwrite)
    outcome = run_plan(plan, out_dir, load_model, batch_slices, verbose, allow_untrained)
    if not verbose and outcome.written:  # quiet, but never silent about where results went
        print(f"wrote {', '.join(outcome.written.values())}")
    return not outcome.refused


def is_root(path):
    """Whether `path` is a folder of case folders (not itself a case folder)."""
    if not os.path.isdir(path) or case_modalities(path)[1]:
        return False
    return any(
        os.path.isdir(os.path.join(path, name)) and not name.startswith(".")
        for name in os.listdir(path)
    )


class _ModelError(UserError):
    """A model that cannot be loaded: it fails the whole folder, not one case."""


def translate_root(
    root,
    out_dir,
    load_model,
    source=None,
    targets=None,
    naming="dygan",
    overwrite=False,
    batch_slices=4,
    verbose=True,
    allow_untrained=False,
):
    """Completes every case of a BraTS root (any layout, `dygan_tf.data.cases`) that
    misses a modality; the outputs of all cases go into `out_dir`.

    A case whose outputs all exist is skipped (`overwrite` redoes it), so a rerun retries
    only what failed. A case that fails is one `failed:` line on stderr and the others go
    on. A target the model was not trained for is refused (`translation.run_plan`):
    nothing written for it, the case's other targets still written; `allow_untrained`
    writes it anyway, marked. Returns `[{"case", "source", "written", "status", "why"}]`,
    one per case, status "written", "skipped", "untrained" (written, some of it by a task
    the model never learned), "refused" (some target refused) or "failed";
    `load_model()` is called once, on first need.
    """
    from dygan_tf.data.cases import discover_cases, layout_of

    # An output folder inside the root (a rerun's) is not a case.
    cases = [c for c in discover_cases(root) if not is_inside(c["folder"], out_dir)]
    layout_of(cases)  # one release per root
    model = []

    def load_once():
        if not model:
            try:
                model.append(load_model())
            except UserError as e:  # the model, not a case: stops every case
                raise _ModelError(str(e)) from None
        return model[0]

    rows = []
    bar = Progress(len(cases), unit="case", enabled=verbose)
    for case in cases:
        row = {"case": case["case_id"], "source": "", "written": [], "status": "", "why": ""}
        try:
            plan = Plan(*plan_folder(case["folder"], source, targets), naming=naming)
            row["source"] = plan.spell([plan.source])  # as the case's files name it
            out_paths = plan.out_paths(out_dir)
            if not plan.targets:
                row.update(status="skipped", why="nothing missing")
            elif not overwrite and all(os.path.exists(p) for p in out_paths.values()):
                row.update(status="skipped", why="outputs exist")
            else:
                check_outputs(out_paths.values(), plan.inputs.values(), overwrite=True)
                outcome = run_plan(plan, out_dir, load_once, batch_slices, False, allow_untrained)
                row.update(
                    status="written", written=[plan.spell([t]) for t in sorted(outcome.written)]
                )
                if outcome.untrained:
                    row.update(
                        status="untrained",
                        why="; ".join(
                            f"{t} untrained (record: {os.path.basename(p)})"
                            for t, p in outcome.untrained.items()
                        ),
                    )
                if outcome.refused:
                    row.update(
                        status="refused",
                        why="; ".join(
                            f"{plan.spell([t])}: {why}" for t, why in outcome.refused.items()
                        ),
                    )
        except _ModelError as e:
            raise UserError(str(e)) from None
        except UserError as e:
            row.update(status="failed", why=str(e))
            print(f"failed: {case['case_id']}: {e}", file=sys.stderr, flush=True)
        rows.append(row)
        bar.add(1)
    bar.close()
    return rows


# Always counted in the summary's last line; the others where any case has them.
STATUSES = ("written", "skipped", "failed")
MARKED = ("refused", "untrained")


def summary_table(rows):
    """The per-case summary of `translate_root`, as plain text: what each case wrote and
    why anything was refused, failed or written by a task the model never learned."""
    width = max([4] + [len(r["case"]) for r in rows])
    lines = [f"{'case':{width}}  {'source':6}  {'status':9}  written / why"]
    for r in rows:
        detail = [", ".join(r["written"])] if r["written"] else []
        detail += [r["why"]] if r["why"] else []
        lines.append(f"{r['case']:{width}}  {r['source']:6}  {r['status']:9}  {'; '.join(detail)}")
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES + MARKED}
    shown = [f"{n} {s}" for s, n in counts.items() if n or s in STATUSES]
    lines.append(", ".join(shown) + f" of {len(rows)} cases")
    return "\n".join(lines)
