import keras
import numpy as np
import pytest

from dygan_tf.config.tasks import task_code
from dygan_tf.layers.dyconv import DyConv2D
from dygan_tf.models.discriminator import build_discriminator
from dygan_tf.models.generator import build_generator

TASKS = np.stack([task_code("t2", t) for t in ("flair", "t1", "t1ce")])


def _images(size, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, (3, size, size, 1)).astype("float32")


def _dyconv_names(model):
    return {layer.name for layer in model.layers if isinstance(layer, DyConv2D)}


@pytest.mark.parametrize("dyconv", ["none", "down", "up", "both"])
def test_generator_placements(dyconv):
    gen = build_generator(image_size=32, base_filters=4, depth=3, dyconv=dyconv)
    out = gen({"image": _images(32), "task": TASKS}).numpy()
    assert gen.output_shape == (None, 32, 32, 1) and out.shape == (3, 32, 32, 1)
    assert np.isfinite(out).all() and out.min() >= -1 and out.max() <= 1
    names = _dyconv_names(gen)
    has_down = any(n.startswith(("down", "bottleneck")) for n in names)
    has_up = any(n.startswith(("up", "output")) for n in names)
    assert (has_down, has_up) == {
        "none": (False, False),
        "down": (True, False),
        "up": (False, True),
        "both": (True, True),
    }[dyconv]
    # Only a dynamic generator sees the task.
    same = gen({"image": np.repeat(_images(32)[:1], 3, 0), "task": TASKS}).numpy()
    assert (np.abs(same[0] - same[1]).max() > 0) == (dyconv != "none")


def test_generator_label_at_input_is_static_and_task_dependent():
    gen = build_generator(image_size=32, base_filters=4, depth=3, dyconv="none", label_mode="input")
    assert not _dyconv_names(gen)
    same = gen({"image": np.repeat(_images(32)[:1], 3, 0), "task": TASKS}).numpy()
    assert np.abs(same[0] - same[1]).max() > 0
    with pytest.raises(ValueError, match="dyconv"):
        build_generator(image_size=32, base_filters=4, depth=3, dyconv="up", label_mode="input")


def test_paper_generator_layout():
    gen = build_generator()
    assert gen.get_layer("down0_1_conv").filters == 64
    assert gen.get_layer("bottleneck_2_conv").filters == 1024
    assert isinstance(gen.get_layer("up3_1_conv"), DyConv2D)
    assert gen.get_layer("up3_1_conv").filters == 512
    assert gen.get_layer("up0_2_conv").num_experts == 3
    assert not isinstance(gen.get_layer("down3_2_conv"), DyConv2D)


@pytest.mark.parametrize("kind", ["multiscale", "patch"])
@pytest.mark.parametrize("dyconv", [True, False])
def test_discriminator_kinds(kind, dyconv):
    disc = build_discriminator(image_size=64, kind=kind, base_filters=4, dyconv=dyconv)
    out = disc({"image": _images(64), "target": _images(64, 1), "task": TASKS}).numpy()
    assert disc.output_shape == (None, 8, 8, 1) and out.shape == (3, 8, 8, 1)
    assert np.isfinite(out).all()
    assert bool(_dyconv_names(disc)) == dyconv


def test_paper_multiscale_discriminator_layout():
    disc = build_discriminator()
    assert disc.get_layer("trunk3_conv").filters == 256
    assert disc.get_layer("scale1_out_conv").filters == 512
    assert disc.get_layer("scale2_out_conv").filters == 1024
    assert disc.get_layer("scale3_out_conv").filters == 1024
    assert disc.get_layer("scales").output.shape == (None, 32, 32, 2560)
    assert disc.output_shape == (None, 32, 32, 1)


def test_multiscale_needs_room_for_its_coarsest_branch():
    with pytest.raises(ValueError, match="image_size=32"):
        build_discriminator(image_size=32, kind="multiscale", base_filters=4)


def test_patch_discriminator_receptive_field_is_70():
    disc = build_discriminator(image_size=256, kind="patch", base_filters=4, dyconv=False)
    field, jump = 1, 1
    for layer in disc.layers:
        if isinstance(layer, keras.layers.Conv2D):
            field += (layer.kernel_size[0] - 1) * jump
            jump *= layer.strides[0]
    assert field == 70


@pytest.mark.parametrize("which", ["generator", "discriminator"])
def test_keras_file_round_trip(which, tmp_path):
    if which == "generator":
        model = build_generator(image_size=32, base_filters=4, depth=3)
        inputs = {"image": _images(32), "task": TASKS}
    else:
        model = build_discriminator(image_size=64, base_filters=4)
        inputs = {"image": _images(64), "target": _images(64, 1), "task": TASKS}
    path = tmp_path / f"{which}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(inputs).numpy(), model(inputs).numpy(), rtol=1e-5, atol=1e-6)
    clone = keras.Model.from_config(model.get_config())
    assert clone.count_params() == model.count_params()


@pytest.mark.parametrize(
    "kwargs", [dict(image_size=36), dict(dyconv="sideways"), dict(label_mode="map")]
)
def test_bad_generator_arguments(kwargs):
    with pytest.raises(ValueError, match="Received"):
        build_generator(**(dict(image_size=32, base_filters=4, depth=3) | kwargs))
