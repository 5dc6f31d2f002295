"""``python -m jepa_eval`` (and ``torchrun -m jepa_eval``): the ``jepa-eval`` command line."""

from jepa_eval.cli.app import main

main()
