/* Spike detection on synthetic series: onsets and ends where they belong,
 * nothing on noise. */
#include "spike.h"
#include "synth.h"

typedef struct {
  guint onsets, ends;
  guint64 onset_at[16], onset_est[16], end_at[16], end_est[16];
  const char *onset_reason[16], *end_reason[16];
} Events;

static void
feed (ShdSpikeDetector *d, double x, guint64 t, Events *ev)
{
  ShdSpikeReport r;

  switch (shd_spike_update (d, x, &r)) {
  case SHD_SPIKE_ONSET:
    if (ev->onsets < 16) {
      ev->onset_at[ev->onsets] = t;
      ev->onset_est[ev->onsets] = r.onset;
      ev->onset_reason[ev->onsets] = r.reason;
    }
    ev->onsets++;
    g_assert_true (r.in_spike);
    break;
  case SHD_SPIKE_END:
    if (ev->ends < 16) {
      ev->end_at[ev->ends] = t;
      ev->end_est[ev->ends] = r.end;
      ev->end_reason[ev->ends] = r.reason;
    }
    ev->ends++;
    g_assert_false (r.in_spike);
    break;
  case SHD_SPIKE_NONE:
    break;
  }
}

static void
test_median (void)
{
  double a[] = { 5, 1, 4, 2, 3 };
  double b[] = { 8, 2, 6, 4 };
  double c[] = { 7, 7, 7, 1, 7, 7 };
  double d[] = { 3 };

  g_assert_cmpfloat (shd_median_inplace (a, 5), ==, 3);
  g_assert_cmpfloat (shd_median_inplace (b, 4), ==, 5);
  g_assert_cmpfloat (shd_median_inplace (c, 6), ==, 7);
  g_assert_cmpfloat (shd_median_inplace (d, 1), ==, 3);
}

static void
test_median_random (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (1);

  for (guint round = 0; round < 200; round++) {
    guint n = g_rand_int_range (r, 1, 80);
    double v[80];
    double sorted[80];

    for (guint i = 0; i < n; i++)
      v[i] = sorted[i] = g_rand_int_range (r, 0, 10);   /* many ties */
    for (guint i = 1; i < n; i++)
      for (guint j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
        double t = sorted[j];
        sorted[j] = sorted[j - 1];
        sorted[j - 1] = t;
      }
    g_assert_cmpfloat (shd_median_inplace (v, n), ==,
                       n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2);
  }
}

static void
test_noise_never_flaps (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (17);
  ShdSpikeConfig c;
  g_autoptr (ShdSpikeDetector) d = NULL;
  Events ev = { 0 };

  shd_spike_config_init (&c);
  d = shd_spike_new (&c);
  for (guint64 t = 0; t < 50000; t++) {
    double x = 1000 + 50 * synth_gauss (r);
    /* Isolated wild samples are noise too. */
    if (t % 397 == 0)
      x += 800;
    feed (d, x, t, &ev);
  }
  g_assert_cmpuint (ev.onsets, ==, 0);
  g_assert_false (shd_spike_active (d));
}

static void
test_noise_with_slow_drift (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (23);
  ShdSpikeConfig c;
  g_autoptr (ShdSpikeDetector) d = NULL;
  Events ev = { 0 };

  /* A daily-cycle-like slow swing is load moving, not a spike. */
  shd_spike_config_init (&c);
  d = shd_spike_new (&c);
  for (guint64 t = 0; t < 40000; t++)
    feed (d, 1000 + 400 * sin (2 * G_PI * t / 20000.0) + 20 * synth_gauss (r), t, &ev);
  g_assert_cmpuint (ev.onsets, ==, 0);
}

static void
test_step_spike (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (29);
  ShdSpikeConfig c;
  g_autoptr (ShdSpikeDetector) d = NULL;
  Events ev = { 0 };

  shd_spike_config_init (&c);
  d = shd_spike_new (&c);
  for (guint64 t = 0; t < 1500; t++) {
    double x = 200 + 10 * synth_gauss (r);
    if (t >= 500 && t < 620)
      x += 150;                 /* 15 sigma */
    feed (d, x, t, &ev);
  }
  g_assert_cmpuint (ev.onsets, ==, 1);
  g_assert_cmpuint (ev.ends, ==, 1);
  g_assert_cmpstr (ev.onset_reason[0], ==, "z-score");
  /* Confirmed on the third sample, dated to the first. */
  g_assert_cmpuint (ev.onset_at[0], ==, 502);
  g_assert_cmpuint (ev.onset_est[0], ==, 500);
  g_assert_cmpstr (ev.end_reason[0], ==, "returned");
  g_assert_cmpuint (ev.end_at[0], >=, 620);
  g_assert_cmpuint (ev.end_at[0], <=, 628);
  g_assert_cmpuint (ev.end_est[0], ==, 620);
}

static void
test_noisy_spike_holds (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (31);
  ShdSpikeConfig c;
  g_autoptr (ShdSpikeDetector) d = NULL;
  Events ev = { 0 };

  /* A spike whose own noise dips near the baseline now and then must not
   * end and restart. */
  shd_spike_config_init (&c);
  d = shd_spike_new (&c);
  for (guint64 t = 0; t < 3000; t++) {
    double x = 100 + 5 * synth_gauss (r);
    if (t >= 1000 && t < 2000)
      x += 60 + 30 * synth_gauss (r);
    feed (d, x, t, &ev);
  }
  g_assert_cmpuint (ev.onsets, ==, 1);
  g_assert_cmpuint (ev.ends, ==, 1);
  g_assert_cmpuint (ev.onset_at[0], <=, 1005);
  g_assert_cmpuint (ev.end_at[0], >=, 2000);
  g_assert_cmpuint (ev.end_at[0], <=, 2010);
}

