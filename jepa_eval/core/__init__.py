"""Foundations every stage uses: user-facing errors, crash-safe writes, devices."""
