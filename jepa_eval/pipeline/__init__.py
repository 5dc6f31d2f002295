"""The wiring: backbone -> features -> protocol -> result records, for one run, a transfer, a suite or a training run."""
