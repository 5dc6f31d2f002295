"""jepa-eval: evaluation suite for self-supervised image representations.

Data flows one way: checkpoint -> backbone -> features (cached) -> protocol -> result rows -> report.
"""

__version__ = "0.1.0"
