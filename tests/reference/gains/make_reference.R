# Reference values for tests/test_gains.py, computed once with base R (and lme4).
# Run from the project root:  Rscript tests/reference/gains/make_reference.R
# Reads the public datasets in place (../shared/data); writes only derived numbers.
# "effsize-like formulas": d_z = mean(diff)/sd(diff) with a noncentral-t interval
# (Cumming & Finch 2001), d_av = mean(diff)/((sd_pre+sd_post)/2), Hedges' exact J.
out_dir <- "tests/reference/gains"
data_dir <- "../shared/data"

# ---- HCI pre/post (16 students), max 20
h <- read.csv(file.path(data_dir, "homeostasis_concept_inventory_hci", "HCIprepost.csv"))
pre <- h$score.pre / 20; post <- h$score.post / 20
d <- post - pre; n <- length(d)
tt <- t.test(post, pre, paired = TRUE)
# ranks on raw integer points: proportions carry floating-point noise that R ranks as distinct values
wt <- suppressWarnings(wilcox.test(h$score.post, h$score.pre, paired = TRUE, exact = NULL, correct = TRUE))
dz <- mean(d) / sd(d)
tobs <- dz * sqrt(n)
ncp_lo <- uniroot(function(x) pt(tobs, n - 1, ncp = x) - 0.975, c(-20, 20), tol = 1e-10)$root
ncp_hi <- uniroot(function(x) pt(tobs, n - 1, ncp = x) - 0.025, c(-20, 20), tol = 1e-10)$root
dav <- mean(d) / ((sd(pre) + sd(post)) / 2)
df <- n - 1
J <- exp(lgamma(df / 2) - 0.5 * log(df / 2) - lgamma((df - 1) / 2))
g_class <- (mean(post) - mean(pre)) / (1 - mean(pre))
g_ind <- (post - pre) / (1 - pre)
cc <- ifelse(post > pre, (post - pre) / (1 - pre), ifelse(post < pre, (post - pre) / pre, 0))
hci <- data.frame(
  statistic = c("n", "pre_mean", "post_mean", "gain", "gain_ci_low", "gain_ci_high", "t", "df", "p_t",
                "wilcoxon_v", "p_wilcoxon", "d_z", "d_z_ci_low", "d_z_ci_high", "d_av", "hedges_j", "hedges_g",
                "g_class", "g_avg", "c_avg"),
  value = c(n, mean(pre), mean(post), mean(d), tt$conf.int[1], tt$conf.int[2], unname(tt$statistic),
            unname(tt$parameter), tt$p.value, unname(wt$statistic), wt$p.value, dz, ncp_lo / sqrt(n),
            ncp_hi / sqrt(n), dav, J, J * dav, g_class, mean(g_ind), mean(cc)))
write.csv(hci, file.path(out_dir, "hci_prepost.csv"), row.names = FALSE)

# ---- Learning to Learn, grade 6 -> grade 9, ANCOVA score_9 ~ score_6 + track
ltl <- read.csv(file.path(data_dir, "learning_to_learn_grade6_grade9_prepost", "LearningToLearn.csv"))
ltl$track <- factor(ltl$track, levels = c("AS", "BS"))
fit <- lm(I(score_9 / 41) ~ I(score_6 / 41) + track, data = ltl)
co <- summary(fit)$coefficients
ci <- confint(fit)
anc <- data.frame(term = c("Intercept", "pre", "track[T.BS]"), estimate = co[, 1], se = co[, 2],
                  ci_low = ci[, 1], ci_high = ci[, 2], t = co[, 3], p = co[, 4], n = nobs(fit))
write.csv(anc, file.path(out_dir, "ltl_ancova.csv"), row.names = FALSE)
# paired statistics of the whole LtL sample (41 items)
p6 <- ltl$score_6 / 41; p9 <- ltl$score_9 / 41; dd <- p9 - p6
wt2 <- suppressWarnings(wilcox.test(ltl$score_9, ltl$score_6, paired = TRUE, correct = TRUE))
tt2 <- t.test(p9, p6, paired = TRUE)
ltl_paired <- data.frame(statistic = c("n", "gain", "t", "p_t", "wilcoxon_v", "p_wilcoxon", "d_z", "g_class"),
  value = c(length(dd), mean(dd), unname(tt2$statistic), tt2$p.value, unname(wt2$statistic), wt2$p.value,
            mean(dd) / sd(dd), (mean(p9) - mean(p6)) / (1 - mean(p6))))
write.csv(ltl_paired, file.path(out_dir, "ltl_paired.csv"), row.names = FALSE)

# ---- mixed model on simulated data written by make_reference_data.py (our own simulation)
sim_file <- file.path(out_dir, "sim_mixed.csv")
if (file.exists(sim_file) && requireNamespace("lme4", quietly = TRUE)) {
  s <- read.csv(sim_file)
  m <- lme4::lmer(post_pct ~ pre_pct + role + (1 | module), data = s, REML = TRUE)
  fe <- summary(m)$coefficients
  vc <- as.data.frame(lme4::VarCorr(m))
  mm <- data.frame(term = c(rownames(fe), "var(module)", "var(residual)"),
                   estimate = c(fe[, 1], vc$vcov[vc$grp == "module"], vc$vcov[vc$grp == "Residual"]),
                   se = c(fe[, 2], NA, NA))
  write.csv(mm, file.path(out_dir, "sim_mixed_lme4.csv"), row.names = FALSE)
}
writeLines(capture.output(sessionInfo()), file.path(out_dir, "sessionInfo.txt"))
