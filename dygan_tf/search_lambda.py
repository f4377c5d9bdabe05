"""Searches the L1 weight λ of DyGAN with KerasTuner (the paper's Table 3).

    dygan-search-lambda --data TFRECORD_DIR --out DIR
        [--values 1,10,20,30,50,100,150,200,250,300] [--oracle grid|bayesian]
        [--max-trials N (bayesian)] [--preset paper|demo|tiny] [--epochs N]
        [fit's overrides but --lambda-l1] [--backend jax|torch] [--steps-per-epoch N]

Each trial trains DyGAN on the training split minus a few held-out validation cases
(recorded in DIR/search.json; the test split is never read) and scores the mean
validation PSNR over the targets. DIR holds the KerasTuner project (trial_*/,
oracle.json), TensorBoard logs (logs/<trial>/), results.json, results.md and
lambda_plot.png. Running the same command again resumes: finished trials are reused,
an interrupted one is trained again from its start.
"""

from dygan_tf.config.flags import add_config_flags, add_run_flags, config_from_flags, positive_int
from dygan_tf.tuning.search import PAPER_VALUES, PROG, parse_values, run_search
from dygan_tf.utils.cli import ArgumentParser, command, keywords_of
from dygan_tf.utils.errors import UserError, for_flag


def parse_args(argv):
    """The search's own flags plus the configuration flags it shares with dygan_tf.fit
    (`dygan_tf.config.flags`; λ comes from --values, so there is no --lambda-l1)."""
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--data", required=True, help="folder of TFRecord shards")
    p.add_argument("--out", required=True, help="search folder (KerasTuner project)")
    p.add_argument("--values", default=PAPER_VALUES, help="comma-separated λ values")
    p.add_argument("--oracle", choices=("grid", "bayesian"), default="grid")
    p.add_argument("--max-trials", type=positive_int, help="trials of --oracle bayesian")
    add_run_flags(p, ("--steps-per-epoch", "--backend"))
    add_config_flags(p, exclude=("--lambda-l1",))
    args = p.parse_args(argv)
    args.values = parse_values(args.values)
    if args.oracle == "grid" and args.max_trials is not None:
        raise UserError("--max-trials: only with --oracle bayesian (grid tries every value)")
    if args.oracle == "bayesian":
        if args.max_trials is None:
            raise UserError("--oracle bayesian: expected --max-trials N")
        if args.max_trials > len(args.values):
            raise UserError(
                f"--max-trials: {args.max_trials} exceeds the {len(args.values)} --values"
            )
    with for_flag(f"{PROG}:"):
        args.config = config_from_flags(args, "paper")
    return args


def main(argv=None):
    results = run_search(**keywords_of(run_search, parse_args(argv)))
    return 0 if results["best_lambda"] is not None else 1


cli = command(main)


if __name__ == "__main__":
    cli()
