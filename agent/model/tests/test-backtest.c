/* Backtests: known answers on synthetic series, and the real trace. */
#include "backtest.h"
#include "csv.h"
#include "synth.h"

#include <math.h>

static void
test_known_answer (void)
{
  /* y = 0,1,0,1,... : naive is always wrong by 1, seasonal naive (2)
   * always right; in-sample naive MAE is 1. */
  double y[40];
  ShdBacktestConfig c;
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdBacktestResult) r = NULL;

  for (guint i = 0; i < G_N_ELEMENTS (y); i++)
    y[i] = i % 2;
  shd_backtest_config_init (&c);
  c.period = 2;
  r = shd_backtest_run (y, G_N_ELEMENTS (y), &c, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (r->n_train, ==, 20);
  g_assert_cmpfloat (r->scale, ==, 1);
  g_assert_cmpuint (r->rows[SHD_MODEL_NAIVE].n, ==, 20);
  g_assert_cmpfloat (r->rows[SHD_MODEL_NAIVE].mase, ==, 1);
  g_assert_cmpfloat (r->rows[SHD_MODEL_SNAIVE].mase, ==, 0);
  g_assert_cmpfloat (r->rows[SHD_MODEL_HW].mase, <, 1e-9);
  g_assert_cmpint (r->best, ==, SHD_MODEL_SNAIVE);
  g_assert_true (r->chosen == SHD_MODEL_PROFILE || r->chosen == SHD_MODEL_HW ||
                 r->chosen == SHD_MODEL_MEDIAN);
  g_assert_cmpfloat (r->rows[SHD_BACKTEST_AUTO].mase, <, 0.2);
}

static void
test_horizon (void)
{
  /* A line: naive h steps ahead is off by h * slope. */
  double y[100];
  ShdBacktestConfig c;
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdBacktestResult) r = NULL;

  for (guint i = 0; i < G_N_ELEMENTS (y); i++)
    y[i] = 3.0 * i;
  shd_backtest_config_init (&c);
  c.horizon = 4;
  r = shd_backtest_run (y, G_N_ELEMENTS (y), &c, &error);
  g_assert_no_error (error);
  for (guint h = 1; h <= 4; h++)
    g_assert_cmpfloat_with_epsilon (r->rows[SHD_MODEL_NAIVE].mase_h[h - 1], h, 1e-12);
  /* Origins near the end have fewer steps: 50 + 49 + 48 + 47. */
  g_assert_cmpuint (r->rows[SHD_MODEL_NAIVE].n, ==, 194);
}

static void
test_errors (void)
{
  double flat[20], few[3] = { 1, 2, 3 };
  ShdBacktestConfig c;
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdBacktestResult) r = NULL;

  for (guint i = 0; i < G_N_ELEMENTS (flat); i++)
    flat[i] = 5;
  shd_backtest_config_init (&c);
  r = shd_backtest_run (flat, G_N_ELEMENTS (flat), &c, &error);
  g_assert_null (r);
  g_assert_error (error, SHD_BACKTEST_ERROR, SHD_BACKTEST_ERROR_FLAT);
  g_clear_error (&error);
  c.horizon = 2;
  r = shd_backtest_run (few, G_N_ELEMENTS (few), &c, &error);
  g_assert_null (r);
  g_assert_error (error, SHD_BACKTEST_ERROR, SHD_BACKTEST_ERROR_TOO_SHORT);
}

static void
test_json (void)
{
  double y[60];
  ShdBacktestConfig c;
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdBacktestResult) r = NULL;
  g_autoptr (JsonNode) node = NULL;
  JsonObject *o;
  JsonArray *models;

  for (guint i = 0; i < G_N_ELEMENTS (y); i++)
    y[i] = 10 + (i % 3) + 0.1 * i;
  shd_backtest_config_init (&c);
  c.period = 3;
  r = shd_backtest_run (y, G_N_ELEMENTS (y), &c, &error);
  g_assert_no_error (error);
  node = shd_backtest_to_json (r, "mem", "x\"y");
  o = json_node_get_object (node);
  g_assert_cmpstr (json_object_get_string_member (o, "column"), ==, "x\"y");
  g_assert_cmpint (json_object_get_int_member (o, "period"), ==, 3);
  models = json_object_get_array_member (o, "models");
  g_assert_cmpuint (json_array_get_length (models), ==, SHD_N_MODELS + 1);
  g_assert_cmpstr (json_object_get_string_member (json_array_get_object_element (models, 0),
                                                  "name"), ==, "naive");
  g_assert_nonnull (json_object_get_string_member (o, "chosen"));
}

