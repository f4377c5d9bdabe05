"""`KERAS_BACKEND=jax|torch python -m tests.backend.gradients IN.npz OUT.npz [--no-tensorflow]`.

Builds the networks of the config in IN.npz on JAX or PyTorch, loads the weights
TensorFlow used, and writes the losses and both networks' gradients of the same batch
(the backend step's own `jax_gradients` / `torch_gradients`) to OUT.npz. With
--no-tensorflow, importing TensorFlow fails first, as on a machine where it is not
installed, and the run checks it stayed out.
"""

import json
import sys


def main(argv):
    source, out = argv[0], argv[1]
    if "--no-tensorflow" in argv:
        sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
    import keras
    import numpy as np

    import dygan_tf  # noqa: F401
    from dygan_tf.config.run_config import RunConfig
    from dygan_tf.models import steps
    from dygan_tf.models.builders import build_dygan

    backend = keras.backend.backend()
    assert backend in ("jax", "torch"), backend
    data = np.load(source)
    config = RunConfig.from_dict(json.loads(str(data["config"])))
    gan = build_dygan(config)
    gan.generator.set_weights([data[f"g_weight_{i}"] for i in range(int(data["g_count"]))])
    gan.discriminator.set_weights([data[f"d_weight_{i}"] for i in range(int(data["d_count"]))])
    batch = (data["image"], data["target"], data["task"])
    if backend == "jax":
        import jax

        state = (
            [v.value for v in gan.trainable_variables],
            [v.value for v in gan.non_trainable_variables],
            [v.value for v in gan.optimizer.variables],
        )
        losses, g_grads, d_grads, _ = jax.jit(
            lambda tv, ntv, ov, b: steps.jax_gradients(gan, tv, ntv, ov, b)
        )(*state, batch)
    else:
        losses, g_grads, d_grads = steps.torch_gradients(gan, batch)
    losses = {k: keras.ops.convert_to_numpy(v) for k, v in losses.items()}
    g_grads = [keras.ops.convert_to_numpy(g) for g in g_grads]
    d_grads = [keras.ops.convert_to_numpy(g) for g in d_grads]
    result = {f"loss_{k}": np.asarray(v) for k, v in losses.items()}
    result.update({f"g_grad_{i}": np.asarray(g) for i, g in enumerate(g_grads)})
    result.update({f"d_grad_{i}": np.asarray(g) for i, g in enumerate(d_grads)})
    result["tensorflow_loaded"] = np.asarray(
        "tensorflow" in sys.modules and bool(sys.modules["tensorflow"])
    )
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1:])
