/* The robust profile model; see forecast.h.
 *
 * Why this model: disk load is skewed (a quiet baseline, rare bursts ten
 * or a hundred times larger), and the backtests score absolute errors, so
 * a forecast should aim at the median, not the mean.  Working on
 * log(1 + y) and taking medians does that: a burst seen once in three days
 * does not move the profile, and a seasonal naive on the same data repeats
 * it a day later.  The AR(1) on the deviation keeps what naive does well
 * (persistence over the next steps) and fades into the profile further
 * ahead, at the rate the data shows. */
#include "model-private.h"
#include "spike.h"

#include <math.h>
#include <string.h>

typedef struct {
  ShdModel base;
  guint period;                 /* 0: a robust level */
  guint cycles;
  guint window;
  guint fit;
  guint hmax;                   /* phi_h is fitted up to here, extrapolated beyond */
  ShdRing y;                    /* log(1 + y) */
  ShdRing p;                    /* the profile each value had when it came; NAN: none */
  guint64 n;
  double *scratch;
  /* per update, cached: phi_h (NAN: not computed) and the range of y */
  double *phi;
  double ymin, ymax;
  gboolean range_valid;
} Profile;

/* log(1 + y) of the value at absolute time t (n - len <= t < n) */
static double
y_at (const Profile *s, guint64 t)
{
  return shd_ring_get (&s->y, (guint) (t - (s->n - s->y.len)));
}

static double
p_at (const Profile *s, guint64 t)
{
  return shd_ring_get (&s->p, (guint) (t - (s->n - s->p.len)));
}

/* The profile at time t >= n - 1 from the values before n: the median of
 * the values one, two ... periods earlier (the `cycles` latest that are
 * known), or of the last `window` values. */
static double
profile_at (const Profile *s, guint64 t)
{
  guint k = 0;
  guint64 first = s->n - s->y.len;

  if (s->y.len == 0)
    return NAN;
  if (s->period == 0) {
    guint w = MIN (s->window, s->y.len);

    for (guint i = 0; i < w; i++)
      s->scratch[k++] = shd_ring_back (&s->y, i);
  } else {
    guint64 back = (guint64) s->period;

    /* the first period back that is already known */
    while (t >= back && t - back >= s->n)
      back += s->period;
    for (; k < s->cycles && t >= back && t - back >= first; back += s->period)
      s->scratch[k++] = y_at (s, t - back);
  }
  if (k == 0)
    return NAN;
  return shd_median_inplace (s->scratch, k);
}

static void
profile_update (ShdModel *m, double v)
{
  Profile *s = (Profile *) m;

  shd_ring_push (&s->p, profile_at (s, s->n));
  shd_ring_push (&s->y, log1p (MAX (v, 0)));
  s->n++;

  for (guint h = 0; h < s->hmax; h++)
    s->phi[h] = NAN;
  s->range_valid = FALSE;
}

/* phi_h: the least-squares slope through the origin of d(t) on d(t - h)
 * over the last `fit` values, in [0, 1]; beyond hmax, phi_hmax^(h/hmax). */
static double
phi_h (const Profile *s, guint h)
{
  Profile *w = (Profile *) s;   /* the cache */
  double num = 0, den = 0, phi;
  guint64 first;

  if (h > s->hmax)
    return pow (phi_h (s, s->hmax), (double) h / s->hmax);
  if (isfinite (s->phi[h - 1]))
    return s->phi[h - 1];
  first = s->n - s->p.len;
  for (guint64 t = s->n - MIN ((guint64) s->fit, s->n); t < s->n; t++) {
    double pa, pb, a, b;

    if (t < first + h)
      continue;
    pa = p_at (s, t - h);
    pb = p_at (s, t);
    if (!isfinite (pa) || !isfinite (pb))
      continue;
    a = y_at (s, t - h) - pa;
    b = y_at (s, t) - pb;
    num += a * b;
    den += a * a;
  }
  phi = den > 0 ? CLAMP (num / den, 0, 1) : 0;
  w->phi[h - 1] = phi;
  return phi;
}

static gboolean
profile_point (const ShdModel *m, guint h, double *out)
{
  const Profile *s = (const Profile *) m;
  Profile *w = (Profile *) m;   /* caches */
  double pf, pn, f;

  if (s->n == 0 || s->n < s->period)
    return FALSE;
  pf = profile_at (s, s->n + h - 1);
  if (!isfinite (pf))
    return FALSE;
  pn = shd_ring_back (&s->p, 0);
  f = pf;
  if (isfinite (pn))
    f += phi_h (s, h) * (shd_ring_back (&s->y, 0) - pn);
  /* never beyond what was seen (twice the largest value): a deviation
   * fitted on a quiet stretch must not blow up a burst */
  if (!s->range_valid) {
    w->ymin = INFINITY;
    w->ymax = -INFINITY;
    for (guint i = 0; i < s->y.len; i++) {
      double v = shd_ring_get (&s->y, i);

      w->ymin = MIN (w->ymin, v);
      w->ymax = MAX (w->ymax, v);
    }
    w->range_valid = TRUE;
  }
  f = CLAMP (f, s->ymin, s->ymax + G_LN2);
  *out = expm1 (f);
  return TRUE;
}

static void
profile_finalize (ShdModel *m)
{
  Profile *s = (Profile *) m;

  shd_ring_clear (&s->y);
  shd_ring_clear (&s->p);
  g_free (s->scratch);
  g_free (s->phi);
}

static const ShdModelClass profile_class = {
  "profile", profile_update, profile_point, profile_finalize
};
static const ShdModelClass level_class = {
  "level", profile_update, profile_point, profile_finalize
};

ShdModel *
shd_model_new_profile (guint period, guint cycles, guint window, guint fit)
{
  Profile *s;
  guint span;

  g_return_val_if_fail (period != 1, NULL);
  g_return_val_if_fail (cycles >= 1 && window >= 1 && fit >= 4, NULL);
  s = g_new0 (Profile, 1);
  shd_model_init (&s->base, period ? &profile_class : &level_class);
  s->period = period;
  s->cycles = cycles;
  s->window = window;
  s->fit = fit;
  s->hmax = MAX (fit / 2, 1u);
  /* the profile reaches back cycles + 1 periods (a forecast more than one
   * period ahead skips the periods not seen yet); phi pairs values hmax
   * apart over the last fit */
  span = period ? (cycles + 1) * period : window;
  shd_ring_init (&s->y, span + fit + s->hmax + 2);
  shd_ring_init (&s->p, fit + s->hmax + 1);
  s->scratch = g_new (double, MAX (cycles, window));
  s->phi = g_new (double, s->hmax);
  for (guint h = 0; h < s->hmax; h++)
    s->phi[h] = NAN;
  return &s->base;
}
