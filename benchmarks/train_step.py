"""Times one DyGAN train step (the 3 tasks of one slice) and counts parameters.

`python -m benchmarks.train_step [--preset paper] [--steps 5] [--out F.json]`. The
step runs through the model's own compiled train function, as `fit` does.
"""

import json
import time

import numpy as np

from dygan_tf.cli import ArgumentParser, run_main, write_json_atomic


def time_train_step(preset="paper", steps=5, warmup=2, mixed_precision="none", seed=0):
    """Seconds per train step (median of `steps`), after `warmup` steps incl. tracing."""
    import keras
    import tensorflow as tf

    from dygan_tf.builders import build_dygan
    from dygan_tf.config import get_preset
    from dygan_tf.tasks import task_code

    previous_policy = keras.config.dtype_policy()
    if mixed_precision != "none":
        keras.config.set_dtype_policy(f"mixed_{mixed_precision}")
    try:
        keras.utils.set_random_seed(seed)
        config = get_preset(preset)
        gan = build_dygan(config)
        size = config.model.image_size
        rng = np.random.RandomState(seed)
        targets = config.train.targets
        image = np.repeat(rng.uniform(-1, 1, (1, size, size, 1)), len(targets), 0).astype("float32")
        target = rng.uniform(-1, 1, (len(targets), size, size, 1)).astype("float32")
        task = np.stack([task_code(config.train.source, t) for t in targets])
        data = tf.data.Dataset.from_tensors((image, target, task)).repeat()
        iterator = iter(data)
        gan.make_train_function()
        train_function = gan.train_function
        t0 = time.perf_counter()
        for _ in range(warmup):
            logs = train_function(iterator)
        first = time.perf_counter() - t0
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            logs = train_function(iterator)
            float(logs["g_loss"])  # wait for the step to finish
            times.append(time.perf_counter() - t0)
        return {
            "preset": preset,
            "mixed_precision": mixed_precision,
            "images_per_step": len(targets),
            "image_size": size,
            "generator_params": int(gan.generator.count_params()),
            "discriminator_params": int(gan.discriminator.count_params()),
            "warmup_seconds_incl_tracing": round(first, 2),
            "step_seconds_median": round(float(np.median(times)), 4),
            "step_seconds_all": [round(t, 4) for t in times],
            "losses_finite": bool(np.isfinite([float(v) for v in logs.values()]).all()),
        }
    finally:
        keras.config.set_dtype_policy(previous_policy)


def main(argv=None):
    parser = ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__)
    parser.add_argument("--preset", default="paper", choices=("paper", "demo", "tiny"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--mixed-precision", default="none", choices=("none", "float16", "bfloat16"))
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    result = time_train_step(args.preset, args.steps, mixed_precision=args.mixed_precision)
    print(json.dumps(result, indent=2))
    if args.out:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    run_main(main)
