/* shadowctl simulate: one CSV column replayed through the policy shadowd
 * runs, against the tiers of a configuration, with the baselines
 * (sim.h, DESIGN.md section 9).  Offline: it does not need shadowd. */
#include "ctl.h"

#include "config.h"
#include "csv.h"
#include "sim.h"

#include <math.h>
#include <string.h>

/* Without --config: the demo's tier model (scripts/demo-agent.py, at the
 * real clock), a 100 GiB disk. */
static const char default_config[] =
  "[shadowd]\n"
  "control =\n"
  "state =\n"
  "metrics-port = 0\n"
  "[tier:cheap]\n"
  "cost-gib-month = 0.02\n"
  "max-iops = 150\n"
  "latency-ms = 2\n"
  "copy-mib-s = 200\n"
  "[tier:fast]\n"
  "cost-gib-month = 0.12\n"
  "max-iops = 5000\n"
  "latency-ms = 0.5\n"
  "copy-mib-s = 200\n"
  "[disk:sim]\n"
  "qmp = /nonexistent/qmp.sock\n"
  "node = sim\n"
  "tier.cheap = cheap\n"
  "tier.fast = fast\n"
  "slo-latency-ms = 20\n"
  "size-gib = 100\n";

#define DEFAULT_LATENCY_MS 1.0

static gboolean
build_config (const ShdConfig *c, const char *disk_name, double interval_s,
              ShdSimConfig *sc, GError **error)
{
  const ShdDiskConfig *d;

  if (disk_name) {
    d = shd_config_disk (c, disk_name);
    if (d == NULL) {
      g_set_error (error, SHD_SIM_ERROR, SHD_SIM_ERROR_INVALID, "%s has no [disk:%s]",
                   c->path, disk_name);
      return FALSE;
    }
  } else if (c->disks->len == 1) {
    d = c->disks->pdata[0];
  } else {
    g_set_error (error, SHD_SIM_ERROR, SHD_SIM_ERROR_INVALID,
                 "%s has %u disks: say which with --disk", c->path, c->disks->len);
    return FALSE;
  }
  memset (sc, 0, sizeof *sc);
  if (!shd_config_disk_policy (c, d, &sc->policy, error))
    return FALSE;
  sc->interval_s = interval_s;
  sc->size_bytes = d->size_gib * 1024 * 1024 * 1024;
  if (!(sc->size_bytes > 0)) {
    g_set_error (error, SHD_SIM_ERROR, SHD_SIM_ERROR_INVALID,
                 "[disk:%s] needs size-gib for a simulation", d->name);
    return FALSE;
  }
  for (guint i = 0; i < sc->policy.n_tiers; i++) {
    const ShdTierConfig *t = shd_config_tier (c, sc->policy.tiers[i].tier);

    if (!(t->max_iops > 0) || !(t->copy_mib_s > 0)) {
      g_set_error (error, SHD_SIM_ERROR, SHD_SIM_ERROR_INVALID,
                   "[tier:%s] needs max-iops and copy-mib-s for a simulation", t->name);
      return FALSE;
    }
    sc->tiers[i].max_iops = t->max_iops;
    sc->tiers[i].latency_ms = t->latency_ms > 0 ? t->latency_ms : DEFAULT_LATENCY_MS;
    sc->tiers[i].copy_bps = t->copy_mib_s * 1024 * 1024;
  }
  return TRUE;
}

static void
print_table (const ShdSimResult *r, const char *file, const char *column)
{
  g_print ("%s, column %s: %u rows of %g s, %.0f GiB disk\n", file, column, r->rows,
           r->interval_s, r->size_bytes / (1024.0 * 1024 * 1024));
  g_print ("%-13s %12s %10s %9s %8s %8s", "policy", "violation-s", "cost", "switches",
           "spikes", "ahead");
  for (guint i = 0; i < r->n_tiers; i++)
    g_print (" %10s", r->tiers[i]);
  g_print ("  (GiB-hours)\n");
  for (guint p = 0; p < SHD_SIM_N_POLICIES; p++) {
    const ShdSimOutcome *o = &r->policies[p];
    guint ahead = 0;

    for (guint s = 0; s < o->spikes->len; s++)
      ahead += g_array_index (o->spikes, ShdSimSpike, s).lead_s >= 0;
    g_print ("%-13s %12.0f %10.4f %9u %8u %8u", o->name, o->violation_s, o->cost,
             o->switches, o->spikes->len, ahead);
    for (guint i = 0; i < r->n_tiers; i++)
      g_print (" %10.1f", o->gib_hours[i]);
    g_print ("\n");
  }
}

