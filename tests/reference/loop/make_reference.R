# Reference values for tests/test_loop.py (linking two occasions through anchor items), computed ONCE with R.
#
# Data: Learning to Learn test, the same 782 pupils in Grade 6 and Grade 9, 41 dichotomous items
# (Martinkova, Hladka & Potuznikova 2020, Learning and Instruction 66, 101286; ShinyItemAnalysis, GPL-3),
# read in place from ../shared/data. Only derived estimates are written here, never the responses.
#
# Run from the project root:  Rscript tests/reference/loop/make_reference.R
# R package: lme4 (Rasch by marginal ML = glmer with item fixed effects and a normal learner
# random effect; Laplace approximation, nAGQ = 1: with 41 items per pupil it is close to quadrature,
# and 25-point quadrature with 42 fixed effects did not finish in 40 minutes on the shared machine).
#
# 1. Separate calibration of each occasion (mean ability 0 in each), then mean/mean linking through
#    all 41 items: shift = inverse-variance weighted mean of (b_grade6 - b_grade9), the same
#    formula as research.loop.link_difficulties (without drift screening).
# 2. Concurrent calibration: one glmer on both occasions with an occasion effect (the mean ability
#    change when no item drifts) and a learner random intercept.
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
out <- "tests/reference/loop"
ltl <- read.csv("../shared/data/learning_to_learn_grade6_grade9_prepost/LearningToLearn.csv", check.names = FALSE)
items6 <- grep("^Item.*_6$", names(ltl), value = TRUE)
items <- sub("_6$", "", items6)
stopifnot(length(items) == 41)

long_of <- function(grade) {
  X <- as.matrix(ltl[, paste0(items, "_", grade)])
  data.frame(person = factor(rep(seq_len(nrow(X)), ncol(X))),
             item = factor(rep(items, each = nrow(X)), levels = items),
             y = as.vector(X), grade = grade)
}
fit_one <- function(d) {
  d <- d[!is.na(d$y), ]
  m <- glmer(y ~ 0 + item + (1 | person), data = d, family = binomial, nAGQ = 1,
             control = glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5)))
  data.frame(item_id = items, difficulty = -unname(fixef(m)), se = unname(sqrt(diag(as.matrix(vcov(m))))),
             sigma = as.numeric(attr(VarCorr(m)$person, "stddev")))
}
d6 <- long_of(6); d9 <- long_of(9)
f6 <- fit_one(d6); f9 <- fit_one(d9)
d <- f6$difficulty - f9$difficulty
w <- 1 / (f6$se^2 + f9$se^2)
shift <- sum(w * d) / sum(w)
se_iv <- 1 / sqrt(sum(w))
se_emp <- sd(d) / sqrt(length(d))
params <- data.frame(item_id = items, difficulty_grade6 = f6$difficulty, se_grade6 = f6$se,
                     difficulty_grade9 = f9$difficulty, se_grade9 = f9$se, displacement = d)
write.csv(params, file.path(out, "ltl_lme4_separate.csv"), row.names = FALSE)

both <- rbind(d6, d9)
both <- both[!is.na(both$y), ]
both$grade9 <- as.numeric(both$grade == 9)
mc <- glmer(y ~ 0 + item + grade9 + (1 | person), data = both, family = binomial, nAGQ = 1,
            control = glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5)))
conc <- fixef(mc)[["grade9"]]
conc_se <- sqrt(vcov(mc)["grade9", "grade9"])

res <- list(
  data = "LearningToLearn.csv (782 pupils, 41 items, Grade 6 and Grade 9)",
  r_version = R.version.string, lme4_version = as.character(packageVersion("lme4")),
  separate_mean_mean = list(shift = shift, se_inverse_variance = se_iv, se_empirical = se_emp,
                            n_anchors = length(d), sigma_grade6 = f6$sigma[1], sigma_grade9 = f9$sigma[1]),
  concurrent = list(shift = conc, se = conc_se, method = "glmer Laplace, occasion fixed effect, learner random intercept")
)
write(toJSON(res, auto_unbox = TRUE, digits = 10, pretty = TRUE), file.path(out, "ltl_linking.json"))
print(res)
