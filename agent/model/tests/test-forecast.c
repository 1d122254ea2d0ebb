/* Known-answer tests for the forecasters and the model selector. */
#include "forecast.h"
#include "season.h"
#include "synth.h"

#include <math.h>

#define LEVEL 0.95

static double
predict1 (ShdModel *m, guint h)
{
  ShdPrediction p;

  g_assert_true (shd_model_predict (m, h, LEVEL, &p));
  return p.point;
}

static void
test_normal_quantile (void)
{
  g_assert_cmpfloat_with_epsilon (shd_normal_quantile (0.975), 1.959964, 1e-5);
  g_assert_cmpfloat_with_epsilon (shd_normal_quantile (0.5), 0, 1e-9);
  g_assert_cmpfloat_with_epsilon (shd_normal_quantile (0.01), -2.326348, 1e-5);
}

static void
test_naive (void)
{
  g_autoptr (ShdModel) m = shd_model_new_naive ();
  ShdPrediction p;

  g_assert_false (shd_model_predict (m, 1, LEVEL, &p));
  shd_model_update (m, 3);
  shd_model_update (m, 7);
  g_assert_cmpfloat (predict1 (m, 1), ==, 7);
  g_assert_cmpfloat (predict1 (m, 10), ==, 7);
  g_assert_cmpstr (shd_model_name (m), ==, "naive");
}

static void
test_snaive (void)
{
  g_autoptr (ShdModel) m = shd_model_new_snaive (4);
  const double s[] = { 10, 20, 30, 40 };

  for (guint i = 0; i < 3; i++)
    shd_model_update (m, s[i]);
  g_assert_false (shd_model_ready (m));
  shd_model_update (m, s[3]);
  shd_model_update (m, s[0] + 1);      /* time 4, phase 0 */
  /* Next is phase 1: 20, then 30, 40, then the new phase-0 value 11. */
  g_assert_cmpfloat (predict1 (m, 1), ==, 20);
  g_assert_cmpfloat (predict1 (m, 2), ==, 30);
  g_assert_cmpfloat (predict1 (m, 3), ==, 40);
  g_assert_cmpfloat (predict1 (m, 4), ==, 11);
  g_assert_cmpfloat (predict1 (m, 5), ==, 20);
}

static void
test_ewma (void)
{
  g_autoptr (ShdModel) m = shd_model_new_ewma (0.5);

  shd_model_update (m, 8);
  shd_model_update (m, 0);
  shd_model_update (m, 0);
  /* 8 -> 4 -> 2 */
  g_assert_cmpfloat_with_epsilon (predict1 (m, 1), 2, 1e-12);
  g_assert_cmpfloat_with_epsilon (predict1 (m, 5), 2, 1e-12);
}

static double seasonal_line (guint t);

static void
test_ewma_tuned (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (19);
  g_autoptr (ShdModel) tuned = shd_model_new_ewma_tuned ();
  g_autoptr (ShdModel) slow = shd_model_new_ewma (0.1);
  g_autoptr (ShdModel) fast = shd_model_new_ewma (0.9);
  double walk = 100;

  g_assert_cmpstr (shd_model_name (tuned), ==, "ewma");
  /* White noise: the slowest candidate wins. */
  for (guint t = 0; t < 500; t++) {
    double y = 100 + synth_gauss (r);
    shd_model_update (tuned, y);
    shd_model_update (slow, y);
  }
  g_assert_cmpfloat (predict1 (tuned, 1), ==, predict1 (slow, 1));
  /* A random walk: the fastest. */
  for (guint t = 0; t < 500; t++) {
    walk += 5 * synth_gauss (r);
    shd_model_update (tuned, walk);
    shd_model_update (fast, walk);
  }
  g_assert_cmpfloat (predict1 (tuned, 1), ==, predict1 (fast, 1));
}

static void
test_hw_tuned (void)
{
  g_autoptr (ShdModel) m = shd_model_new_hw_tuned (4, 1.0);

  /* Every candidate recovers an exact season, so the tuned one does. */
  for (guint t = 0; t < 40; t++)
    shd_model_update (m, seasonal_line (t));
  g_assert_cmpstr (shd_model_name (m), ==, "hw");
  for (guint h = 1; h <= 5; h++)
    g_assert_cmpfloat_with_epsilon (predict1 (m, h), seasonal_line (39 + h), 1e-9);
}

