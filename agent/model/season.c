/* Season detection and validation; see season.h. */
#include "season.h"
#include "model-private.h"

#include <math.h>

/* Autocorrelation of x at lag k, given its mean and total variance. */
static double
acf_at (const double *x, gsize n, double mean, double var, guint k)
{
  double acc = 0;

  for (gsize i = k; i < n; i++)
    acc += (x[i] - mean) * (x[i - k] - mean);
  return acc / var;
}

static void
mean_var (const double *x, gsize n, double *mean, double *var)
{
  *mean = 0;
  *var = 0;
  for (gsize i = 0; i < n; i++)
    *mean += x[i];
  *mean /= n;
  for (gsize i = 0; i < n; i++)
    *var += (x[i] - *mean) * (x[i] - *mean);
}

guint
shd_detect_period (const double *y, gsize n, guint min_period, guint max_period,
                   double min_acf)
{
  double mean, var, dmean, dvar, best_acf = min_acf;
  guint maxlag, best = 0;
  g_autofree double *acf = NULL;
  g_autofree double *dy = NULL;

  if (min_period < 2)
    min_period = 2;
  maxlag = MIN ((gsize) max_period, n / 3);
  if (maxlag < min_period)
    return 0;
  mean_var (y, n, &mean, &var);
  if (!(var > 0))
    return 0;
  dy = g_new (double, n - 1);
  for (gsize i = 1; i < n; i++)
    dy[i - 1] = y[i] - y[i - 1];
  mean_var (dy, n - 1, &dmean, &dvar);
  acf = g_new0 (double, maxlag + 2);
  for (guint k = 0; k <= maxlag + 1; k++)
    acf[k] = acf_at (y, n, mean, var, k);
  /* Persistence alone makes small lags correlate; only a local peak after
   * the decay says "season".  A random walk correlates at every lag, so
   * the season must also show in the differences. */
  for (guint k = min_period; k <= maxlag; k++) {
    if (acf[k] > acf[k - 1] && acf[k] >= acf[k + 1] && acf[k] >= best_acf &&
        dvar > 0 && acf_at (dy, n - 1, dmean, dvar, k) >= min_acf / 2) {
      best_acf = acf[k];
      best = k;
    }
  }
  return best;
}

guint
shd_season_candidates (const double *y, gsize n, guint min_period, guint max_period,
                       double min_acf, guint *out, guint max)
{
  double mean, var, dmean, dvar;
  guint maxlag, found = 0;
  g_autofree double *acf = NULL;
  g_autofree double *dy = NULL;

  if (min_period < 2)
    min_period = 2;
  maxlag = MIN ((gsize) max_period, n / 3);
  if (maxlag < min_period || max == 0)
    return 0;
  mean_var (y, n, &mean, &var);
  if (!(var > 0))
    return 0;
  dy = g_new (double, n - 1);
  for (gsize i = 1; i < n; i++)
    dy[i - 1] = y[i] - y[i - 1];
  mean_var (dy, n - 1, &dmean, &dvar);
  acf = g_new0 (double, maxlag + 2);
  for (guint k = 0; k <= maxlag + 1; k++)
    acf[k] = acf_at (y, n, mean, var, k);
  /* Persistence alone makes small lags correlate; only a local peak after
   * the decay says "season".  A random walk correlates at every lag, so
   * the season must also show in the differences. */
  for (guint k = min_period; k <= maxlag; k++) {
    guint j;

    if (!(acf[k] > acf[k - 1] && acf[k] >= acf[k + 1] && acf[k] >= min_acf &&
          dvar > 0 && acf_at (dy, n - 1, dmean, dvar, k) >= min_acf / 2))
      continue;
    /* keep the best `max`, best first */
    for (j = found; j > 0 && acf[out[j - 1]] < acf[k]; j--)
      if (j < max)
        out[j] = out[j - 1];
    if (j < max) {
      out[j] = k;
      found = MIN (found + 1, max);
    }
  }
  return found;
}

double
shd_season_skill (const double *y, gsize n, guint period, guint h, guint cycles,
                  guint window, guint fit, guint min_scored)
{
  g_autoptr (ShdModel) with = NULL;
  g_autoptr (ShdModel) without = NULL;
  gsize first;
  double e_with = 0, e_without = 0;

  g_return_val_if_fail (period >= 2 && h >= 1, NAN);
  if (n < (gsize) period + MAX (min_scored, 1u) + h)
    return NAN;
  with = shd_model_new_profile (period, cycles, window, fit);
  without = shd_model_new_profile (0, cycles, window, fit);
  first = MAX ((gsize) period, n / 3);
  /* too few origins say nothing */
  if (n < first + MAX (min_scored, 1u) + h)
    return NAN;
  for (gsize t = 0; t + h <= n; t++) {
    double a, b;

    /* origin after y[t - 1]: forecast y[t + h - 1] */
    if (t >= first && shd_model_point (with, h, &a) && shd_model_point (without, h, &b)) {
      e_with += fabs (y[t + h - 1] - a);
      e_without += fabs (y[t + h - 1] - b);
    }
    shd_model_update (with, y[t]);
    shd_model_update (without, y[t]);
  }
  if (!(e_without > 0))
    return e_with > 0 ? INFINITY : NAN;
  return e_with / e_without;
}
