"""The `--run RUN --row ROW [--data DIR]` checks the per-row analyses share."""

import os

from dygan_tf.utils.errors import UserError, for_flag


def open_run_row(run_dir, row, data_dir=None):
    """(Predictor, config, data_dir, conditions.Row) of a run folder and one of the
    rows it was trained for; UserError naming the flag if either is wrong."""
    from dygan_tf.config import conditions
    from dygan_tf.evaluation.scoring import check_shards_fit
    from dygan_tf.inference.predictor import load_predictor
    from dygan_tf.run_folder.folder import RunFolder

    try:
        available, target = conditions.parse_row_key(row)
    except ValueError:
        raise UserError(f"--row: expected a row like 't2->flair', found {row!r}") from None
    try:
        available = conditions.check_condition(available, target)
    except ValueError as e:
        raise UserError(f"--row: {row}: {e}") from None
    row = conditions.row_key(available, target)  # in our spelling, as the run keys it
    the_row = conditions.Row(row, available, target)
    predictor = load_predictor(RunFolder(run_dir), check_shards=False)
    if predictor.trained_rows and row not in predictor.trained_rows:
        raise UserError(
            f"--row: {run_dir} was not trained for {row}; it answers "
            f"{', '.join(sorted(predictor.trained_rows))}"
        )
    data_dir = data_dir or predictor.data_dir
    if data_dir is None:
        raise UserError(f"--data: {run_dir} records no training data; name a shard folder")
    with for_flag("--data"):
        check_shards_fit([predictor], data_dir)
    return predictor, predictor.config, data_dir, the_row


def run_row_main(argv, prog, description, score_run, summary):
    """A per-row analysis's command: `--run --row [--data] [--split] [--out]`; prints
    `summary(result)` of `score_run(run, row, data, split)` and writes the JSON."""
    from dygan_tf.utils.atomic import write_json_atomic
    from dygan_tf.utils.cli import ArgumentParser

    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("--run", required=True, help="training run folder")
    parser.add_argument("--row", required=True, help="e.g. t2->flair or t1+t1ce+t2->flair")
    parser.add_argument("--data", help="TFRecord folder (default: the run's training data)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", help="JSON file for the result")
    args = parser.parse_args(argv)
    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise UserError(f"--out: the folder of {args.out} does not exist")
    result = score_run(args.run, args.row, args.data, args.split)
    print(summary(result))
    if args.out:
        write_json_atomic(args.out, result)
    return 0


def run_as_command(main):
    """Runs a per-row analysis's `main` as `python -m` does: TensorFlow's start-up
    chatter off, a bad input one `error:` line and exit 2."""
    from dygan_tf.utils.cli import run_main

    run_main(main)
