/* The classic online forecasters: naive, seasonal naive, EWMA, damped
 * Holt, damped additive Holt-Winters, AR(p), and self-tuning wrappers. */
#include "model-private.h"

#include <math.h>
#include <string.h>

/* One-step residuals kept per model for its prediction interval. */
#define RESID_WINDOW 96
#define RESID_MIN 5

void
shd_model_init (ShdModel *m, const ShdModelClass *klass)
{
  m->klass = klass;
  shd_ring_init (&m->resid, RESID_WINDOW);
}

void
shd_model_free (ShdModel *m)
{
  if (m == NULL)
    return;
  if (m->klass->finalize)
    m->klass->finalize (m);
  shd_ring_clear (&m->resid);
  g_free (m);
}

const char *
shd_model_name (const ShdModel *m)
{
  return m->klass->name;
}

gboolean
shd_model_ready (const ShdModel *m)
{
  double p;

  return m->klass->point (m, 1, &p);
}

void
shd_model_update (ShdModel *m, double y)
{
  double p;

  g_return_if_fail (isfinite (y));
  if (m->klass->point (m, 1, &p))
    shd_ring_push (&m->resid, y - p);
  m->klass->update (m, y);
}

double
shd_model_sigma (const ShdModel *m)
{
  double ss = 0;

  if (m->resid.len == 0)
    return NAN;
  for (guint i = 0; i < m->resid.len; i++) {
    double e = shd_ring_get (&m->resid, i);
    ss += e * e;
  }
  return sqrt (ss / m->resid.len);
}

gboolean
shd_model_predict (const ShdModel *m, guint h, double level, ShdPrediction *out)
{
  double p, z, half;

  g_return_val_if_fail (h >= 1, FALSE);
  g_return_val_if_fail (level > 0 && level < 1, FALSE);
  if (!m->klass->point (m, h, &p))
    return FALSE;
  out->point = p;
  out->has_interval = m->resid.len >= RESID_MIN;
  if (!out->has_interval) {
    out->lo = out->hi = p;
    return TRUE;
  }
  /* Errors of most of these models grow roughly like a random walk's with
   * the horizon; sqrt(h) is the cheap, honest approximation. */
  z = shd_normal_quantile (0.5 + level / 2);
  half = z * shd_model_sigma (m) * sqrt ((double) h);
  out->lo = p - half;
  out->hi = p + half;
  return TRUE;
}

/* ---- naive ---- */

typedef struct {
  ShdModel base;
  double last;
  gboolean have;
} Naive;

static void
naive_update (ShdModel *m, double y)
{
  Naive *s = (Naive *) m;

  s->last = y;
  s->have = TRUE;
}

static gboolean
naive_point (const ShdModel *m, guint h, double *out)
{
  const Naive *s = (const Naive *) m;

  (void) h;
  *out = s->last;
  return s->have;
}

static const ShdModelClass naive_class = { "naive", naive_update, naive_point, NULL };

ShdModel *
shd_model_new_naive (void)
{
  Naive *s = g_new0 (Naive, 1);

  shd_model_init (&s->base, &naive_class);
  return &s->base;
}

/* ---- seasonal naive ---- */

typedef struct {
  ShdModel base;
  ShdRing season;               /* the last full period, oldest first */
} SNaive;

static void
snaive_update (ShdModel *m, double y)
{
  shd_ring_push (&((SNaive *) m)->season, y);
}

static gboolean
snaive_point (const ShdModel *m, guint h, double *out)
{
  const SNaive *s = (const SNaive *) m;

  if (!shd_ring_full (&s->season))
    return FALSE;
  /* The oldest element is the value one period before the next step. */
  *out = shd_ring_get (&s->season, (h - 1) % s->season.cap);
  return TRUE;
}

static void
snaive_finalize (ShdModel *m)
{
  shd_ring_clear (&((SNaive *) m)->season);
}

static const ShdModelClass snaive_class = {
  "snaive", snaive_update, snaive_point, snaive_finalize
};

