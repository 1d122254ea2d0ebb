/* shadowctl backtest: the rolling-origin backtest of every forecaster on
 * one CSV column, offline; see ctl.h. */
#include "ctl.h"

#include "backtest.h"
#include "csv.h"

#include <math.h>

static void
print_table (const ShdBacktestResult *r, const char *file, const char *column)
{
  g_print ("%s, column %s: %u values, origins from %u, horizon %u, season %u%s\n",
           file, column, r->n_obs, r->n_train, r->horizon, r->period,
           r->period ? "" : " (none holds up)");
  g_print ("%-8s %8s %10s %6s %10s %13s\n", "model", "MASE", "forecasts", "own", "coverage",
           "rolling MASE");
  for (guint k = 0; k <= SHD_N_MODELS; k++) {
    const ShdBacktestRow *row = &r->rows[k];

    g_autofree char *cov = NULL;

    if (row->n == 0) {
      g_print ("%-8s %8s %10u %6u %10s\n", row->name, "-", 0u, 0u, "-");
      continue;
    }
    cov = isfinite (row->coverage) ? g_strdup_printf ("%.1f%%", 100 * row->coverage)
                                   : g_strdup ("-");
    g_print ("%-8s %8.3f %10u %6u %10s", row->name, row->mase, row->n, row->own, cov);
    if (isfinite (row->rolling_mase))
      g_print (" %13.3f", row->rolling_mase);
    g_print ("\n");
  }
  g_print ("chosen: %s, by rolling MASE over the last values "
           "(lowest backtest MASE: %s)\n",
           shd_model_kind_name (r->chosen), shd_model_kind_name (r->best));
}

int
ctl_cmd_backtest (const CtlCommand *cmd, int argc, char **argv)
{
  g_autofree char *column = NULL;
  int period = 0, horizon = 1;
  double train = 0.5, interval = 0;
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "column", 'c', 0, G_OPTION_ARG_STRING, &column, "Column to forecast", "NAME" },
    { "period", 'p', 0, G_OPTION_ARG_INT, &period,
      "Season length in rows (default: found in the data)", "N" },
    { "horizon", 'H', 0, G_OPTION_ARG_INT, &horizon,
      "Steps ahead forecast from each origin (default 1)", "H" },
    { "interval-s", 0, 0, G_OPTION_ARG_DOUBLE, &interval,
      "Seconds per row: a day and a week become the season candidates "
      "(default: unknown, seasons found in the data)", "S" },
    { "train", 0, 0, G_OPTION_ARG_DOUBLE, &train,
      "Share of rows before the first origin (default 0.5)", "F" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (GOptionContext) ctx =
    g_option_context_new ("FILE.csv --column NAME - backtest every forecaster");
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) values = NULL;
  g_autoptr (ShdBacktestResult) r = NULL;
  ShdBacktestConfig c;

  (void) cmd;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    g_printerr ("shadowctl backtest: %s\n", error->message);
    return EXIT_USAGE;
  }
  if (argc != 2 || column == NULL) {
    g_printerr ("shadowctl backtest: usage: shadowctl backtest FILE.csv --column NAME "
                "[--period N] [--horizon H] [--interval-s S] [--json]\n");
    return EXIT_USAGE;
  }
  if (period < 0 || period == 1 || horizon < 1 || !(train > 0 && train < 1) ||
      !(interval >= 0)) {
    g_printerr ("shadowctl backtest: --period must be 0 or at least 2, "
                "--horizon at least 1, --train between 0 and 1, --interval-s positive\n");
    return EXIT_USAGE;
  }
  values = shd_csv_read_column (argv[1], column, &error);
  if (values == NULL) {
    g_printerr ("shadowctl backtest: %s\n", error->message);
    return EXIT_FAILURE;
  }
  shd_backtest_config_init (&c);
  c.period = period;
  c.horizon = horizon;
  c.train_fraction = train;
  c.interval_s = interval;
  r = shd_backtest_run ((double *) values->data, values->len, &c, &error);
  if (r == NULL) {
    g_printerr ("shadowctl backtest: %s: %s\n", argv[1], error->message);
    return EXIT_FAILURE;
  }
  if (json) {
    g_autoptr (JsonNode) node = shd_backtest_to_json (r, argv[1], column);
    g_autoptr (JsonGenerator) gen = json_generator_new ();
    g_autofree char *text = NULL;

    json_generator_set_root (gen, node);
    json_generator_set_pretty (gen, TRUE);
    text = json_generator_to_data (gen, NULL);
    g_print ("%s\n", text);
  } else {
    print_table (r, argv[1], column);
  }
  return EXIT_SUCCESS;
}

/* ---- the control-socket commands ---- */

