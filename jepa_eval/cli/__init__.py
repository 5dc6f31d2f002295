"""The ``jepa-eval`` command line."""
