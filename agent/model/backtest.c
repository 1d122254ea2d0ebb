/* Rolling-origin backtest: the models learn online exactly as in the
 * agent; from every origin in the test part each forecasts 1..H steps,
 * scored against what came, scaled by the in-sample naive error. */
#include "backtest.h"
#include "jsonnum.h"

#include <math.h>

G_DEFINE_QUARK (shd-backtest-error-quark, shd_backtest_error)

void
shd_backtest_config_init (ShdBacktestConfig *c)
{
  *c = (ShdBacktestConfig) { .period = 0, .horizon = 1, .train_fraction = 0.5,
                             .interval_s = 0, .seasons_s = { 86400, 604800, 0 } };
}

void
shd_backtest_result_free (ShdBacktestResult *r)
{
  if (r == NULL)
    return;
  for (guint k = 0; k <= SHD_N_MODELS; k++)
    g_free (r->rows[k].mase_h);
  g_free (r);
}

typedef struct {
  double *abs_err;              /* per step */
  guint *count;                 /* per step */
  guint inside;                 /* of the forecasts with an interval ... */
  guint with_interval;          /* ... these */
  guint own;
} Acc;

static void
score (Acc *a, double point, double lo, double hi, const double *y, gsize t, guint h)
{
  double v = y[t + h - 1];

  a->abs_err[h - 1] += fabs (v - point);
  a->count[h - 1]++;
  if (isfinite (lo) && isfinite (hi)) {
    a->with_interval++;
    a->inside += v >= lo && v <= hi;
  }
}

ShdBacktestResult *
shd_backtest_run (const double *y, gsize n, const ShdBacktestConfig *c,
                  GError **error)
{
  g_autoptr (ShdBacktestResult) r = g_new0 (ShdBacktestResult, 1);
  g_autoptr (ShdForecaster) f = NULL;
  ShdForecastConfig fc;
  Acc acc[SHD_N_MODELS + 1];
  guint H = MAX (c->horizon, 1u);
  gsize n_train;
  double scale = 0;

  g_return_val_if_fail (c->train_fraction > 0 && c->train_fraction < 1, NULL);
  n_train = (gsize) (n * c->train_fraction);
  if (n_train < 2 || n_train + H > n) {
    g_set_error (error, SHD_BACKTEST_ERROR, SHD_BACKTEST_ERROR_TOO_SHORT,
                 "%zu values are too few for a backtest at horizon %u", n, H);
    return NULL;
  }
  for (gsize i = 1; i < n_train; i++)
    scale += fabs (y[i] - y[i - 1]);
  scale /= n_train - 1;
  if (!(scale > 0)) {
    g_set_error (error, SHD_BACKTEST_ERROR, SHD_BACKTEST_ERROR_FLAT,
                 "the first %zu values never change: MASE is undefined", n_train);
    return NULL;
  }

  if (c->forecast)
    fc = *c->forecast;
  else
    shd_forecast_config_init (&fc);
  fc.period = c->period;
  fc.horizon = H;
  if (c->interval_s > 0)
    shd_forecast_config_set_calendar (&fc, c->interval_s, c->seasons_s);
  f = shd_forecaster_new (&fc);
  for (guint k = 0; k <= SHD_N_MODELS; k++) {
    acc[k].abs_err = g_new0 (double, H);
    acc[k].count = g_new0 (guint, H);
    acc[k].inside = 0;
    acc[k].own = 0;
    acc[k].with_interval = 0;
  }

  for (gsize t = 0; t < n; t++) {
    /* Origin after y[t-1]: forecast y[t .. t+H-1]. */
    if (t >= n_train) {
      for (guint h = 1; h <= H && t + h - 1 < n; h++) {
        ShdPrediction p, naive;
        gboolean have_naive;

        /* every row on the same origins: a model that cannot forecast
         * yet (a season not learned) is scored with naive's forecast */
        have_naive = shd_model_predict (shd_forecaster_model (f, SHD_MODEL_NAIVE), h,
                                        fc.level, &naive);
        for (guint k = 0; k < SHD_N_MODELS; k++) {
          ShdModel *m = shd_forecaster_model (f, k);
          double point;

          if (m && shd_model_predict (m, h, fc.level, &p)) {
            score (&acc[k], p.point, p.lo, p.hi, y, t, h);
            acc[k].own++;
          } else if (m == NULL && shd_forecaster_point (f, k, h, &point)) {
            score (&acc[k], point, NAN, NAN, y, t, h);
            acc[k].own++;
          } else if (have_naive) {
            score (&acc[k], naive.point, naive.lo, naive.hi, y, t, h);
          }
        }
        if (shd_forecaster_predict (f, h, &p)) {
          score (&acc[SHD_BACKTEST_AUTO], p.point, p.lo, p.hi, y, t, h);
          acc[SHD_BACKTEST_AUTO].own++;
        } else if (have_naive) {
          score (&acc[SHD_BACKTEST_AUTO], naive.point, naive.lo, naive.hi, y, t, h);
        }
      }
    }
    shd_forecaster_update (f, y[t]);
  }

  r->n_obs = n;
  r->n_train = n_train;
  r->horizon = H;
  r->period = shd_forecaster_period (f);
  shd_forecaster_seasons (f, r->seasons, SHD_MAX_SEASONS - 1);
  r->level = fc.level;
  r->scale = scale;
  r->chosen = shd_forecaster_best (f);
  r->best = SHD_MODEL_NAIVE;
  for (guint k = 0; k <= SHD_N_MODELS; k++) {
    ShdBacktestRow *row = &r->rows[k];
    double sum = 0;

    row->name = k == SHD_BACKTEST_AUTO ? "auto" : shd_model_kind_name (k);
    row->mase_h = g_new0 (double, H);
    for (guint h = 0; h < H; h++) {
      row->n += acc[k].count[h];
      sum += acc[k].abs_err[h];
      row->mase_h[h] = acc[k].count[h] ? acc[k].abs_err[h] / acc[k].count[h] / scale : NAN;
    }
    row->own = acc[k].own;
    row->mase = row->n ? sum / row->n / scale : NAN;
    row->coverage = acc[k].with_interval ? (double) acc[k].inside / acc[k].with_interval : NAN;
    row->rolling_mase = k < SHD_N_MODELS ? shd_forecaster_mase (f, k) : NAN;
    g_free (acc[k].abs_err);
    g_free (acc[k].count);
    if (k < SHD_N_MODELS && isfinite (row->mase) && row->mase < r->rows[r->best].mase)
      r->best = k;
  }
  return g_steal_pointer (&r);
}

