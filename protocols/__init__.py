"""The shipped suite files. Installed as the package data ``jepa_eval.suites`` (see pyproject.toml),
so ``jepa-eval suite NAME`` finds them from any folder; ``jepa-eval suite --list`` lists them."""