static void
test_holt_linear (void)
{
  g_autoptr (ShdModel) m = shd_model_new_holt (0.5, 0.3, 1.0);

  /* Undamped Holt tracks a line exactly. */
  for (guint t = 0; t < 20; t++)
    shd_model_update (m, 5 + 2.0 * t);
  g_assert_cmpfloat_with_epsilon (predict1 (m, 1), 5 + 2.0 * 20, 1e-9);
  g_assert_cmpfloat_with_epsilon (predict1 (m, 10), 5 + 2.0 * 29, 1e-9);
}

static void
test_holt_damped (void)
{
  g_autoptr (ShdModel) m = shd_model_new_holt (0.5, 0.3, 0.8);

  shd_model_update (m, 0);
  shd_model_update (m, 10);            /* level 10, trend 10 */
  /* level + (phi + phi^2) * trend */
  g_assert_cmpfloat_with_epsilon (predict1 (m, 2), 10 + (0.8 + 0.64) * 10, 1e-9);
  /* Far ahead the trend dies out: level + trend * phi / (1 - phi). */
  g_assert_cmpfloat_with_epsilon (predict1 (m, 500), 10 + 10 * 0.8 / 0.2, 1e-6);
}

static double
seasonal_line (guint t)
{
  static const double season[] = { 3, -1, 4, -6 };

  return 100 + 0.5 * t + season[t % 4];
}

static void
test_hw_known_answer (void)
{
  g_autoptr (ShdModel) m = shd_model_new_hw (4, 0.3, 0.1, 0.2, 1.0);

  for (guint t = 0; t < 7; t++)
    shd_model_update (m, seasonal_line (t));
  g_assert_false (shd_model_ready (m));
  for (guint t = 7; t < 40; t++)
    shd_model_update (m, seasonal_line (t));
  /* Trend plus a zero-mean season is recovered exactly. */
  for (guint h = 1; h <= 9; h++)
    g_assert_cmpfloat_with_epsilon (predict1 (m, h), seasonal_line (39 + h), 1e-9);
  /* Zero residuals, so a degenerate interval. */
  g_assert_cmpfloat_with_epsilon (shd_model_sigma (m), 0, 1e-9);
}

static void
test_hw_damped_noisy (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (7);
  g_autoptr (ShdModel) m = shd_model_new_hw (12, 0.2, 0.01, 0.3, 0.9);
  double err = 0;
  guint n = 0;

  for (guint t = 0; t < 600; t++) {
    double y = 50 + 20 * sin (2 * G_PI * t / 12) + synth_gauss (r);
    if (t > 100) {
      err += fabs (y - predict1 (m, 1));
      n++;
    }
    shd_model_update (m, y);
  }
  /* Close to the noise floor (E|N(0,1)| = 0.8). */
  g_assert_cmpfloat (err / n, <, 1.2);
}

static void
test_levinson_durbin (void)
{
  /* AR(1) with phi 0.5: r_k = 0.5^k. */
  const double r1[] = { 1, 0.5, 0.25, 0.125 };
  /* AR(2) with phi (0.5, -0.3): r1 = phi1/(1-phi2), r2 = phi1 r1 + phi2. */
  double rho1 = 0.5 / 1.3, rho2 = 0.5 * rho1 - 0.3;
  const double r2[] = { 1, rho1, rho2, 0.5 * rho2 - 0.3 * rho1 };
  const double bad[] = { 1, 2 };
  double phi[3], err;

  g_assert_true (shd_levinson_durbin (r1, 3, phi, &err));
  g_assert_cmpfloat_with_epsilon (phi[0], 0.5, 1e-12);
  g_assert_cmpfloat_with_epsilon (phi[1], 0, 1e-12);
  g_assert_cmpfloat_with_epsilon (phi[2], 0, 1e-12);
  g_assert_cmpfloat_with_epsilon (err, 0.75, 1e-12);
  g_assert_true (shd_levinson_durbin (r2, 3, phi, &err));
  g_assert_cmpfloat_with_epsilon (phi[0], 0.5, 1e-12);
  g_assert_cmpfloat_with_epsilon (phi[1], -0.3, 1e-12);
  g_assert_cmpfloat_with_epsilon (phi[2], 0, 1e-12);
  g_assert_false (shd_levinson_durbin (bad, 1, phi, &err));
}

