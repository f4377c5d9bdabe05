"""The data commands: `python -m data_prep.build_tfrecords` (BraTS volumes to TFRecord
shards) and `python -m data_prep.make_phantom` (a BraTS-layout phantom); the library
they call is dygan_tf.data.
"""
