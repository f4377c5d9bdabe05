"""`python -m tuning.search_lambda` in a checkout: the installed command `dygan-search-lambda`
(`dygan_tf.search_lambda`, whose docstring has the usage)."""

from dygan_tf import search_lambda


def main(argv=None):
    return search_lambda.main(argv)


if __name__ == "__main__":
    search_lambda.cli()
