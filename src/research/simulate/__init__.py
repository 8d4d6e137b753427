"""Synthetic cohorts with known ground truth (demo, tests, parameter recovery)."""