static void
test_ar_fit (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (42);
  g_autoptr (ShdModel) m = shd_model_new_ar (2, 4000);
  double x1 = 0, x2 = 0, phi[2];

  for (guint t = 0; t < 4000; t++) {
    double x = 0.5 * x1 - 0.3 * x2 + synth_gauss (r);
    shd_model_update (m, 10 + x);
    x2 = x1;
    x1 = x;
  }
  g_assert_true (shd_model_ar_coefficients (m, phi, 2));
  g_assert_cmpfloat_with_epsilon (phi[0], 0.5, 0.05);
  g_assert_cmpfloat_with_epsilon (phi[1], -0.3, 0.05);
  /* Far ahead an AR forecast returns to the mean. */
  g_assert_cmpfloat_with_epsilon (predict1 (m, 200), 10, 0.1);
  /* One step ahead follows the recursion from the last values. */
  g_assert_cmpfloat_with_epsilon (predict1 (m, 1),
                                  10 + 0.5 * x1 - 0.3 * x2, 0.25);
}

static void
test_ar_constant (void)
{
  g_autoptr (ShdModel) m = shd_model_new_ar (3, 16);

  for (guint t = 0; t < 30; t++)
    shd_model_update (m, 4.5);
  g_assert_cmpfloat_with_epsilon (predict1 (m, 3), 4.5, 1e-12);
}

static void
test_interval_coverage (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (3);
  g_autoptr (ShdModel) m = shd_model_new_ewma (0.1);
  guint inside = 0, n = 0;

  for (guint t = 0; t < 5000; t++) {
    double y = 20 + 2 * synth_gauss (r);
    ShdPrediction p;
    if (shd_model_predict (m, 1, LEVEL, &p) && p.has_interval) {
      g_assert_cmpfloat (p.lo, <, p.point);
      g_assert_cmpfloat (p.hi, >, p.point);
      inside += y >= p.lo && y <= p.hi;
      n++;
    }
    shd_model_update (m, y);
  }
  g_assert_cmpuint (n, >, 4900);
  g_assert_cmpfloat ((double) inside / n, >, 0.92);
  g_assert_cmpfloat ((double) inside / n, <, 0.975);
}

static void
test_detect_period (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (11);
  double y[400];

  for (guint t = 0; t < G_N_ELEMENTS (y); t++)
    y[t] = 10 * sin (2 * G_PI * t / 24) + synth_gauss (r);
  g_assert_cmpuint (shd_detect_period (y, G_N_ELEMENTS (y), 2, 96, 0.3), ==, 24);
  /* Not enough cycles in range: nothing. */
  g_assert_cmpuint (shd_detect_period (y, 60, 30, 96, 0.3), ==, 0);
  for (guint t = 0; t < G_N_ELEMENTS (y); t++)
    y[t] = synth_gauss (r);
  g_assert_cmpuint (shd_detect_period (y, G_N_ELEMENTS (y), 2, 96, 0.3), ==, 0);
  /* A random walk correlates with itself at every lag: no season. */
  y[0] = 0;
  for (guint t = 1; t < G_N_ELEMENTS (y); t++)
    y[t] = y[t - 1] + synth_gauss (r);
  g_assert_cmpuint (shd_detect_period (y, G_N_ELEMENTS (y), 2, 96, 0.3), ==, 0);
  for (guint t = 0; t < G_N_ELEMENTS (y); t++)
    y[t] = 1;
  g_assert_cmpuint (shd_detect_period (y, G_N_ELEMENTS (y), 2, 96, 0.3), ==, 0);
}

static void
test_selector_seasonal (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (5);
  ShdForecastConfig c;
  g_autoptr (ShdForecaster) f = NULL;
  ShdPrediction p;
  ShdModelKind best;

  shd_forecast_config_init (&c);
  c.max_period = 40;
  f = shd_forecaster_new (&c);
  g_assert_null (shd_forecaster_model (f, SHD_MODEL_HW));
  for (guint t = 0; t < 600; t++)
    shd_forecaster_update (f, 100 + 30 * sin (2 * G_PI * t / 16) + synth_gauss (r));
  g_assert_cmpuint (shd_forecaster_period (f), ==, 16);
  g_assert_nonnull (shd_forecaster_model (f, SHD_MODEL_HW));
  best = shd_forecaster_best (f);
  g_assert_true (best == SHD_MODEL_HW || best == SHD_MODEL_SNAIVE ||
                 best == SHD_MODEL_AR);
  g_assert_cmpfloat (shd_forecaster_mase (f, best), <,
                     0.8 * shd_forecaster_mase (f, SHD_MODEL_NAIVE));
  g_assert_true (shd_forecaster_predict (f, 1, &p));
  g_assert_true (p.has_interval);
  g_assert_cmpfloat_with_epsilon (p.point, 100 + 30 * sin (2 * G_PI * 600 / 16), 4);
}

