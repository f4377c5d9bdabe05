"""`KERAS_BACKEND=jax python -m tests.backend.jax_predict GENERATOR.keras IN.npz OUT.npy`:
the saved generator's output on IN.npz's `image` and `task`, computed on JAX."""

import sys


def main(argv):
    import keras
    import numpy as np

    from dygan_tf.run_folder.files import load_generator

    assert keras.backend.backend() == "jax", keras.backend.backend()
    generator = load_generator(argv[0])
    data = np.load(argv[1])
    out = generator({"image": data["image"], "task": data["task"]}, training=False)
    np.save(argv[2], keras.ops.convert_to_numpy(out))


if __name__ == "__main__":
    main(sys.argv[1:])