JsonNode *
shd_backtest_to_json (const ShdBacktestResult *r, const char *source,
                      const char *column)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "source");
  json_builder_add_string_value (b, source);
  json_builder_set_member_name (b, "column");
  json_builder_add_string_value (b, column);
  json_builder_set_member_name (b, "observations");
  json_builder_add_int_value (b, r->n_obs);
  json_builder_set_member_name (b, "train");
  json_builder_add_int_value (b, r->n_train);
  json_builder_set_member_name (b, "horizon");
  json_builder_add_int_value (b, r->horizon);
  json_builder_set_member_name (b, "period");
  json_builder_add_int_value (b, r->period);
  json_builder_set_member_name (b, "seasons");
  json_builder_begin_array (b);
  for (guint i = 0; i < SHD_MAX_SEASONS && r->seasons[i]; i++)
    json_builder_add_int_value (b, r->seasons[i]);
  json_builder_end_array (b);
  json_builder_set_member_name (b, "interval-level");
  json_builder_add_double_value (b, r->level);
  json_builder_set_member_name (b, "naive-mae-in-sample");
  json_builder_add_double_value (b, r->scale);
  json_builder_set_member_name (b, "models");
  json_builder_begin_array (b);
  for (guint k = 0; k <= SHD_N_MODELS; k++) {
    const ShdBacktestRow *row = &r->rows[k];

    json_builder_begin_object (b);
    json_builder_set_member_name (b, "name");
    json_builder_add_string_value (b, row->name);
    json_builder_set_member_name (b, "forecasts");
    json_builder_add_int_value (b, row->n);
    json_builder_set_member_name (b, "own-forecasts");
    json_builder_add_int_value (b, row->own);
    shd_json_builder_add_num (b, "mase", row->mase);
    json_builder_set_member_name (b, "mase-by-step");
    json_builder_begin_array (b);
    for (guint h = 0; h < r->horizon; h++) {
      if (isfinite (row->mase_h[h]))
        json_builder_add_double_value (b, row->mase_h[h]);
      else
        json_builder_add_null_value (b);
    }
    json_builder_end_array (b);
    shd_json_builder_add_num (b, "interval-coverage", row->coverage);
    if (k < SHD_N_MODELS)
      shd_json_builder_add_num (b, "rolling-mase", row->rolling_mase);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "best");
  json_builder_add_string_value (b, shd_model_kind_name (r->best));
  json_builder_set_member_name (b, "chosen");
  json_builder_add_string_value (b, shd_model_kind_name (r->chosen));
  json_builder_end_object (b);
  return json_builder_get_root (b);
}
