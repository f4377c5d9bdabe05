"""`python -m data_prep.build_tfrecords` in a checkout: the installed command
`dygan-build-tfrecords` (`dygan_tf.build_tfrecords`, whose docstring has the usage)."""

from dygan_tf import build_tfrecords


def main(argv=None):
    return build_tfrecords.main(argv)


if __name__ == "__main__":
    build_tfrecords.cli()