static void
test_selector_random_walk (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (9);
  ShdForecastConfig c;
  g_autoptr (ShdForecaster) f = NULL;
  double y = 1000;
  guint naive = 0;

  shd_forecast_config_init (&c);
  f = shd_forecaster_new (&c);
  g_assert_cmpint (shd_forecaster_best (f), ==, SHD_MODEL_NAIVE);
  for (guint t = 0; t < 2000; t++) {
    y += 10 * synth_gauss (r);
    shd_forecaster_update (f, y);
    if (t >= 200)
      naive += shd_forecaster_best (f) == SHD_MODEL_NAIVE;
  }
  /* Nothing beats naive on a random walk; a rolling window may be fooled
   * by luck now and then, but rarely. */
  g_test_message ("naive chosen %u of 1800 times", naive);
  g_assert_cmpuint (naive, >, 1800 * 9 / 10);
  g_assert_cmpfloat_with_epsilon (shd_forecaster_mase (f, SHD_MODEL_NAIVE), 1, 1e-9);
}

static void
test_selector_noise (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (13);
  ShdForecastConfig c;
  g_autoptr (ShdForecaster) f = NULL;
  ShdModelKind best;

  /* White noise: smoothing wins clearly over naive. */
  shd_forecast_config_init (&c);
  c.horizon = 3;
  f = shd_forecaster_new (&c);
  for (guint t = 0; t < 1000; t++)
    shd_forecaster_update (f, 50 + 5 * synth_gauss (r));
  best = shd_forecaster_best (f);
  g_assert_true (best == SHD_MODEL_EWMA || best == SHD_MODEL_LEVEL ||
                 best == SHD_MODEL_MEDIAN);
  g_assert_cmpfloat (shd_forecaster_mase (f, best), <, 0.85);
  g_assert_cmpuint (shd_forecaster_period (f), ==, 0);
}

static void
test_selector_constant (void)
{
  ShdForecastConfig c;
  g_autoptr (ShdForecaster) f = NULL;
  ShdPrediction p;

  shd_forecast_config_init (&c);
  f = shd_forecaster_new (&c);
  for (guint t = 0; t < 300; t++)
    shd_forecaster_update (f, 7);
  /* MASE is undefined on a flat series: naive, and a flat forecast. */
  g_assert_cmpint (shd_forecaster_best (f), ==, SHD_MODEL_NAIVE);
  g_assert_cmpuint (shd_forecaster_period (f), ==, 0);
  g_assert_true (shd_forecaster_predict (f, 5, &p));
  g_assert_cmpfloat (p.point, ==, 7);
  g_assert_cmpfloat (p.hi - p.lo, ==, 0);
}


static void
test_profile_level (void)
{
  g_autoptr (ShdModel) m = shd_model_new_profile (0, 3, 5, 16);
  const double v[] = { 10, 10, 1000, 10, 10 };

  g_assert_false (shd_model_ready (m));
  for (guint i = 0; i < G_N_ELEMENTS (v); i++)
    shd_model_update (m, v[i]);
  /* the median of the last five ignores the burst; with no history of
   * deviations, phi is 0 and the forecast is the level */
  g_assert_cmpfloat_with_epsilon (predict1 (m, 1), 10, 1e-9);
  g_assert_cmpfloat_with_epsilon (predict1 (m, 7), 10, 1e-9);
  g_assert_cmpstr (shd_model_name (m), ==, "level");
}

static void
test_profile_season (void)
{
  g_autoptr (ShdModel) m = shd_model_new_profile (4, 3, 24, 16);
  const double s[] = { 10, 20, 30, 400 };

  /* three cycles, the second with a burst at phase 1 */
  for (guint c = 0; c < 3; c++)
    for (guint i = 0; i < 4; i++)
      shd_model_update (m, s[i] + (c == 1 && i == 1 ? 5000 : 0));
  g_assert_cmpstr (shd_model_name (m), ==, "profile");
  /* every value was its profile: no deviation, so the forecast is the
   * median at each phase, the burst ignored */
  g_assert_cmpfloat_with_epsilon (predict1 (m, 1), 10, 1e-6);
  g_assert_cmpfloat_with_epsilon (predict1 (m, 2), 20, 1e-6);
  g_assert_cmpfloat_with_epsilon (predict1 (m, 4), 400, 1e-6);
  g_assert_cmpfloat_with_epsilon (predict1 (m, 6), 20, 1e-6);
}

