"""`KERAS_BACKEND=jax python -m tests.backend.jax_gradients IN.npz OUT.npz [--no-tensorflow]`.

Builds the networks of the config in IN.npz on JAX, loads the weights TensorFlow used,
and writes the losses and both networks' gradients of the same batch (the JAX step's
own `jax_gradients`) to OUT.npz. With --no-tensorflow, importing TensorFlow fails
first, as on a machine where it is not installed, and the run checks it stayed out.
"""

import json
import sys


def main(argv):
    source, out = argv[0], argv[1]
    if "--no-tensorflow" in argv:
        sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
    import jax
    import keras
    import numpy as np

    import dygan_tf  # noqa: F401
    from dygan_tf.config.run_config import RunConfig
    from dygan_tf.models.backend_steps import jax_gradients
    from dygan_tf.models.builders import build_dygan

    assert keras.backend.backend() == "jax", keras.backend.backend()
    data = np.load(source)
    config = RunConfig.from_dict(json.loads(str(data["config"])))
    gan = build_dygan(config)
    gan.generator.set_weights([data[f"g_weight_{i}"] for i in range(int(data["g_count"]))])
    gan.discriminator.set_weights([data[f"d_weight_{i}"] for i in range(int(data["d_count"]))])
    batch = (data["image"], data["target"], data["task"])
    state = (
        [v.value for v in gan.trainable_variables],
        [v.value for v in gan.non_trainable_variables],
        [v.value for v in gan.optimizer.variables],
    )
    losses, g_grads, d_grads, _ = jax.jit(
        lambda tv, ntv, ov, b: jax_gradients(gan, tv, ntv, ov, b)
    )(*state, batch)
    result = {f"loss_{k}": np.asarray(v) for k, v in losses.items()}
    result.update({f"g_grad_{i}": np.asarray(g) for i, g in enumerate(g_grads)})
    result.update({f"d_grad_{i}": np.asarray(g) for i, g in enumerate(d_grads)})
    result["tensorflow_loaded"] = np.asarray(
        "tensorflow" in sys.modules and bool(sys.modules["tensorflow"])
    )
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1:])
