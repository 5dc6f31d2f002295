"""The bundled I-JEPA trainer: a typed config (the official YAML schema plus our ``run``
section), the multi-block mask sampler, the encoder/predictor model and the training loop.

Run it with ``ijepa train --config FILE``.
"""
