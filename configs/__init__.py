"""The shipped trainer configs. Installed as the package data ``ijepa.configs`` (see pyproject.toml),
so ``ijepa train --config NAME`` finds them from any folder."""
