"""What `python -m dygan_tf.translate` does (`translate_input`): one file or case folder
(`translation.run_plan`), or a whole BraTS root at once: every case that misses a
modality, one progress bar, a per-case summary; a failing case is one line and the
others go on. While a case is synthesised, the next one's volumes are read in a
background thread (`ReadAhead`).
"""

import concurrent.futures
import os
import sys

from dygan_tf.config.tasks import check_modality
from dygan_tf.inference.batch_choice import BatchChoice, parse_batch_slices
from dygan_tf.inference.model_card import data_source_line
from dygan_tf.inference.translation import (
    Plan,
    case_modalities,
    check_naming,
    check_outputs,
    is_inside,
    load_input,
    parse_targets,
    plan_folder,
    plan_input,
    read_input,
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

    `targets` is a list or comma-separated text ("flair,t1"); `batch_slices` a positive
    number or "auto" (`batch_choice.BatchChoice`: timed on the first case, one line
    says what it chose). `flags` names the command's flag of each parameter
    (`for_flag_of`) for its errors. Returns False if a case failed or a target was
    refused, else True.
    """
    from dygan_tf.inference.predictor import load_predictor
    from dygan_tf.run_folder.data_record import ChangedData

    if source is not None:
        with for_flag_of(flags, "source"):
            source = check_modality(source, "source modality")
    with for_flag_of(flags, "batch_slices"):
        batch_slices = BatchChoice(parse_batch_slices(batch_slices), verbose)
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
    read_ahead=True,
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
    `load_model()` is called once, on first need. `batch_slices`: an int, "auto" or a
    `BatchChoice` (auto chooses on the first case synthesised). With `read_ahead`, the
    next case's volumes are read while a case is synthesised (`ReadAhead`); what is
    printed, and in what order, is the same either way.
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

    if not isinstance(batch_slices, BatchChoice):
        batch_slices = BatchChoice(batch_slices, verbose)

    def plan_of(case, quiet=False):
        return Plan(*plan_folder(case["folder"], source, targets, quiet), naming=naming)

    def to_read(case):
        """The files the case's `run_plan` will read (none if it is skipped or fails to
        plan: then it says so itself, in its turn)."""
        if case is None:
            return []
        try:
            plan = plan_of(case, quiet=True)
        except UserError:
            return []
        if skip_reason(plan, out_dir, overwrite):
            return []
        multi = model and model[0].inputs == "multi"  # unknown before the first case
        return list(plan.inputs.values()) if multi else [plan.inputs[plan.source]]

    def one_case(case, following):
        """The case's summary row; while it is synthesised, `following`'s volumes are
        read ahead."""
        row = {"case": case["case_id"], "source": "", "written": [], "status": "", "why": ""}
        try:
            plan = plan_of(case)
            row["source"] = plan.spell([plan.source])  # as the case's files name it
            out_paths = plan.out_paths(out_dir)
            skipped = skip_reason(plan, out_dir, overwrite)
            if skipped:
                row.update(status="skipped", why=skipped)
            else:
                check_outputs(out_paths.values(), plan.inputs.values(), overwrite=True)
                ahead.start(to_read(following), keep=plan.inputs.values())
                outcome = run_plan(
                    plan, out_dir, load_once, batch_slices, False, allow_untrained, ahead.read
                )
                row.update(_outcome_fields(plan, outcome))
        except _ModelError as e:
            raise UserError(str(e)) from None
        except UserError as e:
            row.update(status="failed", why=str(e))
            print(f"failed: {case['case_id']}: {e}", file=sys.stderr, flush=True)
        return row

    rows = []
    bar = Progress(len(cases), unit="case", enabled=verbose)
    with ReadAhead(enabled=read_ahead) as ahead:
        for index, case in enumerate(cases):
            rows.append(one_case(case, cases[index + 1] if index + 1 < len(cases) else None))
            bar.add(1)
    bar.close()
    return rows


def _outcome_fields(plan, outcome):
    """A written case's status, outputs and why: "written", "untrained" (some target
    written by a task the model never learned) or "refused" (some target refused)."""
    fields = {"status": "written", "written": [plan.spell([t]) for t in sorted(outcome.written)]}
    if outcome.untrained:
        fields["status"] = "untrained"
        fields["why"] = "; ".join(
            f"{t} untrained (record: {os.path.basename(p)})" for t, p in outcome.untrained.items()
        )
    if outcome.refused:
        fields["status"] = "refused"
        fields["why"] = "; ".join(f"{plan.spell([t])}: {why}" for t, why in outcome.refused.items())
    return fields


def skip_reason(plan, out_dir, overwrite):
    """Why a root's case is skipped ("nothing missing", "outputs exist"), or None."""
    if not plan.targets:
        return "nothing missing"
    if not overwrite and all(os.path.exists(p) for p in plan.out_paths(out_dir).values()):
        return "outputs exist"
    return None


class ReadAhead:
    """Reads input volumes in one background thread while the caller works: `start(paths)`
    begins reading them (`translation.load_input`), `read(path)` is `read_input(path)`
    from what was read ahead. Nothing is printed in the thread: a volume's `note:` line
    and its error come out of `read`, in the caller's order, as if it read the file then.
    A file changed since it was read ahead (size, time, inode) is read again. (The
    read silences nibabel's warnings with Python's process-wide `catch_warnings`, so
    a warning of the main thread during a read may be silenced too: never a line
    more.) Not
    `enabled`: `start` does nothing and `read` reads the file then. A context manager:
    leaving it drops what was not read and ends the thread."""

    def __init__(self, enabled=True):
        self._pool = None
        if enabled:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, "read-ahead")
        self._pending = {}  # path -> (stamp, future)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self, paths, keep=()):
        """Reads `paths` ahead; what was read ahead for any path not in `paths` or `keep`
        (a case skipped or failed before its read) is dropped."""
        if self._pool is None:
            return
        wanted = set(paths) | set(keep)
        for path in [p for p in self._pending if p not in wanted]:
            self._pending.pop(path)[1].cancel()
        for path in paths:
            if path not in self._pending:
                self._pending[path] = (_stamp(path), self._pool.submit(load_input, path))

    def read(self, path):
        return read_input(path, self._load)

    def _load(self, path):
        stamp, future = self._pending.pop(path, (None, None))
        if future is None or stamp is None or stamp != _stamp(path):
            return load_input(path)
        return future.result()  # its UserError, raised here as a read now would raise it

    def close(self):
        """Drops what was not read and waits for the thread to end."""
        for _, future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _stamp(path):
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns, info.st_ino


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