static void
test_profile_persistence (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (3);
  g_autoptr (ShdModel) m = shd_model_new_profile (0, 3, 24, 96);
  double d = 0;

  /* log(1 + y) around log(100) with AR(1) deviations, phi 0.8 */
  for (guint t = 0; t < 3000; t++) {
    d = 0.8 * d + 0.2 * synth_gauss (r);
    shd_model_update (m, expm1 (log1p (100) + d));
  }
  {
    double p1 = predict1 (m, 1), p30 = predict1 (m, 30);

    /* one step ahead it follows the deviation; far ahead the level */
    g_assert_cmpfloat_with_epsilon (log1p (p1) - log1p (100), 0.8 * d, 0.15);
    g_assert_cmpfloat_with_epsilon (log1p (p30), log1p (100), 0.15);
  }
}

static void
test_season_skill (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (21);
  double y[600], w[600];
  double walk = 1000;

  for (guint t = 0; t < G_N_ELEMENTS (y); t++) {
    y[t] = 100 + 60 * sin (2 * G_PI * t / 48) + 5 * synth_gauss (r);
    walk += 20 * synth_gauss (r);
    w[t] = walk;
  }
  g_assert_cmpfloat (shd_season_skill (y, 600, 48, 1, 3, 24, 96, 48), <, 0.6);
  g_assert_cmpfloat (shd_season_skill (y, 600, 48, 4, 3, 24, 96, 48), <, 0.6);
  /* a wrong period does not hold up */
  g_assert_cmpfloat (shd_season_skill (y, 600, 37, 4, 3, 24, 96, 48), >, 0.8);
  /* a random walk has no season */
  g_assert_cmpfloat (shd_season_skill (w, 600, 48, 1, 3, 24, 96, 48), >, 0.97);
  /* too short to say */
  g_assert_true (isnan (shd_season_skill (y, 90, 48, 1, 3, 24, 96, 48)));
  g_assert_true (isfinite (shd_season_skill (y, 90, 48, 1, 3, 24, 96, 24)));
}

static void
test_calendar (void)
{
  const double cal[] = { 86400, 604800, 0 };
  ShdForecastConfig c;

  shd_forecast_config_init (&c);
  shd_forecast_config_set_calendar (&c, 1800, cal);
  g_assert_cmpuint (c.calendar[0], ==, 48);
  g_assert_cmpuint (c.calendar[1], ==, 336);
  g_assert_cmpuint (c.calendar[2], ==, 0);
  shd_forecast_config_set_calendar (&c, 300, cal);
  g_assert_cmpuint (c.calendar[0], ==, 288);
  g_assert_cmpuint (c.calendar[1], ==, 2016);
  /* at a one-second interval a day is far too long for the short-term
   * forecaster: the seasonal scale has it */
  shd_forecast_config_set_calendar (&c, 1, cal);
  g_assert_cmpuint (c.calendar[0], ==, 0);
}

static void
test_selector_calendar (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (17);
  const double cal[] = { 86400, 0 };
  ShdForecastConfig c;
  g_autoptr (ShdForecaster) f = NULL;
  guint seasons[SHD_MAX_SEASONS];
  ShdPrediction p;

  /* 30-minute buckets, a daily peak; only the calendar day is a
   * candidate, and it is used once it held up out of sample */
  shd_forecast_config_init (&c);
  c.horizon = 4;
  shd_forecast_config_set_calendar (&c, 1800, cal);
  f = shd_forecaster_new (&c);
  for (guint t = 0; t < 48 * 6; t++) {
    double h = t % 48;

    shd_forecaster_update (f, 50 + (h >= 18 && h < 22 ? 500 : 0) + 5 * synth_gauss (r));
  }
  g_assert_cmpuint (shd_forecaster_seasons (f, seasons, SHD_MAX_SEASONS), ==, 1);
  g_assert_cmpuint (seasons[0], ==, 48);
  /* four hours ahead it sees the peak coming: now is 00:00 of day 7 */
  g_assert_true (shd_forecaster_predict (f, 19, &p));
  g_assert_cmpfloat (p.point, >, 300);
  g_assert_true (shd_forecaster_predict (f, 10, &p));
  g_assert_cmpfloat (p.point, <, 100);
}

/* A day whose spike did not come does not cost the season: four days
 * with a spike at the same second, one without, one with; the season
 * stays in use up to the next day's spike (the lifecycle integration
 * run, a day of 50 one-second buckets). */
