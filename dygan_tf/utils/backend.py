"""The one place that asks which Keras backend runs, and on what device.

Everything else in the project that behaves differently per backend asks here (as
KerasHub keeps its backend checks in one utility module). Importing this module imports
neither Keras nor a backend library: each function reads what is already loaded, so a
command can still check its flags before TensorFlow starts.
"""

import functools
import os
import sys
import weakref

BACKENDS = ("tensorflow", "jax", "torch")


def name():
    """The Keras backend of this process: Keras's own answer once Keras is loaded, else
    the one it will load (KERAS_BACKEND, default tensorflow)."""
    keras = sys.modules.get("keras")
    if keras is not None:
        try:
            return keras.backend.backend()
        except AttributeError:  # keras still being imported
            pass
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def is_tensorflow():
    return name() == "tensorflow"


def is_jax():
    return name() == "jax"


def is_torch():
    return name() == "torch"


def device_kind():
    """ "gpu" when the backend computes on a GPU by default, else "cpu"."""
    backend = name()
    if backend == "jax":
        import jax

        return "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else "cpu"
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


def library_version():
    """ "<library> <version>" of the backend's numerical library."""
    import importlib.metadata

    library = name()
    module = sys.modules.get(library)
    version = getattr(module, "__version__", None)
    if version:
        return f"{library} {version}"
    try:
        return f"{library} {importlib.metadata.version(library)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{library} unknown"


def gradient_runner(loss, arrays):
    """A zero-argument callable that computes the gradients of `loss(*arrays)` (a scalar
    function written in `keras.ops`) with respect to every array, compiled as the
    backend's train step is (tf.function, jax.jit; PyTorch eager), and returns once they
    are ready. For timing computations the way a train step runs them."""
    backend = name()
    if backend == "jax":
        import jax

        grad = jax.jit(jax.grad(loss, argnums=tuple(range(len(arrays)))))
        return lambda: jax.block_until_ready(grad(*arrays))
    if backend == "torch":
        import numpy as np
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        # Through float32: torch reads no ml_dtypes array (bfloat16); on the device the
        # step runs on, so a timing holds no host-to-device copy.
        tensors = [
            torch.tensor(np.asarray(a, "float32"), device=device)
            .to(getattr(torch, str(a.dtype)))
            .requires_grad_()
            for a in arrays
        ]

        def run():
            grads = torch.autograd.grad(loss(*tensors), tensors)
            if device == "cuda":
                torch.cuda.synchronize()
            return grads

        return run
    import tensorflow as tf

    tensors = [tf.constant(a) for a in arrays]

    @tf.function(input_signature=[tf.TensorSpec([None, *arrays[0].shape[1:]], arrays[0].dtype)])
    def grad(first):
        inputs = [first, *tensors[1:]]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            value = loss(*inputs)
        return tape.gradient(value, inputs)

    return lambda: [g.numpy() for g in grad(tensors[0])]


_INFERENCE = weakref.WeakKeyDictionary()  # one compiled inference function per generator


def _generator_output(generator, image, task):
    return generator({"image": image, "task": task}, training=False)


def inference_function(generator):
    """`generator`'s inference call as `(image, task) -> float32 numpy array`, compiled
    once per generator as the backend compiles (tf.function over any batch; jax.jit with
    the weights passed in, once per batch shape; PyTorch eager): the one way the package
    runs a Keras generator for inference (validation, evaluation, translation)."""
    if generator in _INFERENCE:
        return _INFERENCE[generator]
    import numpy as np

    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        spec = [
            tf.TensorSpec((None, *generator.input[key].shape[1:]), tf.float32)
            for key in ("image", "task")
        ]
        # A partial, not a closure: TensorFlow counts traces per code object, and one
        # trace per loaded generator would read as retracing once a process loads a few.
        call = tf.function(functools.partial(_generator_output, generator), input_signature=spec)
    elif backend == "jax":
        import jax

        stateless = jax.jit(
            lambda weights, image, task: generator.stateless_call(
                *weights, {"image": image, "task": task}, training=False
            )[0]
        )

        def call(image, task):
            weights = (
                [v.value for v in generator.trainable_variables],
                [v.value for v in generator.non_trainable_variables],
            )
            return stateless(weights, np.asarray(image), np.asarray(task))

    else:
        import keras

        def call(image, task):
            output = _generator_output(generator, np.asarray(image), np.asarray(task))
            return keras.ops.convert_to_numpy(output)

    def function(image, task):
        return np.asarray(call(image, task), np.float32)

    _INFERENCE[generator] = function
    return function
