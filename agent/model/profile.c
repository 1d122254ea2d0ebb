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
  /* running sums over the last `fit` pairs (d(t - h), d(t)), h = 1..hmax:
   * sum of products and of squares; recomputed in full now and then so
   * that rounding does not drift */
  double *num, *den;
  guint64 since_full;
  /* per update, cached: the level (period 0) and the range of y */
  double level;
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
profile_at (const Profile *cs, guint64 t)
{
  Profile *s = (Profile *) cs;  /* the level's cache */
  guint k = 0;
  guint64 first = s->n - s->y.len;

  if (s->y.len == 0)
    return NAN;
  if (s->period == 0) {
    guint w = MIN (s->window, s->y.len);

    if (isfinite (s->level))
      return s->level;
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
  if (s->period == 0) {
    ((Profile *) s)->level = shd_median_inplace (s->scratch, k);
    return s->level;
  }
  return shd_median_inplace (s->scratch, k);
}

/* d(t) = y(t) - p(t), NAN when t has no profile (or left the rings) */
static double
dev_at (const Profile *s, guint64 t)
{
  double p;

  if (t >= s->n || s->n - t > s->p.len)
    return NAN;
  p = p_at (s, t);
  return isfinite (p) ? y_at (s, t) - p : NAN;
}

/* The pairs (d(t - h), d(t)) of the last `fit` values, summed afresh. */
static void
sums_full (Profile *s)
{
  for (guint h = 1; h <= s->hmax; h++) {
    double num = 0, den = 0;

    for (guint64 t = s->n - MIN ((guint64) s->fit, s->n); t < s->n; t++) {
      double a, b;

      if (t < h)
        continue;
      a = dev_at (s, t - h);
      b = dev_at (s, t);
      if (isfinite (a) && isfinite (b)) {
        num += a * b;
        den += a * a;
      }
    }
    s->num[h - 1] = num;
    s->den[h - 1] = den;
  }
  s->since_full = 0;
}

static void
profile_update (ShdModel *m, double v)
{
  Profile *s = (Profile *) m;
  guint64 t, old;

  shd_ring_push (&s->p, profile_at (s, s->n));
  shd_ring_push (&s->y, log1p (MAX (v, 0)));
  s->n++;
  s->level = NAN;
  s->range_valid = FALSE;
  if (++s->since_full >= 16 * (guint64) s->fit) {
    sums_full (s);
    return;
  }
  /* the new value's pairs come in, those of the value `fit` back go out */
  t = s->n - 1;
  for (guint h = 1; h <= s->hmax; h++) {
    double a, b;

    if (t >= h && isfinite (a = dev_at (s, t - h)) && isfinite (b = dev_at (s, t))) {
      s->num[h - 1] += a * b;
      s->den[h - 1] += a * a;
    }
    if (s->n > s->fit) {
      old = s->n - 1 - s->fit;
      if (old >= h && isfinite (a = dev_at (s, old - h)) && isfinite (b = dev_at (s, old))) {
        s->num[h - 1] -= a * b;
        s->den[h - 1] -= a * a;
      }
    }
  }
}

/* phi_h: the least-squares slope through the origin of d(t) on d(t - h)
 * over the last `fit` values, in [0, 1]; beyond hmax, phi_hmax^(h/hmax). */
static double
phi_h (const Profile *s, guint h)
{
  double den;

  if (h > s->hmax)
    return pow (phi_h (s, s->hmax), (double) h / s->hmax);
  den = s->den[h - 1];
  return den > 1e-12 ? CLAMP (s->num[h - 1] / den, 0, 1) : 0;
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
  g_free (s->num);
  g_free (s->den);
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
   * apart over the last fit, and the pair leaving the window reaches back
   * fit + hmax */
  span = period ? (cycles + 1) * period : window;
  shd_ring_init (&s->y, MAX (span, fit + s->hmax + 2) + 2);
  shd_ring_init (&s->p, fit + s->hmax + 2);
  s->scratch = g_new (double, MAX (cycles, window));
  s->num = g_new0 (double, s->hmax);
  s->den = g_new0 (double, s->hmax);
  s->level = NAN;
  return &s->base;
}