static void
test_selector_calendar_missed_day (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (23);
  const double cal[] = { 50, 0 };
  ShdForecastConfig c;
  g_autoptr (ShdForecaster) f = NULL;
  guint seasons[SHD_MAX_SEASONS];
  ShdPrediction p;

  shd_forecast_config_init (&c);
  shd_forecast_config_set_calendar (&c, 1, cal);
  g_assert_cmpuint (c.calendar[0], ==, 50);
  f = shd_forecaster_new (&c);
  for (guint t = 0; t < 50 * 6 + 14; t++) {
    guint day = t / 50, h = t % 50;
    gboolean spike = day != 4 && h >= 22 && h < 30;

    shd_forecaster_update (f, spike ? 2000 : 20 + 2 * synth_gauss (r));
    if (day >= 4)
      g_assert_cmpuint (shd_forecaster_seasons (f, seasons, SHD_MAX_SEASONS), ==, 1);
  }
  g_assert_cmpuint (seasons[0], ==, 50);
  /* phase 14 now: the spike 8 buckets ahead is seen */
  g_assert_true (shd_forecaster_predict (f, 9, &p));
  g_assert_cmpfloat (p.point, >, 1000);
}

static void
test_selector_shrinks (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (29);
  ShdForecastConfig c;
  g_autoptr (ShdForecaster) f = NULL;
  ShdPrediction p;
  double y = 0, last = 0;

  /* a random walk with a little noise: a smoother is slightly better
   * than naive, not by 30%: its forecast is moved only part of the way
   * from naive's */
  shd_forecast_config_init (&c);
  f = shd_forecaster_new (&c);
  for (guint t = 0; t < 3000; t++) {
    y += synth_gauss (r);
    last = 1000 + y + 0.7 * synth_gauss (r);
    shd_forecaster_update (f, last);
  }
  g_assert_true (shd_forecaster_predict (f, 1, &p));
  if (shd_forecaster_best (f) != SHD_MODEL_NAIVE) {
    double full;

    g_assert_true (shd_forecaster_point (f, shd_forecaster_best (f), 1, &full));
    g_assert_cmpfloat (fabs (p.point - last), <=, fabs (full - last) + 1e-9);
  } else {
    g_assert_cmpfloat (p.point, ==, last);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/forecast/normal-quantile", test_normal_quantile);
  g_test_add_func ("/forecast/naive", test_naive);
  g_test_add_func ("/forecast/snaive", test_snaive);
  g_test_add_func ("/forecast/ewma", test_ewma);
  g_test_add_func ("/forecast/ewma-tuned", test_ewma_tuned);
  g_test_add_func ("/forecast/hw/tuned", test_hw_tuned);
  g_test_add_func ("/forecast/holt/linear", test_holt_linear);
  g_test_add_func ("/forecast/holt/damped", test_holt_damped);
  g_test_add_func ("/forecast/hw/known-answer", test_hw_known_answer);
  g_test_add_func ("/forecast/hw/damped-noisy", test_hw_damped_noisy);
  g_test_add_func ("/forecast/levinson-durbin", test_levinson_durbin);
  g_test_add_func ("/forecast/ar/fit", test_ar_fit);
  g_test_add_func ("/forecast/ar/constant", test_ar_constant);
  g_test_add_func ("/forecast/interval-coverage", test_interval_coverage);
  g_test_add_func ("/forecast/detect-period", test_detect_period);
  g_test_add_func ("/forecast/selector/seasonal", test_selector_seasonal);
  g_test_add_func ("/forecast/selector/random-walk", test_selector_random_walk);
  g_test_add_func ("/forecast/selector/noise", test_selector_noise);
  g_test_add_func ("/forecast/selector/constant", test_selector_constant);
  g_test_add_func ("/forecast/profile/level", test_profile_level);
  g_test_add_func ("/forecast/profile/season", test_profile_season);
  g_test_add_func ("/forecast/profile/persistence", test_profile_persistence);
  g_test_add_func ("/forecast/season/skill", test_season_skill);
  g_test_add_func ("/forecast/season/calendar", test_calendar);
  g_test_add_func ("/forecast/selector/calendar", test_selector_calendar);
  g_test_add_func ("/forecast/selector/calendar-missed-day", test_selector_calendar_missed_day);
  g_test_add_func ("/forecast/selector/shrinks", test_selector_shrinks);
  return g_test_run ();
}
