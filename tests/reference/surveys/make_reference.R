# Reference values for tests/test_ordinal.py, computed ONCE with R (Debian r-cran-erm, r-cran-lavaan).
#
# Data: Learning to Learn (Martinkova et al. 2020; ShinyItemAnalysis, GPL-3), 782 students, the
# seven Grade-6 subtest scores (0..8, 0..7, 0..1, 0..4, 0..7, 0..8, 0..6) taken as partial-credit
# items; read in place from ../shared/data. Only derived estimates are written here.
#
# Run from the project root:  Rscript tests/reference/surveys/make_reference.R
#  - eRm::PCM: partial credit model by conditional ML; thresholds() gives the step difficulties
#    (Masters' delta_jh) with standard errors.
#  - lavaan::cfa with ordered indicators (one factor, std.lv = TRUE, WLSMV, delta parametrisation):
#    standardised loadings and thresholds of the latent responses.
suppressPackageStartupMessages({library(eRm); library(lavaan)})
out <- "tests/reference/surveys"
ltl <- read.csv("../shared/data/learning_to_learn_grade6_grade9_prepost/LearningToLearn.csv")
items <- paste0("score_6_subtest", 1:7)
X <- as.matrix(ltl[, items])
storage.mode(X) <- "integer"

pcm <- PCM(X, sum0 = TRUE)
th <- thresholds(pcm)
tt <- th$threshtable[[1]]
rows <- list()
for (j in seq_along(items)) {
  k <- max(X[, j])
  for (s in seq_len(k)) {
    nm <- paste0("thresh beta ", items[j], ".c", s)
    rows[[length(rows) + 1]] <- data.frame(item_id = items[j], step = s,
                                           threshold = unname(th$threshpar[nm]), se = unname(th$se.thresh[nm]))
  }
}
write.csv(do.call(rbind, rows), file.path(out, "ltl6_erm_pcm_thresholds.csv"), row.names = FALSE)

model <- paste("f =~", paste(items, collapse = " + "))
fit <- cfa(model, data = as.data.frame(X), ordered = items, std.lv = TRUE, estimator = "WLSMV")
pe <- parameterEstimates(fit, standardized = TRUE)
lo <- pe[pe$op == "=~", c("rhs", "est", "se")]
names(lo) <- c("item_id", "loading", "se")
write.csv(lo, file.path(out, "ltl6_lavaan_loadings.csv"), row.names = FALSE)
tau <- pe[pe$op == "|", c("lhs", "rhs", "est", "se")]
tau$step <- as.integer(sub("t", "", tau$rhs))
tau <- data.frame(item_id = tau$lhs, step = tau$step, threshold = tau$est, se = tau$se)
write.csv(tau, file.path(out, "ltl6_lavaan_thresholds.csv"), row.names = FALSE)
writeLines(capture.output(sessionInfo()), file.path(out, "sessionInfo.txt"))