static void
test_cusum_moderate (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (37);
  ShdSpikeConfig c;
  g_autoptr (ShdSpikeDetector) d = NULL;
  Events ev = { 0 };

  shd_spike_config_init (&c);
  d = shd_spike_new (&c);
  for (guint64 t = 0; t < 2000; t++) {
    double x = 500 + 10 * synth_gauss (r);
    if (t >= 800 && t < 1100)
      x += 30;                  /* 3 sigma: below z_on on most samples */
    feed (d, x, t, &ev);
  }
  g_assert_cmpuint (ev.onsets, ==, 1);
  g_assert_cmpuint (ev.onset_at[0], >=, 800);
  g_assert_cmpuint (ev.onset_at[0], <=, 810);
  g_assert_cmpuint (ev.onset_est[0], >=, 795);
  g_assert_cmpuint (ev.ends, ==, 1);
  g_assert_cmpuint (ev.end_at[0], >=, 1100);
  g_assert_cmpuint (ev.end_at[0], <=, 1110);
}

static guint
count_onsets (double sensitivity, double height, guint len)
{
  ShdSpikeConfig c;
  g_autoptr (ShdSpikeDetector) d = NULL;
  Events ev = { 0 };
  guint64 t = 0;

  /* A near-flat baseline with a sigma floor of 10 makes z exact:
   * height / 10. */
  shd_spike_config_init (&c);
  shd_spike_config_set_sensitivity (&c, sensitivity);
  c.min_scale = 10;
  d = shd_spike_new (&c);
  for (guint burst = 0; burst < 4; burst++) {
    for (guint i = 0; i < 200; i++, t++)
      feed (d, 100 + t % 3, t, &ev);
    for (guint i = 0; i < len; i++, t++)
      feed (d, 101 + height, t, &ev);
  }
  for (guint i = 0; i < 200; i++, t++)
    feed (d, 100 + t % 3, t, &ev);
  g_assert_cmpuint (ev.ends, ==, ev.onsets);
  return ev.onsets;
}

static void
test_sensitivity (void)
{
  /* Four bursts of 5 sigma, 3 samples each. */
  g_assert_cmpuint (count_onsets (1.0, 50, 3), ==, 4);
  g_assert_cmpuint (count_onsets (0.5, 50, 3), ==, 0);
  /* 3 sigma bursts only count at raised sensitivity. */
  g_assert_cmpuint (count_onsets (1.0, 30, 3), ==, 0);
  g_assert_cmpuint (count_onsets (1.5, 30, 3), ==, 4);
}

static void
test_flat_baseline (void)
{
  ShdSpikeConfig c;
  g_autoptr (ShdSpikeDetector) d = NULL;
  Events ev = { 0 };
  guint64 t = 0;

  /* An idle disk: MAD 0.  One-unit jitter must not count, a burst must. */
  shd_spike_config_init (&c);
  c.min_scale = 2;
  d = shd_spike_new (&c);
  for (; t < 200; t++)
    feed (d, t % 50 == 0 ? 1 : 0, t, &ev);
  g_assert_cmpuint (ev.onsets, ==, 0);
  for (; t < 220; t++)
    feed (d, 40, t, &ev);
  for (; t < 300; t++)
    feed (d, 0, t, &ev);
  g_assert_cmpuint (ev.onsets, ==, 1);
  g_assert_cmpuint (ev.ends, ==, 1);
  g_assert_cmpuint (ev.onset_est[0], ==, 200);
  g_assert_cmpuint (ev.end_est[0], ==, 220);
}

static void
test_level_shift (void)
{
  ShdSpikeConfig c;
  g_autoptr (ShdSpikeDetector) d = NULL;
  Events ev = { 0 };
  guint64 t = 0;

  shd_spike_config_init (&c);
  c.max_len = 100;
  d = shd_spike_new (&c);
  for (; t < 100; t++)
    feed (d, 100 + (t % 5), t, &ev);
  for (; t < 600; t++)
    feed (d, 300 + (t % 5), t, &ev);
  /* One spike, ended as a new level, then quiet on the new level. */
  g_assert_cmpuint (ev.onsets, ==, 1);
  g_assert_cmpuint (ev.ends, ==, 1);
  g_assert_cmpstr (ev.end_reason[0], ==, "level-shift");
  g_assert_false (shd_spike_active (d));
}

static void
test_warmup (void)
{
  ShdSpikeConfig c;
  g_autoptr (ShdSpikeDetector) d = NULL;
  ShdSpikeReport r;

  shd_spike_config_init (&c);
  d = shd_spike_new (&c);
  for (guint t = 0; t < c.min_baseline; t++)
    g_assert_cmpint (shd_spike_update (d, t == 3 ? 1e6 : 10, &r), ==, SHD_SPIKE_NONE);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/spike/median", test_median);
  g_test_add_func ("/spike/median-random", test_median_random);
  g_test_add_func ("/spike/noise-never-flaps", test_noise_never_flaps);
  g_test_add_func ("/spike/slow-drift", test_noise_with_slow_drift);
  g_test_add_func ("/spike/step", test_step_spike);
  g_test_add_func ("/spike/noisy-spike-holds", test_noisy_spike_holds);
  g_test_add_func ("/spike/cusum-moderate", test_cusum_moderate);
  g_test_add_func ("/spike/sensitivity", test_sensitivity);
  g_test_add_func ("/spike/flat-baseline", test_flat_baseline);
  g_test_add_func ("/spike/level-shift", test_level_shift);
  g_test_add_func ("/spike/warmup", test_warmup);
  return g_test_run ();
}