static void
test_trace (void)
{
  g_autofree char *path = g_build_filename (synth_trace_dir (),
                                            "cp_w31_30min_features.csv", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) v = NULL;
  g_autoptr (ShdBacktestResult) r = NULL;
  ShdBacktestConfig c;

  if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
    g_test_skip ("no shared trace at ../shared/data/traces");
    return;
  }
  v = shd_csv_read_column (path, "block_req_count", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (v->len, ==, 338);
  shd_backtest_config_init (&c);
  r = shd_backtest_run ((double *) v->data, v->len, &c, &error);
  g_assert_no_error (error);
  for (guint k = 0; k <= SHD_N_MODELS; k++)
    g_test_message ("%-6s MASE %.3f over %u, coverage %.2f, rolling %.3f",
                    r->rows[k].name, r->rows[k].mase, r->rows[k].n,
                    r->rows[k].coverage, r->rows[k].rolling_mase);
  /* The daily cycle is found, and it pays. */
  g_assert_cmpuint (r->period, ==, 48);
  g_assert_cmpuint (r->rows[SHD_MODEL_PROFILE].n, ==, 169);
  g_assert_cmpuint (r->rows[SHD_MODEL_HW].n, ==, 169);
  g_assert_cmpfloat (r->rows[SHD_MODEL_PROFILE].mase, <, r->rows[SHD_MODEL_NAIVE].mase);
  g_assert_cmpfloat (r->rows[SHD_MODEL_HW].mase, <, r->rows[SHD_MODEL_NAIVE].mase);
  g_assert_cmpfloat (r->rows[SHD_BACKTEST_AUTO].mase, <, r->rows[SHD_MODEL_NAIVE].mase);
  /* The choice is the selector's, from its rolling scores. */
  g_assert_cmpfloat (r->rows[r->chosen].rolling_mase, <=,
                     r->rows[SHD_MODEL_NAIVE].rolling_mase);
}

static void
test_same_origins (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (8);
  double y[400];
  ShdBacktestConfig c;
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdBacktestResult) res = NULL;

  /* the season is learned late: the seasonal rows forecast naive's
   * values until then, and every row is scored on the same origins */
  for (guint i = 0; i < G_N_ELEMENTS (y); i++)
    y[i] = 100 + 50 * sin (2 * G_PI * i / 48) + 3 * synth_gauss (r);
  shd_backtest_config_init (&c);
  c.interval_s = 1800;
  c.horizon = 4;
  c.train_fraction = 0.15;
  res = shd_backtest_run (y, G_N_ELEMENTS (y), &c, &error);
  g_assert_no_error (error);
  for (guint k = 0; k <= SHD_N_MODELS; k++)
    g_assert_cmpuint (res->rows[k].n, ==, res->rows[SHD_MODEL_NAIVE].n);
  g_assert_cmpuint (res->rows[SHD_MODEL_NAIVE].own, ==, res->rows[SHD_MODEL_NAIVE].n);
  g_assert_cmpuint (res->rows[SHD_MODEL_PROFILE].own, <, res->rows[SHD_MODEL_PROFILE].n);
  g_assert_cmpuint (res->rows[SHD_MODEL_PROFILE].own, >, 0);
  g_assert_cmpuint (res->seasons[0], ==, 48);
  g_assert_cmpint (res->best, !=, SHD_MODEL_NAIVE);
}

/* The development traces, when present: with the calendar known only a
 * day (or a week) can be a season, and the selector never loses to naive
 * by more than 2%, at one and at four steps. */
static void
test_dev_traces (void)
{
  g_autofree char *dir = g_build_filename (synth_trace_dir (), "cloudphysics", NULL);
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;
  guint done = 0;

  if (d == NULL) {
    g_test_skip ("no development traces at ../shared/data/traces/cloudphysics");
    return;
  }
  while ((name = g_dir_read_name (d)) != NULL) {
    g_autofree char *path = g_build_filename (dir, name, NULL);
    g_autoptr (GError) error = NULL;
    g_autoptr (GArray) v = NULL;

    if (!g_str_has_suffix (name, ".csv"))
      continue;
    v = shd_csv_read_column (path, "block_req_count", &error);
    g_assert_no_error (error);
    for (guint H = 1; H <= 4; H += 3) {
      g_autoptr (ShdBacktestResult) r = NULL;
      ShdBacktestConfig c;
      double ratio;

      shd_backtest_config_init (&c);
      c.interval_s = 1800;
      c.horizon = H;
      r = shd_backtest_run ((double *) v->data, v->len, &c, &error);
      g_assert_no_error (error);
      ratio = r->rows[SHD_BACKTEST_AUTO].mase / r->rows[SHD_MODEL_NAIVE].mase;
      g_test_message ("%s h%u: selector/naive %.3f, season %u", name, H, ratio, r->period);
      g_assert_true (r->period == 0 || r->period == 48 || r->period == 336);
      g_assert_cmpfloat (ratio, <=, 1.02);
    }
    done++;
  }
  g_assert_cmpuint (done, >=, 1);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/backtest/known-answer", test_known_answer);
  g_test_add_func ("/backtest/horizon", test_horizon);
  g_test_add_func ("/backtest/errors", test_errors);
  g_test_add_func ("/backtest/json", test_json);
  g_test_add_func ("/backtest/trace-w31", test_trace);
  g_test_add_func ("/backtest/same-origins", test_same_origins);
  g_test_add_func ("/backtest/dev-traces", test_dev_traces);
  return g_test_run ();
}
