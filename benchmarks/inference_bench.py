"""Inference speed: a whole volume into three targets, and the served SavedModel's latency.

One 240x240x155 volume into three targets (slices/s), and the served
SavedModel's latency against the in-process Keras generator at batch 3; both again for
an export with `--tta flip` (the mirrored mean, `dygan_tf.inference.tta`: about twice the work).

    python -m benchmarks.inference_bench --out FILE.json [--run RUN_DIR] [--preset demo]

Without --run the generator has the preset's size and random weights (speed does not
depend on the weights).
"""

import os
import tempfile
import time

import numpy as np

from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import ArgumentParser, run_main
from dygan_tf.utils.errors import UserError

VOLUME_SHAPE = (240, 240, 155)


def phantom_volume(shape=VOLUME_SHAPE, seed=0):
    """An int16 head-like ellipsoid with texture and a zero background, BraTS-shaped."""
    rng = np.random.default_rng(seed)
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    centre = [n / 2 for n in shape]
    radii = (0.38 * shape[0], 0.45 * shape[1], 0.42 * shape[2])
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    texture = 600 + 200 * np.sin(grid[0] / 7.0) * np.cos(grid[1] / 9.0) + rng.normal(0, 25, shape)
    return np.where(r2 < 1, texture, 0).astype(np.int16)


def _median_seconds(call, repeats):
    call()  # tracing and first-call allocation are not latency
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(preset="demo", run_dir=None, shape=VOLUME_SHAPE, batch_slices=4, repeats=20, work_dir=None):
    """Runs both measurements; returns a dict of the numbers."""
    import keras
    import tensorflow as tf

    from dygan_tf.config.run_config import get_preset
    from dygan_tf.config.tasks import task_code
    from dygan_tf.inference import savedmodel
    from dygan_tf.inference.predictor import load_predictor
    from dygan_tf.inference.translation import synthesize_case
    from dygan_tf.models.builders import build_networks
    from dygan_tf.run_folder import files as run_files

    if run_dir is None:
        keras.utils.set_random_seed(0)
        config = get_preset(preset)
        generator, _ = build_networks(config.model)
    else:
        config, generator = run_files.load_run(run_dir)
    size = savedmodel.image_size(generator)
    targets = ("flair", "t1", "t1ce")
    volume = phantom_volume(shape)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    result = {
        "preset": config.preset,
        "image_size": size,
        "volume_shape": list(shape),
        "targets": list(targets),
        "batch_slices": batch_slices,
        "threads": os.cpu_count(),
    }
    brain = int(sum((volume[:, :, k] != 0).any() for k in range(shape[2])))

    def volume_speed(served):
        synthesize_case({"t2": volume[:, :, :8]}, affine, targets, served, "t2", batch_slices)
        start = time.perf_counter()
        synthesize_case({"t2": volume}, affine, targets, served, "t2", batch_slices)
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "slices": shape[2],
            "brain_slices": brain,
            "slices_per_s": shape[2] / seconds,
            "brain_slices_per_s": brain / seconds,
            "images_per_s": brain * len(targets) / seconds,
        }

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        saved = savedmodel.export_generator(generator, os.path.join(tmp, "dygan", "1"))
        flipped = savedmodel.export_generator(
            generator, os.path.join(tmp, "tta", "1"), None, "flip"
        )
        result["volume"] = volume_speed(load_predictor(os.path.dirname(saved)))
        result["volume_tta_flip"] = volume_speed(load_predictor(os.path.dirname(flipped)))
        result["volume_tta_flip"]["ratio_seconds_vs_plain"] = (
            result["volume_tta_flip"]["seconds"] / result["volume"]["seconds"]
        )

        rng = np.random.default_rng(0)
        image = tf.constant(rng.uniform(-1, 1, (3, size, size, 1)).astype("float32"))
        task = tf.constant(np.stack([task_code("t2", t) for t in targets]))
        signature = tf.saved_model.load(saved).signatures[savedmodel.SIGNATURE]
        signature_tta = tf.saved_model.load(flipped).signatures[savedmodel.SIGNATURE]
        compiled = tf.function(lambda i, t: generator({"image": i, "task": t}, training=False))
        latency = {
            "savedmodel_signature_s": _median_seconds(
                lambda: signature(image=image, task=task), repeats
            ),
            "keras_eager_call_s": _median_seconds(
                lambda: generator({"image": image, "task": task}, training=False), repeats
            ),
            "keras_tf_function_s": _median_seconds(lambda: compiled(image, task), repeats),
            "savedmodel_tta_flip_s": _median_seconds(
                lambda: signature_tta(image=image, task=task), repeats
            ),
        }
        latency["ratio_tta_flip_vs_savedmodel"] = (
            latency["savedmodel_tta_flip_s"] / latency["savedmodel_signature_s"]
        )
        latency["ratio_savedmodel_vs_keras_eager"] = (
            latency["savedmodel_signature_s"] / latency["keras_eager_call_s"]
        )
        latency["ratio_savedmodel_vs_keras_tf_function"] = (
            latency["savedmodel_signature_s"] / latency["keras_tf_function_s"]
        )
        result["latency_batch3"] = {"repeats": repeats, **latency}
    return result


def main(argv=None):
    parser = ArgumentParser(prog="inference_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--run", help="training run folder (default: random weights)")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--batch", type=int, default=4, help="slices per model call")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        raise UserError("inference_bench: expected --batch >= 1 and --repeats >= 1")
    try:
        result = run(args.preset, args.run, batch_slices=args.batch, repeats=args.repeats)
    except ValueError as e:
        raise UserError(f"inference_bench: {e}") from None
    write_json_atomic(args.out, result)
    v, lat = result["volume"], result["latency_batch3"]
    print(
        f"volume {tuple(result['volume_shape'])} -> 3 targets: {v['seconds']:.1f}s, "
        f"{v['slices_per_s']:.1f} slices/s ({v['brain_slices_per_s']:.1f} brain slices/s); "
        f"batch 3: SavedModel {lat['savedmodel_signature_s'] * 1e3:.1f} ms, Keras "
        f"{lat['keras_eager_call_s'] * 1e3:.1f} ms eager / "
        f"{lat['keras_tf_function_s'] * 1e3:.1f} ms tf.function "
        f"(ratio {lat['ratio_savedmodel_vs_keras_eager']:.2f} / "
        f"{lat['ratio_savedmodel_vs_keras_tf_function']:.2f}); --tta flip: volume "
        f"{result['volume_tta_flip']['seconds']:.1f}s (ratio "
        f"{result['volume_tta_flip']['ratio_seconds_vs_plain']:.2f}), batch 3 "
        f"{lat['savedmodel_tta_flip_s'] * 1e3:.1f} ms (ratio "
        f"{lat['ratio_tta_flip_vs_savedmodel']:.2f})"
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
