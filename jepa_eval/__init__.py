"""jepa-eval: evaluation suite for self-supervised image representations.

Data flows one way: checkpoint -> backbone -> features (cached) -> protocol -> result rows -> report.
``jepa_eval.LiveMonitor`` is the collapse monitor for any training loop
(:class:`jepa_eval.pipeline.live.LiveMonitor`); it is imported on first use, so that
``import jepa_eval`` stays free of torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["LiveMonitor", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "LiveMonitor":
        from jepa_eval.pipeline.live import LiveMonitor

        return LiveMonitor
    raise AttributeError(f"module 'jepa_eval' has no attribute {name!r}")
