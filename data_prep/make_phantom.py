"""`python -m data_prep.make_phantom` in a checkout: the installed command `dygan-make-phantom`
(`dygan_tf.make_phantom`, whose docstring has the usage)."""

from dygan_tf import make_phantom


def main(argv=None):
    return make_phantom.main(argv)


if __name__ == "__main__":
    make_phantom.cli()
