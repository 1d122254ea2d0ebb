/* Spike detection: robust z-score plus CUSUM, with hysteresis. */
#include "spike.h"
#include "ring.h"

#include <math.h>

/* MAD of a normal sample times this estimates its sigma. */
#define MAD_TO_SIGMA 1.4826

struct _ShdSpikeDetector {
  ShdSpikeConfig c;
  ShdRing base;                 /* baseline values, frozen during a spike */
  double *scratch;
  guint64 n;                    /* samples seen */
  gboolean in_spike;
  guint run_on;                 /* consecutive samples above z_on */
  double cusum;
  guint64 cusum_start;          /* where the current CUSUM excursion began */
  double end_cusum;
  guint64 end_start;
  guint64 onset;
  guint64 last_end;
  gboolean ended_once;
};

void
shd_spike_config_init (ShdSpikeConfig *c)
{
  *c = (ShdSpikeConfig) {
    .window = 120,
    .min_baseline = 30,
    .z_on = 4.0,
    .k_on = 3,
    .cusum_k = 1.0,
    .cusum_h = 10.0,
    .z_off = 1.5,
    .end_h = 8.0,
    .min_scale = 1.0,
    .rel_scale = 0.02,
    .cooldown = 10,
    .max_len = 0,
  };
}

void
shd_spike_config_set_sensitivity (ShdSpikeConfig *c, double sensitivity)
{
  ShdSpikeConfig d;

  g_return_if_fail (sensitivity > 0);
  shd_spike_config_init (&d);
  c->z_on = d.z_on / sensitivity;
  c->cusum_k = d.cusum_k / sensitivity;
  c->cusum_h = d.cusum_h / sensitivity;
}

ShdSpikeDetector *
shd_spike_new (const ShdSpikeConfig *c)
{
  ShdSpikeDetector *d;

  g_return_val_if_fail (c->window >= 3, NULL);
  g_return_val_if_fail (c->min_baseline >= 3 && c->min_baseline <= c->window, NULL);
  g_return_val_if_fail (c->k_on >= 1 && c->z_on > c->z_off, NULL);
  g_return_val_if_fail (c->cusum_h > 0 && c->end_h > 0, NULL);
  d = g_new0 (ShdSpikeDetector, 1);
  d->c = *c;
  shd_ring_init (&d->base, c->window);
  d->scratch = g_new (double, c->window);
  return d;
}

void
shd_spike_free (ShdSpikeDetector *d)
{
  if (d == NULL)
    return;
  shd_ring_clear (&d->base);
  g_free (d->scratch);
  g_free (d);
}

gboolean
shd_spike_active (const ShdSpikeDetector *d)
{
  return d->in_spike;
}

static void
swap (double *a, double *b)
{
  double t = *a;
  *a = *b;
  *b = t;
}

/* Quickselect (Hoare partition): the k-th smallest in expected O(n). */
static double
select_kth (double *v, gsize n, gsize k)
{
  gssize lo = 0, hi = (gssize) n - 1;

  while (hi > lo) {
    double pivot = v[lo + (hi - lo) / 2];
    gssize i = lo, j = hi;

    while (i <= j) {
      while (v[i] < pivot)
        i++;
      while (v[j] > pivot)
        j--;
      if (i <= j) {
        swap (&v[i], &v[j]);
        i++;
        j--;
      }
    }
    /* Now v[lo..j] <= pivot <= v[i..hi], and anything between equals it. */
    if ((gssize) k <= j)
      hi = j;
    else if ((gssize) k >= i)
      lo = i;
    else
      break;
  }
  return v[k];
}

double
shd_median_inplace (double *v, gsize n)
{
  double a, b;

  g_return_val_if_fail (n > 0, NAN);
  if (n % 2)
    return select_kth (v, n, n / 2);
  a = select_kth (v, n, n / 2 - 1);
  b = select_kth (v, n, n / 2);   /* the lower half stays below it */
  return (a + b) / 2;
}

