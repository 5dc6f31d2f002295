"""``python -m jepa_eval.cli``: the same command line as ``python -m jepa_eval``."""

from jepa_eval.cli.app import main

main()