ShdModel *
shd_model_new_snaive (guint period)
{
  SNaive *s;

  g_return_val_if_fail (period >= 1, NULL);
  s = g_new0 (SNaive, 1);
  shd_model_init (&s->base, &snaive_class);
  shd_ring_init (&s->season, period);
  return &s->base;
}

/* ---- EWMA ---- */

typedef struct {
  ShdModel base;
  double alpha;
  double level;
  gboolean have;
} Ewma;

static void
ewma_update (ShdModel *m, double y)
{
  Ewma *s = (Ewma *) m;

  s->level = s->have ? s->alpha * y + (1 - s->alpha) * s->level : y;
  s->have = TRUE;
}

static gboolean
ewma_point (const ShdModel *m, guint h, double *out)
{
  const Ewma *s = (const Ewma *) m;

  (void) h;
  *out = s->level;
  return s->have;
}

static const ShdModelClass ewma_class = { "ewma", ewma_update, ewma_point, NULL };

ShdModel *
shd_model_new_ewma (double alpha)
{
  Ewma *s;

  g_return_val_if_fail (alpha > 0 && alpha <= 1, NULL);
  s = g_new0 (Ewma, 1);
  shd_model_init (&s->base, &ewma_class);
  s->alpha = alpha;
  return &s->base;
}

/* ---- damped Holt ---- */

/* phi + phi^2 + ... + phi^h: how much of the trend a damped model keeps. */
static double
damped_sum (double phi, guint h)
{
  if (phi == 1)
    return h;
  return phi * (1 - pow (phi, h)) / (1 - phi);
}

typedef struct {
  ShdModel base;
  double alpha, beta, phi;
  double level, trend;
  guint64 n;
} Holt;

static void
holt_update (ShdModel *m, double y)
{
  Holt *s = (Holt *) m;
  double prev;

  if (s->n == 0) {
    s->level = y;
    s->trend = 0;
  } else if (s->n == 1) {
    s->trend = y - s->level;
    s->level = y;
  } else {
    prev = s->level;
    s->level = s->alpha * y + (1 - s->alpha) * (prev + s->phi * s->trend);
    s->trend = s->beta * (s->level - prev) + (1 - s->beta) * s->phi * s->trend;
  }
  s->n++;
}

static gboolean
holt_point (const ShdModel *m, guint h, double *out)
{
  const Holt *s = (const Holt *) m;

  if (s->n < 2)
    return FALSE;
  *out = s->level + damped_sum (s->phi, h) * s->trend;
  return TRUE;
}

static const ShdModelClass holt_class = { "holt", holt_update, holt_point, NULL };

ShdModel *
shd_model_new_holt (double alpha, double beta, double phi)
{
  Holt *s;

  g_return_val_if_fail (alpha > 0 && alpha <= 1, NULL);
  g_return_val_if_fail (beta >= 0 && beta <= 1, NULL);
  g_return_val_if_fail (phi > 0 && phi <= 1, NULL);
  s = g_new0 (Holt, 1);
  shd_model_init (&s->base, &holt_class);
  s->alpha = alpha;
  s->beta = beta;
  s->phi = phi;
  return &s->base;
}

/* ---- damped additive Holt-Winters ---- */

typedef struct {
  ShdModel base;
  guint m;
  double alpha, beta, gamma, phi;
  double level, trend;
  double *season;               /* indexed by time modulo m */
  double *warm;                 /* the first two periods, for initialisation */
  guint64 n;
} Hw;

static void
hw_step (Hw *s, double y)
{
  guint j = s->n % s->m;
  double l0 = s->level, b0 = s->trend;

  s->level = s->alpha * (y - s->season[j]) + (1 - s->alpha) * (l0 + s->phi * b0);
  s->trend = s->beta * (s->level - l0) + (1 - s->beta) * s->phi * b0;
  s->season[j] = s->gamma * (y - l0 - s->phi * b0) + (1 - s->gamma) * s->season[j];
}

/* Level and trend from the means of the first two periods, seasonal
 * indices from the detrended first period; then the second period is run
 * through the ordinary recursions. */
