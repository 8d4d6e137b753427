"""Bayesian Rasch and 2PL models in PyMC (hierarchical; abilities non-centred).

Used through ``Rasch(method="bayes")`` and ``TwoPL(method="bayes")`` in
:mod:`research.estimate.irt`; sampled by :func:`research.bayes.sample` (nutpie when it is
installed, PyMC NUTS otherwise) and checked by :func:`research.bayes.diagnostics`, which
warns with a :class:`research.bayes.ConvergenceWarning` when R-hat exceeds 1.01, the bulk or
tail ESS is below 100 per chain, or there is any divergence.

Rasch::

    sigma_theta ~ HalfNormal(2);  theta_i = sigma_theta * z_i,       z_i ~ N(0, 1)
    mu_b ~ N(0, 3); sigma_b ~ HalfNormal(2);  b_j ~ N(mu_b, sigma_b)
    y_ij ~ Bernoulli(logit^-1(theta_i - b_j))

Abilities are non-centred (a learner often answers only a few items, where the centred form
makes a funnel). Item difficulties are centred by default: every item has hundreds of
responses, and there the non-centred form ``b_j = mu_b + sigma_b * u_j`` ties mu_b to all
u_j in a ridge NUTS crosses slowly (800 x 40, 2 x 300 draws: max R-hat 1.13 and min bulk
ESS 13 non-centred, 1.02 and 117 centred). ``build_model(..., centred_items=False)`` gives
the fully non-centred model for small samples.

2PL (ability scale fixed: theta_i ~ N(0, 1))::

    log a_j = mu_a + sigma_a * v_j,  mu_a ~ N(0, 1), sigma_a ~ HalfNormal(0.5)
    y_ij ~ Bernoulli(logit^-1(a_j (theta_i - b_j)))

Both put the population mean ability at 0, like the ML models, so the scales agree.
"""

from __future__ import annotations

import numpy as np

from research import bayes

__all__ = ["fit"]


def build_model(design, *, twopl: bool = False, centred_items: bool = True):
    """The PyMC model for the integer-coded responses of a ``_Design``."""
    import pymc as pm

    coords = {"learner": np.arange(design.n_learners), "item": np.asarray(design.items, dtype=str)}
    rows, cols, y = design.rows, design.cols, design.y.astype(np.int8)
    with pm.Model(coords=coords) as model:
        z = pm.Normal("z", 0.0, 1.0, dims="learner")
        if twopl:
            theta = pm.Deterministic("theta", z, dims="learner")
        else:
            sigma_theta = pm.HalfNormal("sigma_theta", 2.0)
            theta = pm.Deterministic("theta", sigma_theta * z, dims="learner")
        mu_b = pm.Normal("mu_b", 0.0, 3.0)
        sigma_b = pm.HalfNormal("sigma_b", 2.0)
        if centred_items:
            b = pm.Normal("b", mu_b, sigma_b, dims="item")
        else:
            u = pm.Normal("u", 0.0, 1.0, dims="item")
            b = pm.Deterministic("b", mu_b + sigma_b * u, dims="item")
        if twopl:
            mu_a = pm.Normal("mu_a", 0.0, 1.0)
            sigma_a = pm.HalfNormal("sigma_a", 0.5)
            v = pm.Normal("v", 0.0, 1.0, dims="item")
            a = pm.Deterministic("a", pm.math.exp(mu_a + sigma_a * v), dims="item")
            eta = a[cols] * (theta[rows] - b[cols])
        else:
            eta = theta[rows] - b[cols]
        pm.Bernoulli("y", logit_p=eta, observed=y)
    return model


def fit(design, *, twopl: bool, settings=None, ci_level: float = 0.95) -> dict:
    """Sample the model and summarise it in the shape the ML fit returns."""
    model = build_model(design, twopl=twopl)
    idata = bayes.sample(model, settings or bayes.SamplerSettings())
    hyper = ["mu_b", "sigma_b"] + (["mu_a", "sigma_a"] if twopl else ["sigma_theta"])
    diag = bayes.diagnostics(idata, var_names=hyper + ["b"] + (["a"] if twopl else []), warn=True)
    b = bayes.summarise_draws(bayes.stacked(idata, "b"), ci_level=ci_level)
    th = bayes.stacked(idata, "theta")
    res = dict(
        b=b["estimate"], b_se=b["se"], b_lo=b["ci_low"], b_hi=b["ci_high"],
        theta=th.mean(axis=0), theta_se=th.std(axis=0, ddof=1),
        idata=idata, diagnostics=diag, converged=bool(diag.attrs["ok"]), n_iter=0, loglik=np.nan,
    )
    if twopl:
        a = bayes.summarise_draws(bayes.stacked(idata, "a"), ci_level=ci_level)
        res.update(a=a["estimate"], a_se=a["se"], a_lo=a["ci_low"], a_hi=a["ci_high"], sigma=1.0, sigma_se=0.0)
    else:
        s = bayes.summarise_draws(bayes.stacked(idata, "sigma_theta")[:, None], ci_level=ci_level)
        res.update(
            a=np.ones(design.n_items), a_se=np.zeros(design.n_items),
            sigma=float(s["estimate"][0]), sigma_se=float(s["se"][0]),
            sigma_lo=float(s["ci_low"][0]), sigma_hi=float(s["ci_high"][0]),
        )
    return res