static void
baseline_stats (ShdSpikeDetector *d, double *median, double *scale)
{
  guint n = d->base.len;
  double mad;

  shd_ring_copy (&d->base, d->scratch);
  *median = shd_median_inplace (d->scratch, n);
  for (guint i = 0; i < n; i++)
    d->scratch[i] = fabs (d->scratch[i] - *median);
  mad = shd_median_inplace (d->scratch, n);
  /* A flat or quantised baseline has MAD 0: the floors stop a single
   * unit of change from looking like infinite sigma. */
  *scale = MAX (MAD_TO_SIGMA * mad, MAX (d->c.min_scale, d->c.rel_scale * fabs (*median)));
}

static void
start_spike (ShdSpikeDetector *d, guint64 onset, const char *reason,
             ShdSpikeReport *out)
{
  d->in_spike = TRUE;
  d->onset = onset;
  d->end_cusum = 0;
  d->end_start = d->n;
  out->event = SHD_SPIKE_ONSET;
  out->onset = onset;
  out->reason = reason;
}

static void
end_spike (ShdSpikeDetector *d, guint64 end, const char *reason, ShdSpikeReport *out)
{
  d->in_spike = FALSE;
  d->ended_once = TRUE;
  d->last_end = d->n;
  d->run_on = 0;
  d->cusum = 0;
  out->event = SHD_SPIKE_END;
  out->onset = d->onset;
  out->end = end;
  out->reason = reason;
}

ShdSpikeEvent
shd_spike_update (ShdSpikeDetector *d, double x, ShdSpikeReport *out)
{
  const ShdSpikeConfig *c = &d->c;
  ShdSpikeReport r = { .event = SHD_SPIKE_NONE, .z = 0 };
  double median, scale, z;
  guint64 t = d->n;

  g_return_val_if_fail (isfinite (x), SHD_SPIKE_NONE);
  if (d->base.len < c->min_baseline) {
    shd_ring_push (&d->base, x);
    d->n++;
    r.baseline = x;
    if (out)
      *out = r;
    return SHD_SPIKE_NONE;
  }
  baseline_stats (d, &median, &scale);
  z = (x - median) / scale;
  r.z = z;
  r.baseline = median;
  r.scale = scale;

  if (!d->in_spike) {
    gboolean cooling = d->ended_once && t - d->last_end < c->cooldown;

    d->run_on = z > c->z_on ? d->run_on + 1 : 0;
    /* Clipping keeps one wild sample from tripping the CUSUM alone. */
    if (d->cusum == 0)
      d->cusum_start = t;
    d->cusum = MAX (0, d->cusum + MIN (z, c->z_on) - c->cusum_k);
    if (!cooling && d->run_on >= c->k_on)
      start_spike (d, t + 1 - d->run_on, "z-score", &r);
    else if (!cooling && d->cusum > c->cusum_h)
      start_spike (d, d->cusum_start, "cusum", &r);
    else if (z <= c->z_on)
      /* Outliers stay out of the baseline; ordinary load moves it. */
      shd_ring_push (&d->base, x);
  } else {
    if (d->end_cusum == 0)
      d->end_start = t;
    d->end_cusum = MAX (0, d->end_cusum + c->z_off - CLAMP (z, -1.0, c->z_on));
    if (d->end_cusum > c->end_h) {
      end_spike (d, d->end_start, "returned", &r);
    } else if (c->max_len > 0 && t + 1 - d->onset >= c->max_len) {
      /* Load that stays up is the new normal: rebuild the baseline. */
      end_spike (d, t + 1, "level-shift", &r);
      shd_ring_reset (&d->base);
    }
  }
  d->n++;
  r.in_spike = d->in_spike;
  r.cusum = d->cusum;
  if (d->in_spike && r.event == SHD_SPIKE_NONE)
    r.onset = d->onset;
  if (out)
    *out = r;
  return r.event;
}