static void
hw_initialise (Hw *s)
{
  guint m = s->m;
  double mean1 = 0, mean2 = 0;

  for (guint i = 0; i < m; i++) {
    mean1 += s->warm[i];
    mean2 += s->warm[m + i];
  }
  mean1 /= m;
  mean2 /= m;
  s->trend = (mean2 - mean1) / m;
  for (guint i = 0; i < m; i++)
    s->season[i] = s->warm[i] - (mean1 + s->trend * (i - (m - 1) / 2.0));
  s->level = mean1 + s->trend * (m - 1) / 2.0;
  for (s->n = m; s->n < 2 * m; s->n++)
    hw_step (s, s->warm[s->n]);
  g_clear_pointer (&s->warm, g_free);
}

static void
hw_update (ShdModel *mod, double y)
{
  Hw *s = (Hw *) mod;

  if (s->n < 2 * (guint64) s->m) {
    s->warm[s->n++] = y;
    if (s->n == 2 * (guint64) s->m)
      hw_initialise (s);
    return;
  }
  hw_step (s, y);
  s->n++;
}

static gboolean
hw_point (const ShdModel *mod, guint h, double *out)
{
  const Hw *s = (const Hw *) mod;

  if (s->warm != NULL)
    return FALSE;
  *out = s->level + damped_sum (s->phi, h) * s->trend
       + s->season[(s->n + h - 1) % s->m];
  return TRUE;
}

static void
hw_finalize (ShdModel *mod)
{
  Hw *s = (Hw *) mod;

  g_free (s->season);
  g_free (s->warm);
}

static const ShdModelClass hw_class = { "hw", hw_update, hw_point, hw_finalize };

ShdModel *
shd_model_new_hw (guint period, double alpha, double beta, double gamma, double phi)
{
  Hw *s;

  g_return_val_if_fail (period >= 2, NULL);
  g_return_val_if_fail (alpha > 0 && alpha <= 1, NULL);
  g_return_val_if_fail (beta >= 0 && beta <= 1, NULL);
  g_return_val_if_fail (gamma >= 0 && gamma <= 1, NULL);
  g_return_val_if_fail (phi > 0 && phi <= 1, NULL);
  s = g_new0 (Hw, 1);
  shd_model_init (&s->base, &hw_class);
  s->m = period;
  s->alpha = alpha;
  s->beta = beta;
  s->gamma = gamma;
  s->phi = phi;
  s->season = g_new0 (double, period);
  s->warm = g_new0 (double, 2 * (gsize) period);
  return &s->base;
}

/* ---- AR(p) by Levinson-Durbin on a rolling window ---- */

gboolean
shd_levinson_durbin (const double *r, guint p, double *phi, double *err)
{
  g_autofree double *prev = g_new0 (double, p + 1);
  double e = r[0];

  memset (phi, 0, p * sizeof *phi);
  if (!(e > 0))
    return FALSE;
  for (guint k = 1; k <= p; k++) {
    double acc = r[k], kappa;

    /* A perfectly predictable series: higher orders add nothing. */
    if (e <= 1e-12 * r[0])
      break;
    for (guint j = 1; j < k; j++)
      acc -= phi[j - 1] * r[k - j];
    kappa = acc / e;
    if (!(fabs (kappa) <= 1 + 1e-9))
      return FALSE;
    memcpy (prev, phi, (k - 1) * sizeof *phi);
    phi[k - 1] = kappa;
    for (guint j = 1; j < k; j++)
      phi[j - 1] = prev[j - 1] - kappa * prev[k - j - 1];
    e *= 1 - kappa * kappa;
    if (e < 0)
      e = 0;
  }
  if (err)
    *err = e;
  return TRUE;
}

typedef struct {
  ShdModel base;
  guint p;
  ShdRing win;
  double *phi;
  double mean;
  gboolean fitted;
  double *scratch;              /* window copy, then forecast recursion */
} Ar;

