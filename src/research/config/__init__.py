"""Package data: default configuration files (YAML) shipped with course-research."""

__all__ = []
