"""Estimators: classical item statistics, IRT, learning curves and AFM, gains, surveys, equity, engagement."""

__all__ = []