static void
ar_fit (Ar *s)
{
  guint n = s->win.len, p = s->p;
  double r[SHD_AR_MAX_ORDER + 1];
  double *x = s->scratch;

  shd_ring_copy (&s->win, x);
  s->mean = 0;
  for (guint i = 0; i < n; i++)
    s->mean += x[i];
  s->mean /= n;
  for (guint i = 0; i < n; i++)
    x[i] -= s->mean;
  /* The biased estimator keeps the fitted model stationary. */
  for (guint k = 0; k <= p; k++) {
    double acc = 0;
    for (guint i = k; i < n; i++)
      acc += x[i] * x[i - k];
    r[k] = acc / n;
  }
  if (r[0] <= 0) {
    /* A constant window: the mean is the forecast. */
    memset (s->phi, 0, p * sizeof *s->phi);
    s->fitted = TRUE;
    return;
  }
  s->fitted = shd_levinson_durbin (r, p, s->phi, NULL);
}

static void
ar_update (ShdModel *m, double y)
{
  Ar *s = (Ar *) m;

  shd_ring_push (&s->win, y);
  if (s->win.len >= MAX (2 * s->p + 2, 8u))
    ar_fit (s);
}

static gboolean
ar_point (const ShdModel *m, guint h, double *out)
{
  const Ar *s = (const Ar *) m;
  guint p = s->p;
  double *x = s->scratch;       /* x[0..p-1] = last p values, centred */

  if (!s->fitted)
    return FALSE;
  for (guint i = 0; i < p; i++)
    x[i] = shd_ring_back (&s->win, i) - s->mean;
  for (guint step = 0; step < h; step++) {
    double next = 0;
    for (guint i = 0; i < p; i++)
      next += s->phi[i] * x[i];
    memmove (x + 1, x, (p - 1) * sizeof *x);
    x[0] = next;
  }
  *out = x[0] + s->mean;
  return TRUE;
}

static void
ar_finalize (ShdModel *m)
{
  Ar *s = (Ar *) m;

  shd_ring_clear (&s->win);
  g_free (s->phi);
  g_free (s->scratch);
}

static const ShdModelClass ar_class = { "ar", ar_update, ar_point, ar_finalize };

ShdModel *
shd_model_new_ar (guint order, guint window)
{
  Ar *s;

  g_return_val_if_fail (order >= 1 && order <= SHD_AR_MAX_ORDER, NULL);
  g_return_val_if_fail (window >= MAX (2 * order + 2, 8u), NULL);
  s = g_new0 (Ar, 1);
  shd_model_init (&s->base, &ar_class);
  s->p = order;
  shd_ring_init (&s->win, window);
  s->phi = g_new0 (double, order);
  s->scratch = g_new0 (double, window);
  return &s->base;
}

gboolean
shd_model_ar_coefficients (const ShdModel *m, double *phi, guint order)
{
  const Ar *s = (const Ar *) m;

  if (m->klass != &ar_class || !s->fitted || order != s->p)
    return FALSE;
  memcpy (phi, s->phi, order * sizeof *phi);
  return TRUE;
}

/* ---- self-tuning wrappers ---- */

/* Smoothing constants that suit one disk do not suit the next, and fitting
 * them by likelihood is not cheap.  Instead a handful of candidates run
 * side by side (each O(1) per update) and the one with the lowest recent
 * one-step error forecasts. */
#define TUNE_WINDOW 48

typedef struct {
  ShdModel base;
  guint k;
  ShdModel **cand;
  ShdRing *err;
  guint best;
} Tuned;

static void
tuned_update (ShdModel *m, double y)
{
  Tuned *s = (Tuned *) m;
  double best_err = INFINITY;

  for (guint i = 0; i < s->k; i++) {
    double p;

    if (s->cand[i]->klass->point (s->cand[i], 1, &p))
      shd_ring_push (&s->err[i], fabs (y - p));
    shd_model_update (s->cand[i], y);
  }
  for (guint i = 0; i < s->k; i++) {
    double e = 0;

    if (s->err[i].len == 0)
      continue;
    for (guint j = 0; j < s->err[i].len; j++)
      e += shd_ring_get (&s->err[i], j);
    e /= s->err[i].len;
    /* Ties keep the earlier, more conservative candidate. */
    if (e < best_err) {
      best_err = e;
      s->best = i;
    }
  }
}

static gboolean
tuned_point (const ShdModel *m, guint h, double *out)
{
  const Tuned *s = (const Tuned *) m;

  return s->cand[s->best]->klass->point (s->cand[s->best], h, out);
}

