# Reference values for tests/test_surveys.py on our simulated Likert set (sim_likert.csv,
# written by make_survey_data.py; reverse-coded items already turned round).
# Run from the project root: Rscript tests/reference/gains/make_survey_reference.R
suppressPackageStartupMessages({library(psych); library(ordinal)})
out_dir <- "tests/reference/gains"
s <- read.csv(file.path(out_dir, "sim_likert.csv"))
pre <- reshape(s[s$phase == "pre", c("learner_id", "item_id", "score")], idvar = "learner_id",
               timevar = "item_id", direction = "wide")
X <- as.matrix(pre[, -1])
a <- psych::alpha(X, warnings = FALSE)
om <- suppressWarnings(suppressMessages(psych::omega(X, nfactors = 1, plot = FALSE)))
f1 <- psych::fa(X, nfactors = 1, fm = "minres")
s$y <- factor(s$score, ordered = TRUE)
s$post <- as.numeric(s$phase == "post")
s$item <- factor(s$item_id)
m <- ordinal::clm(y ~ post + item, data = s, link = "logit")
co <- summary(m)$coefficients
R <- cor(X)
ref <- data.frame(
  statistic = c("alpha", "alpha_feldt_low", "alpha_feldt_high", "omega_tot_psych_omega", "omega_tot_fa_minres",
                "loading_sum", "clm_post", "clm_post_se", "n_pre"),
  value = c(a$total$raw_alpha, a$feldt$lower.ci$raw_alpha, a$feldt$upper.ci$raw_alpha, om$omega.tot,
            1 - sum(f1$uniquenesses) / sum(R), sum(f1$loadings[, 1]),
            co["post", "Estimate"], co["post", "Std. Error"], nrow(X)))
print(ref)
write.csv(ref, file.path(out_dir, "sim_likert_reference.csv"), row.names = FALSE)
