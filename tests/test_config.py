import json

import pytest

from dygan_tf.config.run_config import PRESETS, RunConfig, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    config = get_preset(name)
    assert RunConfig.from_dict(json.loads(config.to_json())) == config


def test_paper_preset_is_specs_numbers():
    paper = get_preset("paper")
    assert (paper.model.image_size, paper.model.base_filters, paper.model.depth) == (256, 64, 4)
    assert (paper.model.num_experts, paper.model.dyconv, paper.model.discriminator) == (
        3,
        "up",
        "multiscale",
    )
    assert (paper.train.epochs, paper.train.lambda_l1, paper.train.lr, paper.train.lr_decay) == (
        100,
        100.0,
        2e-4,
        0.98,
    )
    assert (paper.train.batch_slices, paper.train.source, paper.train.targets) == (
        1,
        "t2",
        ("flair", "t1", "t1ce"),
    )


def test_override_and_validation():
    config = get_preset("tiny").override(lambda_l1=10.0, dyconv="both", epochs=None)
    assert config.train.lambda_l1 == 10.0 and config.model.dyconv == "both"
    assert config.train.epochs == get_preset("tiny").train.epochs
    with pytest.raises(ValueError, match="Unknown config field"):
        config.override(colour="red")
    with pytest.raises(ValueError, match="targets"):
        config.override(targets=("t2",))
    with pytest.raises(ValueError, match="preset"):
        get_preset("huge")
    assert config.override(ema=0.995, lr_decay=0.9).train.ema == 0.995
    for bad in (dict(ema=1.0), dict(ema=-0.1), dict(lr_decay=0.0), dict(lr_decay=1.5)):
        with pytest.raises(ValueError, match="0 <= ema < 1"):
            config.override(**bad)
