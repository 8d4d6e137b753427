"""A Bayesian Additive Factors Model in PyMC, with partial pooling of KC intercepts and slopes.

``logit P(success_j) = theta_learner + sum over the step's KCs of (beta_k + gamma_k * T_jk)``

* learners: ``theta ~ N(0, sigma_theta)``, ``sigma_theta ~ HalfNormal(1.5)`` (the
  learner variance is estimated, unlike the fixed N(0, 1) penalty of the PMLE fit);
* KC intercepts are pooled: ``beta_k ~ N(mu_beta, sigma_beta)``;
* KC slopes are pooled on the log scale when ``slopes="nonnegative"`` (default):
  ``log gamma_k ~ N(mu_log_gamma, sigma_log_gamma)``, so every slope is positive and a KC
  without learning gets a slope near 0 with an interval hugging 0; with ``slopes="free"``
  ``gamma_k ~ N(mu_gamma, sigma_gamma)`` and slopes may be negative.

All hierarchies are non-centred. Sampling goes through :func:`research.bayes.sample`
(nutpie when installed) and convergence is checked with
:func:`research.bayes.diagnostics`. :meth:`BayesianAFM.summary` has the columns of
:meth:`research.estimate.afm.AFM.summary` (posterior mean as the estimate, posterior sd
as ``se``, equal-tailed 95% credible intervals) so the two can be swapped in the KC table.
For research use: on large cohorts prefer the penalised maximum-likelihood
:class:`~research.estimate.afm.AFM`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from research.bayes import SamplerSettings, diagnostics, sample, stacked, summarise_draws
from research.errors import ConfigError
from research.estimate.afm import AFM, build_design

__all__ = ["BayesianAFM"]

SLOPES = ("nonnegative", "free")


class BayesianAFM:
    """AFM with partially pooled KC intercepts and slopes, sampled with NUTS.

    Parameters
    ----------
    slopes : {"nonnegative", "free"}
    sampler : research.bayes.SamplerSettings
        The sampler settings (the one way every Bayesian estimator takes them; default
        ``SamplerSettings()``).
    ci_level : float
        Mass of the equal-tailed credible intervals (default 0.95).

    Attributes (after ``fit``)
    --------------------------
    idata_ : arviz.InferenceData
    diagnostics_ : DataFrame from :func:`research.bayes.diagnostics`
    kcs_ : DataFrame — see :meth:`summary`.
    learners_ : DataFrame — learner_id, intercept, intercept_se, intercept_ci_low, intercept_ci_high, n_obs.
    hyper_ : DataFrame — population parameters (sigma_theta, mu/sigma of intercepts and slopes).
    provenance_ : dict
    """

    def __init__(self, *, slopes: str = "nonnegative", sampler: SamplerSettings | None = None, ci_level: float = 0.95):
        if slopes not in SLOPES:
            raise ConfigError(f"slopes={slopes!r} is not known; valid values are {list(SLOPES)}.")
        if not 0 < ci_level < 1:
            raise ConfigError(f"ci_level must lie strictly between 0 and 1, got {ci_level!r}.")
        if sampler is not None and not isinstance(sampler, SamplerSettings):
            raise ConfigError(f"sampler must be a research.bayes.SamplerSettings, got {type(sampler).__name__}")
        self.slopes = slopes
        self.sampler = sampler if sampler is not None else SamplerSettings()
        self.ci_level = float(ci_level)

    def build_model(self, d):
        import pymc as pm
        import pytensor.tensor as pt

        K = len(d.kcs)
        n = len(d.y)
        rank = pd.Series(d.long_obs).groupby(d.long_obs).cumcount().to_numpy()
        m = int(rank.max()) + 1
        kidx = np.full((n, m), K, dtype=np.int64)  # K = padding "no KC"
        T = np.zeros((n, m))
        kidx[d.long_obs, rank] = d.long_kc
        T[d.long_obs, rank] = np.asarray(self._T, dtype=float)
        coords = {"learner": np.asarray(d.learners.astype(str)), "kc": np.asarray(d.kcs.astype(str))}
        with pm.Model(coords=coords) as model:
            sigma_theta = pm.HalfNormal("sigma_theta", 1.5)
            z_theta = pm.Normal("z_theta", 0, 1, dims="learner")
            theta = pm.Deterministic("theta", sigma_theta * z_theta, dims="learner")
            mu_beta = pm.Normal("mu_beta", 0, 1.5)
            sigma_beta = pm.HalfNormal("sigma_beta", 1.5)
            z_beta = pm.Normal("z_beta", 0, 1, dims="kc")
            beta = pm.Deterministic("beta", mu_beta + sigma_beta * z_beta, dims="kc")
            z_gamma = pm.Normal("z_gamma", 0, 1, dims="kc")
            if self.slopes == "nonnegative":
                mu_lg = pm.Normal("mu_log_gamma", -2.0, 1.5)
                sigma_lg = pm.HalfNormal("sigma_log_gamma", 1.5)
                gamma = pm.Deterministic("gamma", pt.exp(mu_lg + sigma_lg * z_gamma), dims="kc")
            else:
                mu_g = pm.Normal("mu_gamma", 0, 0.5)
                sigma_g = pm.HalfNormal("sigma_gamma", 0.5)
                gamma = pm.Deterministic("gamma", mu_g + sigma_g * z_gamma, dims="kc")
            beta_x = pt.concatenate([beta, pt.zeros(1)])
            gamma_x = pt.concatenate([gamma, pt.zeros(1)])
            eta = theta[d.lid] + pt.sum(beta_x[kidx] + gamma_x[kidx] * T, axis=1)
            pm.Bernoulli("y", logit_p=eta, observed=d.y.astype("int64"))
        return model

    def fit(self, steps: pd.DataFrame, *, kc_model: str | None = None, learner: str = "learner_id", kc: str = "kc",
            opportunity: str = "opportunity", success: str = "success", step_row: str = "step_row",
            item: str | None = "item_id", model_column: str = "kc_model") -> "BayesianAFM":
        """Sample the posterior for one KC model of a student-step KC frame."""
        helper = AFM()
        long = helper._select(steps, kc_model=kc_model, columns=dict(learner=learner, kc=kc, opportunity=opportunity,
                                                                        success=success, step_row=step_row),
                              model_column=model_column)
        self.kc_model_ = helper.kc_model_
        d = build_design(long, learner=learner, kc=kc, opportunity=opportunity, success=success,
                          step_row=step_row, item=item)
        self._T = pd.to_numeric(long[opportunity]).to_numpy(dtype=float) - 1.0
        self.design_ = d
        self.model_ = self.build_model(d)
        self.idata_ = sample(self.model_, self.sampler)
        self.diagnostics_ = diagnostics(self.idata_, var_names=["beta", "gamma", "sigma_theta"])
        self._summarise(d)
        from research.provenance import provenance

        self.provenance_ = provenance("BayesianAFM", sampler=self.sampler, idata=self.idata_,
                                      settings={"slopes": self.slopes, "ci_level": self.ci_level},
                                      kc_model=self.kc_model_, converged=bool(self.diagnostics_.attrs["ok"]))
        return self

    def _summarise(self, d):
        K = len(d.kcs)
        b = stacked(self.idata_, "beta")
        g = stacked(self.idata_, "gamma")
        th = stacked(self.idata_, "theta")
        sb = summarise_draws(b, ci_level=self.ci_level)
        sg = summarise_draws(g, ci_level=self.ci_level)
        st = summarise_draws(th, ci_level=self.ci_level)
        n_obs = np.bincount(d.long_kc, minlength=K)
        pairs = pd.unique(d.long_kc.astype(np.int64) * (len(d.learners) + 1) + d.lid[d.long_obs])
        n_learners = np.bincount(pairs // (len(d.learners) + 1), minlength=K)
        pairs_i = pd.unique(d.long_kc.astype(np.int64) * (int(d.item_codes.max()) + 2) + d.item_codes[d.long_obs])
        n_steps = np.bincount(pairs_i // (int(d.item_codes.max()) + 2), minlength=K)
        self.kcs_ = pd.DataFrame({
            "kc_model": pd.array([self.kc_model_] * K, dtype="string"),
            "kc": pd.array(d.kcs.astype(str), dtype="string"),
            "intercept": sb["estimate"], "intercept_se": sb["se"],
            "intercept_ci_low": sb["ci_low"], "intercept_ci_high": sb["ci_high"],
            "intercept_prob": expit(b).mean(axis=0),
            "slope": sg["estimate"], "slope_se": sg["se"], "slope_ci_low": sg["ci_low"], "slope_ci_high": sg["ci_high"],
            "slope_at_bound": False,
            # the free slope of the PMLE fit has no Bayesian counterpart unless the slopes are free
            **{c: (sg[k] if self.slopes == "free" else np.full(K, np.nan)) for c, k in (
                ("slope_free", "estimate"), ("slope_free_se", "se"), ("slope_free_ci_low", "ci_low"),
                ("slope_free_ci_high", "ci_high"))},
            "slope_free_p": np.full(K, np.nan), "slope_order_se": np.full(K, np.nan),
            "n_obs": n_obs.astype("int64"), "n_learners": n_learners.astype("int64"), "n_steps": n_steps.astype("int64"),
            "method": f"afm_bayes_{self.slopes}",
        })
        self.learners_ = pd.DataFrame({
            "learner_id": pd.array(d.learners.astype(str), dtype="string"),
            "intercept": st["estimate"], "intercept_se": st["se"],
            "intercept_ci_low": st["ci_low"], "intercept_ci_high": st["ci_high"],
            "n_obs": np.bincount(d.lid, minlength=len(d.learners)).astype("int64"),
        })
        post = self.idata_["posterior"]
        hyper = [v for v in ("sigma_theta", "mu_beta", "sigma_beta", "mu_log_gamma", "sigma_log_gamma",
                             "mu_gamma", "sigma_gamma") if v in post]
        rows = []
        for v in hyper:
            s = summarise_draws(stacked(self.idata_, v).reshape(-1, 1), ci_level=self.ci_level)
            rows.append({"parameter": v, **{k: float(val[0]) for k, val in s.items()}, "method": "afm_bayes"})
        self.hyper_ = pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """One row per KC, the columns of :meth:`research.estimate.afm.AFM.summary`:
        posterior mean (intercept, slope), posterior sd (``*_se``), equal-tailed credible
        interval (``*_ci_low``, ``*_ci_high``), intercept_prob (posterior mean of
        logistic(intercept)), counts, and method ``afm_bayes_<slopes>``."""
        if not hasattr(self, "kcs_"):
            raise ConfigError("this BayesianAFM is not fitted yet; call fit(steps) first.")
        return self.kcs_.copy()
