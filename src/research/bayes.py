"""Shared plumbing for the Bayesian (PyMC) models: sampling and convergence checks.

Every Bayesian model in :mod:`research.estimate` samples through :func:`sample`, which
uses nutpie when it is installed (it compiles the model once and samples fast) and
PyMC's own NUTS otherwise, and reports convergence through :func:`diagnostics`, which
warns in plain words when R-hat, effective sample size or divergences fail the usual
limits (Vehtari et al. 2021: R-hat below 1.01, bulk and tail ESS of at least 100 per
chain, no divergent transitions).
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover - ArviZ takes seconds to import: only the functions that sample load it
    import arviz as az

__all__ = [
    "ConvergenceWarning", "SamplerSettings", "diagnostics", "nutpie_available", "sample", "stacked",
    "summarise_draws",
]

RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100


class ConvergenceWarning(UserWarning):
    """The sampler's diagnostics fail the usual limits: do not trust the estimates yet."""


def nutpie_available() -> bool:
    return importlib.util.find_spec("nutpie") is not None


@dataclass(frozen=True)
class SamplerSettings:
    draws: int = 1000
    tune: int = 1000
    chains: int = 2
    seed: int | None = 0
    target_accept: float = 0.9
    backend: str = "auto"  # "auto", "nutpie" or "pymc"

    def __post_init__(self):
        from research.errors import ConfigError

        if self.backend not in {"auto", "nutpie", "pymc"}:
            raise ConfigError(f"backend={self.backend!r} is not known; use 'auto', 'nutpie' or 'pymc'")
        if self.backend == "nutpie" and not nutpie_available():
            raise ConfigError("backend='nutpie' was asked for but nutpie is not installed; pip install nutpie")
        for name in ("draws", "tune", "chains"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")


def sample(model, settings: SamplerSettings | None = None, **overrides) -> az.InferenceData:
    """Sample ``model`` (a ``pm.Model``) and return its InferenceData.

    Keyword overrides (``draws=``, ``tune=``, ``chains=``, ``seed=``, ``backend=``,
    ``target_accept=``) replace fields of ``settings``.
    """
    import pymc as pm

    settings = settings or SamplerSettings()
    if overrides:
        settings = SamplerSettings(**{**settings.__dict__, **overrides})
    backend = settings.backend
    if backend == "auto":
        backend = "nutpie" if nutpie_available() else "pymc"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        if backend == "nutpie":
            import nutpie

            compiled = nutpie.compile_pymc_model(model)
            idata = nutpie.sample(
                compiled,
                draws=settings.draws,
                tune=settings.tune,
                chains=settings.chains,
                seed=settings.seed,
                target_accept=settings.target_accept,
                progress_bar=False,
                cores=min(settings.chains, 2),
            )
        else:
            with model:
                idata = pm.sample(
                    draws=settings.draws,
                    tune=settings.tune,
                    chains=settings.chains,
                    cores=1,
                    random_seed=settings.seed,
                    target_accept=settings.target_accept,
                    progressbar=False,
                    compute_convergence_checks=False,
                )
    idata.attrs["sampler_backend"] = backend
    return idata


def divergences(idata: az.InferenceData) -> int:
    stats = idata.get("sample_stats")
    if stats is None:
        return 0
    for name in ("diverging", "divergences"):
        if name in stats:
            return int(np.asarray(stats[name]).sum())
    return 0


def diagnostics(idata: az.InferenceData, var_names: list[str] | None = None, *, warn: bool = True) -> pd.DataFrame:
    """One row per scalar parameter: r_hat, ess_bulk, ess_tail, and an ``ok`` flag.

    The frame's ``attrs`` hold ``divergences``, ``chains``, ``draws`` and ``ok`` (all
    parameters pass and no divergences). With ``warn=True`` a :class:`ConvergenceWarning`
    says which limits failed and what to do.
    """
    posterior = idata["posterior"]
    chains = int(posterior.sizes["chain"])
    draws = int(posterior.sizes["draw"])
    import arviz as az

    summ = az.summary(idata, var_names=var_names, kind="diagnostics")
    out = pd.DataFrame(
        {
            "parameter": summ.index.astype(str),
            "r_hat": summ["r_hat"].to_numpy(dtype=float),
            "ess_bulk": summ["ess_bulk"].to_numpy(dtype=float),
            "ess_tail": summ["ess_tail"].to_numpy(dtype=float),
        }
    )
    ess_min = ESS_PER_CHAIN_MIN * chains
    out["ok"] = (out["r_hat"] <= RHAT_MAX) & (out["ess_bulk"] >= ess_min) & (out["ess_tail"] >= ess_min)
    n_div = divergences(idata)
    out.attrs.update(divergences=n_div, chains=chains, draws=draws, ok=bool(out["ok"].all() and n_div == 0))
    if warn and not out.attrs["ok"]:
        problems = []
        bad_rhat = int((out["r_hat"] > RHAT_MAX).sum())
        if bad_rhat:
            problems.append(f"{bad_rhat} parameter(s) with R-hat above {RHAT_MAX} (worst {out['r_hat'].max():.3f})")
        bad_ess = int(((out["ess_bulk"] < ess_min) | (out["ess_tail"] < ess_min)).sum())
        if bad_ess:
            problems.append(f"{bad_ess} parameter(s) with effective sample size below {ess_min} ({ESS_PER_CHAIN_MIN} per chain)")
        if n_div:
            problems.append(f"{n_div} divergent transition(s)")
        warnings.warn(
            "The sampler did not converge well: " + "; ".join(problems)
            + ". Treat these estimates as provisional: sample longer (more tune and draws), "
            "use more chains, or simplify the model.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return out


def summarise_draws(draws: np.ndarray, *, ci_level: float = 0.95) -> dict[str, np.ndarray]:
    """Mean, sd and equal-tailed ``ci_level`` interval of draws shaped (samples, parameters)."""
    lo, hi = (1 - ci_level) / 2, 1 - (1 - ci_level) / 2
    return {
        "estimate": draws.mean(axis=0),
        "se": draws.std(axis=0, ddof=1),
        "ci_low": np.quantile(draws, lo, axis=0),
        "ci_high": np.quantile(draws, hi, axis=0),
    }


def stacked(idata: az.InferenceData, var: str) -> np.ndarray:
    """Posterior draws of ``var`` with chains and draws stacked first: shape (samples, ...)."""
    arr = np.asarray(idata["posterior"][var])
    return arr.reshape((-1,) + arr.shape[2:])
