"""The KerasTuner HyperModel of the λ search: DyGAN built by the same builder as `fit`,
trained on the training split minus the validation cases, scored by validation PSNR.

The objective is `val_psnr_mean` (mean PSNR over the targets, maximised); the returned
metrics also hold `val_psnr_<target>` and `val_ssim_<target>` for every target.
"""

import math

import keras
import keras_tuner as kt

from dygan_tf.models import builders
from dygan_tf.training import run as training_run
from dygan_tf.training.callbacks import OBJECTIVE, StopOnDivergence, ValidationScores
from dygan_tf.utils.errors import UserError

HP_NAME = "lambda_l1"


def objective():
    return kt.Objective(OBJECTIVE, direction="max")


class LambdaHyperModel(kt.HyperModel):
    """DyGAN with λ (the L1 weight) drawn from `values`; everything else from `config`.

    `validation_cases` are case ids of the training split held out for scoring; the
    test split is never read. `steps_per_epoch` defaults to one pass over the rest.
    """

    def __init__(self, config, data_dir, values, validation_cases, steps_per_epoch=None, **kwargs):
        super().__init__(name="dygan_lambda", **kwargs)
        if not values:
            raise ValueError(f"values must be non-empty. Received: values={values}")
        self.config = config
        self.data_dir = data_dir
        self.values = [float(v) for v in values]
        self.validation_cases = sorted(validation_cases)
        n_train = training_run.count_slices(data_dir, self.validation_cases, keep=False)
        if n_train == 0:
            raise UserError(
                f"{data_dir}: no training slices left after holding "
                f"out {self.validation_cases} for validation"
            )
        self.steps_per_epoch = steps_per_epoch or math.ceil(n_train / config.train.batch_slices)

    def build(self, hp):
        lambda_l1 = hp.Choice(HP_NAME, self.values)
        # Same seed for every λ: the trials differ only in λ, not in initial weights.
        keras.utils.set_random_seed(self.config.train.seed)
        return builders.build_dygan(self.config, self.steps_per_epoch, lambda_l1=lambda_l1)

    def fit(self, hp, model, *args, callbacks=None, verbose=2, **kwargs):
        train = self.config.train
        train_ds = training_run.training_dataset(
            self.data_dir,
            self.config,
            self.validation_cases,
            train.batch_slices,
            self.steps_per_epoch,
        )
        val_ds = training_run.validation_dataset(self.data_dir, self.config, self.validation_cases)
        stop = StopOnDivergence()
        scores = ValidationScores(val_ds, train.targets)
        # First in the list: the tuner's callbacks (TensorBoard, best-epoch weights)
        # then read the validation scores from the same `logs`.
        model.fit(
            train_ds,
            epochs=train.epochs,
            steps_per_epoch=self.steps_per_epoch,
            callbacks=[stop, scores, *(callbacks or [])],
            verbose=verbose,
            shuffle=False,
        )
        if stop.diverged is not None or scores.last is None:
            bad = ", ".join(f"{k}={v}" for k, v in (stop.diverged or (0, {}))[1].items())
            raise kt.errors.FailedTrialError(
                f"λ={hp.get(HP_NAME):g}: training diverged ({bad or 'no finished epoch'})"
            )
        return dict(scores.last)
