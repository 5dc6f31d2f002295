"""``python -m ijepa`` (and ``torchrun -m ijepa``): the ``ijepa`` command line."""

from ijepa.cli import main

main()
