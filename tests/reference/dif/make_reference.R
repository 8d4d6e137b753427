# Reference values for tests/test_dif.py, computed once with base R (stats).
#
# Data: Homeostasis Concept Inventory (McFarland et al. 2017, CBE-Life Sci Educ 16(2) ar35),
# ../shared/data/homeostasis_concept_inventory_hci/HCI.csv (read in place, never copied).
# 651 students, 20 dichotomous items; gender 0 = male (reference), 1 = female (focal).
#
# For each item: Mantel-Haenszel test stratified on the total score WITH the studied item
# (Holland & Thayer 1988), base R mantelhaen.test(correct = TRUE) on the 2 x 2 x K table
# (group: reference first; response: correct first), so the estimate is the odds of a correct
# answer in the reference group over the focal group. Strata with fewer than 2 learners carry
# no information and are dropped (mantelhaen.test refuses them).
# Logistic-regression DIF (Swaminathan & Rogers 1990): likelihood-ratio statistics of the group
# term and the score x group interaction from glm(binomial), and the Nagelkerke R2 difference
# between the full and the score-only model.
#
# Run from the project root:  Rscript tests/reference/dif/make_reference.R
# Output: tests/reference/dif/hci_gender_mh.csv (derived estimates only, no raw data).

args <- commandArgs(trailingOnly = FALSE)
here <- dirname(normalizePath(sub("^--file=", "", args[grep("^--file=", args)])))
data_path <- normalizePath(file.path(here, "..", "..", "..", "..", "shared", "data",
                                     "homeostasis_concept_inventory_hci", "HCI.csv"))
hci <- read.csv(data_path, check.names = FALSE)
items <- paste("Item", 1:20)
total <- rowSums(hci[, items])
stopifnot(all(total == hci$total))
group <- factor(hci$gender, levels = c(0, 1), labels = c("male", "female"))

nagelkerke <- function(fit, null_ll, n) {
  ll <- as.numeric(logLik(fit))
  (1 - exp(2 * (null_ll - ll) / n)) / (1 - exp(2 * null_ll / n))
}

rows <- lapply(seq_along(items), function(j) {
  y <- hci[[items[j]]]
  keep_strata <- names(which(table(total) >= 2))
  k <- as.character(total) %in% keep_strata
  tab <- table(group[k], factor(y[k], levels = c(1, 0)), factor(total[k]))
  mh <- mantelhaen.test(tab, correct = TRUE)
  s <- as.numeric(scale(total))
  g <- as.numeric(group == "female")
  m0 <- glm(y ~ s, family = binomial)
  m1 <- glm(y ~ s + g, family = binomial)
  m2 <- glm(y ~ s + g + s:g, family = binomial)
  null_ll <- as.numeric(logLik(glm(y ~ 1, family = binomial)))
  n <- length(y)
  data.frame(
    item_id = items[j],
    n_reference = sum(group == "male"),
    n_focal = sum(group == "female"),
    mh_chi2 = unname(mh$statistic),
    p_value = mh$p.value,
    mh_odds_ratio = unname(mh$estimate),
    mh_odds_ratio_ci_low = mh$conf.int[1],
    mh_odds_ratio_ci_high = mh$conf.int[2],
    lr_uniform_chi2 = 2 * (as.numeric(logLik(m1)) - as.numeric(logLik(m0))),
    lr_nonuniform_chi2 = 2 * (as.numeric(logLik(m2)) - as.numeric(logLik(m1))),
    lr_effect_size = nagelkerke(m2, null_ll, n) - nagelkerke(m0, null_ll, n)
  )
})
out <- do.call(rbind, rows)
out$mh_delta <- -2.35 * log(out$mh_odds_ratio)
out$p_adjusted <- p.adjust(out$p_value, method = "BH")
write.csv(out, file.path(here, "hci_gender_mh.csv"), row.names = FALSE)
cat(R.version.string, "\n")
print(out[, c("item_id", "mh_odds_ratio", "mh_delta", "p_value", "p_adjusted")], digits = 4)
