"""Utilities that know nothing of the rest of the package: atomic file writes, metrics.json curves."""
