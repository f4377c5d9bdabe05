"""How big a `benchmarks.run` is: the `Sizes` of each profile (full, quick, gpu, tiny)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every knob that sets how long the run takes."""

    profile: str
    matmul_n: int
    matmul_repeats: int
    dyconv_quick: bool
    dyconv_batches: tuple
    dyconv_shapes: tuple = None  # None: dyconv_bench's paper shapes (halved if quick)
    preset: str = "paper"
    depth: int = None  # None: the preset's U-Net depth; smaller traces faster
    steps: int = 2
    warmup: int = 1
    data_cases: int = 8
    data_image_size: int = 256
    data_elements: int = 300
    data_workers: int = None  # None: every core
    brats_root: str = None  # None: a fresh phantom of data_cases cases
    inference_preset: str = "demo"
    inference_shape: tuple = (240, 240, 155)
    inference_batch: int = 4
    inference_repeats: int = 20


PROFILES = {
    "full": Sizes("full", 2048, 5, False, (3, 12)),
    "quick": Sizes(
        "quick",
        1024,
        3,
        True,
        (3, 12),
        preset="demo",
        steps=3,
        warmup=1,
        data_cases=4,
        data_image_size=64,
        data_elements=100,
        inference_shape=(240, 240, 24),
        inference_repeats=5,
    ),
    # --gpu: the paper's sizes in one short lease (benchmarks/gpu_bench.py).
    "gpu": Sizes("gpu", 8192, 5, False, (3, 12), preset="paper", steps=3, warmup=1),
    "tiny": Sizes(
        "tiny",
        128,
        2,
        True,
        (3,),
        dyconv_shapes=((16, 8),),
        preset="tiny",
        depth=1,
        steps=1,
        warmup=1,
        data_cases=2,
        data_image_size=32,
        data_elements=5,
        data_workers=2,
        inference_preset="tiny",
        inference_shape=(48, 40, 12),
        inference_repeats=2,
    ),
}
