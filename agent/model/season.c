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

/* What both detectors look at: the autocorrelations of y at lags
 * 0 .. maxlag + 1, and its differences with their mean and variance. */
typedef struct {
  guint min_period, maxlag;
  double *acf;
  double *dy;
  gsize n_dy;
  double dmean, dvar;
} AcfScan;

static void
acf_scan_clear (AcfScan *a)
{
  g_clear_pointer (&a->acf, g_free);
  g_clear_pointer (&a->dy, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (AcfScan, acf_scan_clear)

/* FALSE when no lag in [min_period, max_period] can be tested */
static gboolean
acf_scan (AcfScan *a, const double *y, gsize n, guint min_period, guint max_period)
{
  double mean, var;

  a->min_period = MAX (min_period, 2u);
  a->maxlag = MIN ((gsize) max_period, n / 3);
  if (a->maxlag < a->min_period)
    return FALSE;
  mean_var (y, n, &mean, &var);
  if (!(var > 0))
    return FALSE;
  a->n_dy = n - 1;
  a->dy = g_new (double, a->n_dy);
  for (gsize i = 1; i < n; i++)
    a->dy[i - 1] = y[i] - y[i - 1];
  mean_var (a->dy, a->n_dy, &a->dmean, &a->dvar);
  a->acf = g_new0 (double, a->maxlag + 2);
  for (guint k = 0; k <= a->maxlag + 1; k++)
    a->acf[k] = acf_at (y, n, mean, var, k);
  return TRUE;
}

/* Persistence alone makes small lags correlate; only a local peak after
 * the decay says "season".  A random walk correlates at every lag, so
 * the season must also show in the differences. */
static gboolean
acf_peak (const AcfScan *a, guint k, double at_least, double min_acf)
{
  const double *acf = a->acf;

  return acf[k] > acf[k - 1] && acf[k] >= acf[k + 1] && acf[k] >= at_least &&
         a->dvar > 0 && acf_at (a->dy, a->n_dy, a->dmean, a->dvar, k) >= min_acf / 2;
}

guint
shd_detect_period (const double *y, gsize n, guint min_period, guint max_period,
                   double min_acf)
{
  g_auto (AcfScan) a = { 0 };
  double best_acf = min_acf;
  guint best = 0;

  if (!acf_scan (&a, y, n, min_period, max_period))
    return 0;
  for (guint k = a.min_period; k <= a.maxlag; k++) {
    if (acf_peak (&a, k, best_acf, min_acf)) {
      best_acf = a.acf[k];
      best = k;
    }
  }
  return best;
}

guint
shd_season_candidates (const double *y, gsize n, guint min_period, guint max_period,
                       double min_acf, guint *out, guint max)
{
  g_auto (AcfScan) a = { 0 };
  guint found = 0;

  if (max == 0 || !acf_scan (&a, y, n, min_period, max_period))
    return 0;
  for (guint k = a.min_period; k <= a.maxlag; k++) {
    guint j;

    if (!acf_peak (&a, k, min_acf, min_acf))
      continue;
    /* keep the best `max`, best first */
    for (j = found; j > 0 && a.acf[out[j - 1]] < a.acf[k]; j--)
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
