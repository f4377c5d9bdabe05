"""`python -m tests.backend.trajectory DATA RUN WEIGHTS.npz OUT.npz [fit flags...]`:
trains through the command's own training function (`dygan_tf.training.run.train`:
its data stream, devices, method choice and per-epoch callbacks) on this process's
Keras backend, from the generator's and discriminator's weights in WEIGHTS.npz (written
there first if it does not exist), and saves every step's losses and the final weights
to OUT.npz.

The flags are fit's configuration flags (e.g. `--preset tiny --epochs 2`);
`--steps-per-epoch N` caps the epochs; `--cpu-replicas N` splits the CPU as fit's flag
does (TensorFlow's mirrored logical CPUs, JAX's DataParallel over forced host devices);
`--batch-slices N` sets the slices a replica takes a step (not a fit flag).
"""

import argparse
import os
import sys


def main(argv):
    import keras
    import numpy as np

    from dygan_tf.config.flags import add_config_flags, config_from_flags
    from dygan_tf.models import builders
    from dygan_tf.training import run as training_run

    data, run_dir, weights_file, out = argv[:4]
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--cpu-replicas", type=int, default=1)
    parser.add_argument("--batch-slices", type=int)  # slices per replica and step
    args = parser.parse_args(argv[4:])
    config = config_from_flags(args, "tiny").override(batch_slices=args.batch_slices)

    built = []

    def build_from_weights(config, steps_per_epoch=1, lambda_l1=None):
        gan = builders.build_dygan(config, steps_per_epoch, lambda_l1)
        built.append(gan)
        weights = gan.generator.weights + gan.discriminator.weights
        if not os.path.exists(weights_file):
            np.savez(weights_file, *[keras.ops.convert_to_numpy(w) for w in weights])
        with np.load(weights_file) as saved:
            for i, weight in enumerate(weights):
                weight.assign(saved[f"arr_{i}"])
        return gan

    steps = []  # (epoch-local step, running means of the epoch so far)

    class Losses(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append((batch, [float(logs[k]) for k in ("g_loss", "d_loss", "g_l1_loss")]))

    callbacks = training_run.epoch_callbacks
    training_run.build_dygan = build_from_weights
    training_run.epoch_callbacks = lambda *a, **k: callbacks(*a, **k) + [Losses()]
    strategy = None
    if args.cpu_replicas > 1:  # as fit --cpu-replicas: mirrored CPUs or JAX DataParallel
        if keras.backend.backend() == "tensorflow":
            from dygan_tf.training.distribute import make_strategy

            strategy = make_strategy("auto", args.cpu_replicas)
        else:
            from dygan_tf.training.backends import make_devices

            strategy = make_devices(keras.backend.backend(), "auto", args.cpu_replicas)
    training_run.train(config, data, run_dir, args.steps_per_epoch, strategy=strategy, verbose=0)
    per_step, previous = [], None
    for batch, means in steps:  # Keras logs each epoch's running mean: undo it
        means = np.array(means)
        per_step.append(means * (batch + 1) - (previous * batch if batch else 0))
        previous = means
    gan = built[-1]
    weights = gan.generator.weights + gan.discriminator.weights
    final = [keras.ops.convert_to_numpy(w) for w in weights]
    np.savez(out, losses=np.array(per_step), **{f"w_{i}": w for i, w in enumerate(final)})


if __name__ == "__main__":
    main(sys.argv[1:])
