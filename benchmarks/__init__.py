"""Speed benchmarks of a checkout, run from the repository (not installed with the
package): `python -m benchmarks.run` (every figure against its target), the train step
on every backend (`backend_step`), where a step's time goes (`profile_step`), DyConv
(`dyconv_bench`), the data pipeline (`data_bench`), inference (`inference_bench`), the
offline GPU kit (`gpu_kit`); what they share (machine facts, matmul peak, targets, FLOP
count, sizes) is in `common`.
"""