int
ctl_cmd_simulate (const CtlCommand *cmd, int argc, char **argv)
{
  g_autofree char *column = NULL;
  g_autofree char *config = NULL;
  g_autofree char *disk = NULL;
  double interval = 0, scale_peak = 0;
  int history = 0;
  gboolean json = FALSE, trace = FALSE;
  GOptionEntry entries[] = {
    { "column", 'c', 0, G_OPTION_ARG_STRING, &column, "Column of per-row counts", "NAME" },
    { "interval-s", 0, 0, G_OPTION_ARG_DOUBLE, &interval, "Seconds per row", "S" },
    { "config", 0, 0, G_OPTION_ARG_FILENAME, &config,
      "shadowd configuration with the tiers' max-iops, latency-ms, copy-mib-s and the "
      "disk's size-gib (default: the demo's tiers, a 100 GiB disk)", "FILE" },
    { "disk", 0, 0, G_OPTION_ARG_STRING, &disk, "The [disk:NAME] to use", "NAME" },
    { "scale-peak", 0, 0, G_OPTION_ARG_DOUBLE, &scale_peak,
      "Scale the load so that its busiest row is this many IOPS", "IOPS" },
    { "history-rows", 0, 0, G_OPTION_ARG_INT, &history,
      "The first N rows are past load: learned, not counted", "N" },
    { "trace", 0, 0, G_OPTION_ARG_NONE, &trace, "Add each row of the agents (JSON)", NULL },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (GOptionContext) ctx =
    g_option_context_new ("FILE.csv --column NAME --interval-s S - simulate the policies");
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) values = NULL;
  g_autoptr (ShdConfig) c = NULL;
  g_autoptr (ShdSimResult) r = NULL;
  ShdSimConfig sc;
  double top = 0;

  (void) cmd;
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    g_printerr ("shadowctl simulate: %s\n", error->message);
    return EXIT_USAGE;
  }
  if (argc != 2 || column == NULL || !(interval > 0) || scale_peak < 0 || history < 0) {
    g_printerr ("shadowctl simulate: usage: shadowctl simulate FILE.csv --column NAME "
                "--interval-s S [--config FILE] [--disk NAME] [--scale-peak IOPS] [--json]\n");
    return EXIT_USAGE;
  }
  values = shd_csv_read_column (argv[1], column, &error);
  if (values == NULL) {
    g_printerr ("shadowctl simulate: %s\n", error->message);
    return EXIT_FAILURE;
  }
  c = config ? shd_config_load_file (config, &error)
             : shd_config_load_data (default_config, strlen (default_config),
                                     "(built-in demo tiers)", &error);
  if (c == NULL || !build_config (c, disk, interval, &sc, &error)) {
    g_printerr ("shadowctl simulate: %s\n", error->message);
    return EXIT_FAILURE;
  }
  sc.trace = trace;
  sc.history_rows = (guint) history;
  /* per-row counts to IOPS, scaled if asked */
  for (guint i = 0; i < values->len; i++) {
    double *v = &g_array_index (values, double, i);

    *v = MAX (*v, 0) / interval;
    top = MAX (top, *v);
  }
  if (scale_peak > 0 && top > 0)
    for (guint i = 0; i < values->len; i++)
      g_array_index (values, double, i) *= scale_peak / top;
  r = shd_sim_run ((double *) values->data, values->len, &sc, &error);
  shd_policy_config_clear (&sc.policy);
  if (r == NULL) {
    g_printerr ("shadowctl simulate: %s: %s\n", argv[1], error->message);
    return EXIT_FAILURE;
  }
  if (json) {
    g_autoptr (JsonNode) node = shd_sim_to_json (r);

    ctl_print_json (node);
  } else {
    print_table (r, argv[1], column);
  }
  return EXIT_SUCCESS;
}
