# Reference values for the AFM tests, computed once with lme4::glmer.
#
# Called by make_reference.py with: Rscript make_reference.R <design.csv> <out_prefix>
# design.csv (temporary, never stored) has columns: learner, y, and one column per KC
# parameter: b__<kc> (1 when the step has the KC) and g__<kc> (prior opportunities,
# DataShop's Opportunity - 1). AFM without the slope constraint is then the GLMM
#   y ~ 0 + b__... + g__... + (1 | learner),  family = binomial
# which is DataShop's own R approximation of AFM (help_modelValues.jsp), written with
# an explicit design so that multi-KC steps add up their KCs.
# glmer is fitted twice: nAGQ = 0 (fixed effects and random-effect modes found jointly
# by penalised IRLS given the variance: the exact penalised-likelihood AFM with
# penalty 1 / sigma^2) and nAGQ = 1 (Laplace approximation).
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], check.names = FALSE)
prefix <- args[2]
d$learner <- factor(d$learner)
xcols <- setdiff(names(d), c("learner", "y"))
X <- as.matrix(d[, xcols])
out <- list()
for (nagq in c(0, 1)) {
  t0 <- proc.time()[["elapsed"]]
  m <- glmer(y ~ 0 + X + (1 | learner), data = d, family = binomial, nAGQ = nagq,
             control = glmerControl(optimizer = "bobyqa", calc.derivs = FALSE))
  secs <- proc.time()[["elapsed"]] - t0
  fe <- fixef(m)
  se <- sqrt(diag(as.matrix(vcov(m))))
  names(fe) <- sub("^X", "", names(fe)); names(se) <- names(fe)
  coefs <- data.frame(nagq = nagq, parameter = names(fe), estimate = unname(fe), se = unname(se[names(fe)]))
  write.csv(coefs, sprintf("%s_glmer_nagq%d_fixef.csv", prefix, nagq), row.names = FALSE)
  re <- ranef(m)$learner
  write.csv(data.frame(nagq = nagq, learner = rownames(re), intercept = re[[1]]),
            sprintf("%s_glmer_nagq%d_ranef.csv", prefix, nagq), row.names = FALSE)
  p <- fitted(m)
  stats <- data.frame(nagq = nagq, sigma_learner = as.numeric(attr(VarCorr(m)$learner, "stddev")),
                      loglik_marginal = as.numeric(logLik(m)),
                      loglik_conditional = sum(dbinom(d$y, 1, p, log = TRUE)),
                      n_obs = nrow(d), n_fixef = length(fe), n_dropped = length(xcols) - length(fe),
                      seconds = secs, lme4 = as.character(packageVersion("lme4")),
                      r = R.version.string)
  write.csv(stats, sprintf("%s_glmer_nagq%d_stats.csv", prefix, nagq), row.names = FALSE)
}
