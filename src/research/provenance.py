"""One set of provenance keys for every fitted model's ``provenance_``.

Every estimator class records what made its numbers: :func:`provenance` gives the keys
:data:`PROVENANCE_KEYS` (``package``, ``version``, ``model``, ``seed``, ``settings``,
``sampler``, ``sampler_backend``), then the model's own facts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROVENANCE_KEYS", "provenance"]

#: the keys every ``provenance_`` has (None where they do not apply)
PROVENANCE_KEYS = ("package", "version", "model", "seed", "settings", "sampler", "sampler_backend")


def provenance(model: str, *, seed: int | None = None, settings: dict | None = None, sampler=None,
               idata=None, **facts: Any) -> dict:
    """The provenance of a fit of ``model``.

    ``sampler`` is the :class:`research.bayes.SamplerSettings` of a Bayesian fit (its seed
    is the fit's seed when ``seed`` is not given); ``idata`` its posterior, whose
    ``sampler_backend`` attribute says which sampler ran.
    """
    from research import __version__

    if seed is None and sampler is not None:
        seed = sampler.seed
    return {
        "package": "course-research",
        "version": __version__,
        "model": model,
        "seed": seed,
        "settings": dict(settings or {}),
        "sampler": None if sampler is None else dict(sampler.__dict__),
        "sampler_backend": None if idata is None else idata.attrs.get("sampler_backend"),
        **facts,
    }
