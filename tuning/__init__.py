"""The λ search command: `python -m tuning.search_lambda` (KerasTuner over the L1 weight);
the library it calls is dygan_tf.tuning.
"""
