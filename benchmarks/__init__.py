"""Speed benchmarks of a checkout (`python -m benchmarks.run`, the profile, the DyConv
method measurements); run from the repository, not installed with the package.
`case_gain` and `region_error` are kept here as aliases of the research analyses whose
library is dygan_tf.evaluation.
"""
