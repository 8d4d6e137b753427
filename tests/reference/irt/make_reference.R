# Reference values for tests/test_irt.py and tests/test_classical.py, computed ONCE with R.
#
# Data: Homeostasis Concept Inventory (HCI), 651 students x 20 dichotomous items
# (McFarland et al. 2017; ShinyItemAnalysis, GPL-3), read in place from ../shared/data.
# Only derived estimates are written here, never the responses.
#
# Run from the project root:  Rscript tests/reference/irt/make_reference.R
# R packages: eRm (Rasch by CML, item fit), lme4 (Rasch by MML: glmer with item fixed
# effects and a normal learner random effect, adaptive Gauss-Hermite quadrature), psych
# (Cronbach's alpha, Feldt interval, alpha if item deleted, r.drop).
suppressPackageStartupMessages({library(eRm); library(lme4); library(psych); library(jsonlite)})
out <- "tests/reference/irt"
hci <- read.csv("../shared/data/homeostasis_concept_inventory_hci/HCI.csv", check.names = FALSE)
X <- as.matrix(hci[, paste("Item", 1:20)])
items <- colnames(X)

# eRm: conditional ML; difficulties (beta) sum to zero
rm <- RM(X, sum0 = TRUE)
beta <- -rm$betapar               # eRm stores easiness (eta = -beta)
se_beta <- rm$se.beta
pp <- person.parameter(rm)
fit <- itemfit(pp)
erm <- data.frame(item_id = items, difficulty = unname(beta), se = unname(se_beta),
                  outfit_mnsq = unname(fit$i.outfitMSQ), infit_mnsq = unname(fit$i.infitMSQ),
                  outfit_z = unname(fit$i.outfitZ), infit_z = unname(fit$i.infitZ))
write.csv(erm, file.path(out, "hci_erm_rasch_cml.csv"), row.names = FALSE)

# lme4: marginal ML with a N(0, sigma^2) learner distribution, 25-point adaptive quadrature
long <- data.frame(person = factor(rep(seq_len(nrow(X)), ncol(X))),
                   item = factor(rep(items, each = nrow(X)), levels = items),
                   y = as.vector(X))
g <- glmer(y ~ 0 + item + (1 | person), data = long, family = binomial, nAGQ = 25,
           control = glmerControl(optimizer = "bobyqa"))
fe <- fixef(g)
se_fe <- sqrt(diag(as.matrix(vcov(g))))
lme <- data.frame(item_id = items, difficulty = unname(-fe), se = unname(se_fe))
write.csv(lme, file.path(out, "hci_lme4_rasch_mml.csv"), row.names = FALSE)

# psych: Cronbach's alpha with Feldt's interval, alpha if item deleted, r.drop
a <- psych::alpha(as.data.frame(X), warnings = FALSE)
ci <- psych::alpha.ci(a$total$raw_alpha, n.obs = nrow(X), n.var = ncol(X), p.val = 0.05, digits = 10)
drop <- data.frame(item_id = items, alpha_if_deleted = a$alpha.drop$raw_alpha, r_drop = a$item.stats$r.drop)
write.csv(drop, file.path(out, "hci_psych_alpha_drop.csv"), row.names = FALSE)

summary <- list(
  data = "homeostasis_concept_inventory_hci/HCI.csv (651 x 20)",
  r_version = R.version.string,
  erm_version = as.character(packageVersion("eRm")),
  lme4_version = as.character(packageVersion("lme4")),
  psych_version = as.character(packageVersion("psych")),
  lme4_sigma_person = unname(attr(VarCorr(g)$person, "stddev")),
  lme4_loglik = as.numeric(logLik(g)),
  alpha = a$total$raw_alpha,
  alpha_ci_low = ci$lower.ci,
  alpha_ci_high = ci$upper.ci,
  n = nrow(X)
)
write_json(summary, file.path(out, "hci_summary.json"), auto_unbox = TRUE, digits = 12, pretty = TRUE)
cat("written to", out, "\n")