static void
tuned_finalize (ShdModel *m)
{
  Tuned *s = (Tuned *) m;

  for (guint i = 0; i < s->k; i++) {
    shd_model_free (s->cand[i]);
    shd_ring_clear (&s->err[i]);
  }
  g_free (s->cand);
  g_free (s->err);
}

static const ShdModelClass tuned_ewma_class = { "ewma", tuned_update, tuned_point, tuned_finalize };
static const ShdModelClass tuned_holt_class = { "holt", tuned_update, tuned_point, tuned_finalize };
static const ShdModelClass tuned_hw_class = { "hw", tuned_update, tuned_point, tuned_finalize };

static ShdModel *
tuned_new (const ShdModelClass *klass, ShdModel **cand, guint k)
{
  Tuned *s = g_new0 (Tuned, 1);

  shd_model_init (&s->base, klass);
  s->k = k;
  s->cand = g_memdup2 (cand, k * sizeof *cand);
  s->err = g_new0 (ShdRing, k);
  for (guint i = 0; i < k; i++)
    shd_ring_init (&s->err[i], TUNE_WINDOW);
  return &s->base;
}

ShdModel *
shd_model_new_ewma_tuned (void)
{
  static const double alpha[] = { 0.3, 0.1, 0.5, 0.7, 0.9 };
  ShdModel *cand[G_N_ELEMENTS (alpha)];

  for (guint i = 0; i < G_N_ELEMENTS (alpha); i++)
    cand[i] = shd_model_new_ewma (alpha[i]);
  return tuned_new (&tuned_ewma_class, cand, G_N_ELEMENTS (cand));
}

ShdModel *
shd_model_new_holt_tuned (double phi)
{
  static const double ab[][2] = { { 0.3, 0.05 }, { 0.6, 0.05 }, { 0.9, 0.05 },
                                  { 0.3, 0.2 }, { 0.6, 0.2 }, { 0.9, 0.2 } };
  ShdModel *cand[G_N_ELEMENTS (ab)];

  for (guint i = 0; i < G_N_ELEMENTS (ab); i++)
    cand[i] = shd_model_new_holt (ab[i][0], ab[i][1], phi);
  return tuned_new (&tuned_holt_class, cand, G_N_ELEMENTS (cand));
}

ShdModel *
shd_model_new_hw_tuned (guint period, double phi)
{
  static const double ag[][2] = { { 0.2, 0.3 }, { 0.1, 0.1 }, { 0.5, 0.1 },
                                  { 0.1, 0.3 }, { 0.5, 0.3 }, { 0.8, 0.3 } };
  ShdModel *cand[G_N_ELEMENTS (ag)];

  for (guint i = 0; i < G_N_ELEMENTS (ag); i++)
    cand[i] = shd_model_new_hw (period, ag[i][0], 0.01, ag[i][1], phi);
  return tuned_new (&tuned_hw_class, cand, G_N_ELEMENTS (cand));
}

/* Acklam's rational approximation, relative error below 1.2e-9. */
double
shd_normal_quantile (double p)
{
  static const double a[] = { -3.969683028665376e+01, 2.209460984245205e+02,
    -2.759285104469687e+02, 1.383577518672690e+02, -3.066479806614716e+01,
    2.506628277459239e+00 };
  static const double b[] = { -5.447609879822406e+01, 1.615858368580409e+02,
    -1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01 };
  static const double c[] = { -7.784894002430293e-03, -3.223964580411365e-01,
    -2.400758277161838e+00, -2.549732539343734e+00, 4.374664141464968e+00,
    2.938163982698783e+00 };
  static const double d[] = { 7.784695709041462e-03, 3.224671290700398e-01,
    2.445134137142996e+00, 3.754408661907416e+00 };
  double q, r;

  g_return_val_if_fail (p > 0 && p < 1, NAN);
  if (p < 0.02425) {
    q = sqrt (-2 * log (p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - 0.02425)
    return -shd_normal_quantile (1 - p);
  q = p - 0.5;
  r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}
