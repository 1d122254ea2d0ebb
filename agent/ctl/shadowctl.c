/* shadowctl: the operator's command line for shadowd: the control-socket
 * commands (status, history, forecast, prewarm, switch, pause, resume,
 * and for libvirt domains libvirt, attach, detach) and the offline
 * `backtest`.  Called as virsh-shadow (a link to this program), it takes
 * virsh's word order instead: virsh-shadow DOMAIN DISK COMMAND. */
#include "backtest.h"
#include "client.h"
#include "csv.h"

#include <json-glib/json-glib.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define EXIT_USAGE 2

static void
print_table (const ShdBacktestResult *r, const char *file, const char *column)
{
  g_print ("%s, column %s: %u values, origins from %u, horizon %u, period %u%s\n",
           file, column, r->n_obs, r->n_train, r->horizon, r->period,
           r->period ? "" : " (none found)");
  g_print ("%-8s %8s %10s %10s %13s\n", "model", "MASE", "forecasts", "coverage",
           "rolling MASE");
  for (guint k = 0; k <= SHD_N_MODELS; k++) {
    const ShdBacktestRow *row = &r->rows[k];

    if (row->n == 0) {
      g_print ("%-8s %8s %10u %10s\n", row->name, "-", 0u, "-");
      continue;
    }
    g_print ("%-8s %8.3f %10u %9.1f%%", row->name, row->mase, row->n,
             100 * row->coverage);
    if (isfinite (row->rolling_mase))
      g_print (" %13.3f", row->rolling_mase);
    g_print ("\n");
  }
  g_print ("chosen: %s, by rolling MASE over the last values "
           "(lowest backtest MASE: %s)\n",
           shd_model_kind_name (r->chosen), shd_model_kind_name (r->best));
}

static int
cmd_backtest (int argc, char **argv)
{
  g_autofree char *column = NULL;
  int period = 0, horizon = 1;
  double train = 0.5;
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "column", 'c', 0, G_OPTION_ARG_STRING, &column, "Column to forecast", "NAME" },
    { "period", 'p', 0, G_OPTION_ARG_INT, &period,
      "Season length in rows (default: found in the data)", "N" },
    { "horizon", 'H', 0, G_OPTION_ARG_INT, &horizon,
      "Steps ahead forecast from each origin (default 1)", "H" },
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

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    g_printerr ("shadowctl backtest: %s\n", error->message);
    return EXIT_USAGE;
  }
  if (argc != 2 || column == NULL) {
    g_printerr ("shadowctl backtest: usage: shadowctl backtest FILE.csv --column NAME "
                "[--period N] [--horizon H] [--json]\n");
    return EXIT_USAGE;
  }
  if (period < 0 || period == 1 || horizon < 1 || !(train > 0 && train < 1)) {
    g_printerr ("shadowctl backtest: --period must be 0 or at least 2, "
                "--horizon at least 1, --train between 0 and 1\n");
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

static const char *control_path = "/run/shadowd/control.sock";
static const char *prog = "shadowctl";         /* or virsh-shadow, in messages */
static guint control_timeout_ms = 10000;

static void
print_json (JsonNode *node)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autofree char *text = NULL;

  json_generator_set_root (gen, node);
  json_generator_set_pretty (gen, TRUE);
  text = json_generator_to_data (gen, NULL);
  g_print ("%s\n", text);
}

/* 90, 90s, 15m, 6h, 7d -> seconds; -1 when malformed */
static double
parse_duration (const char *s)
{
  char *end;
  double v = g_ascii_strtod (s, &end);

  if (end == s || !(v >= 0))
    return -1;
  if (*end == '\0' || strcmp (end, "s") == 0)
    return v;
  if (strcmp (end, "m") == 0)
    return v * 60;
  if (strcmp (end, "h") == 0)
    return v * 3600;
  if (strcmp (end, "d") == 0)
    return v * 86400;
  return -1;
}

static double
num_or_nan (JsonObject *o, const char *name)
{
  JsonNode *n = o ? json_object_get_member (o, name) : NULL;

  if (n == NULL || !JSON_NODE_HOLDS_VALUE (n))
    return NAN;
  return json_node_get_double (n);
}

static const char *
str_or (JsonObject *o, const char *name, const char *dflt)
{
  JsonNode *n = o ? json_object_get_member (o, name) : NULL;

  if (n == NULL || !JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
    return dflt;
  return json_node_get_string (n);
}

static char *
fmt_time (double t)
{
  g_autoptr (GDateTime) dt = g_date_time_new_from_unix_local ((gint64) t);

  return dt ? g_date_time_format (dt, "%Y-%m-%d %H:%M:%S") : g_strdup ("?");
}

static char *
fmt_num (double v, const char *fmt)
{
  return isfinite (v) ? g_strdup_printf (fmt, v) : g_strdup ("-");
}

static void
print_status (JsonArray *a)
{
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *o = json_array_get_object_element (a, i);
    JsonObject *load = json_object_get_object_member (o, "load");
    JsonObject *fc = json_object_get_object_member (o, "forecast");
    JsonObject *last = json_object_get_object_member (o, "last-decision");
    JsonArray *tiers = json_object_get_array_member (o, "tiers");
    g_autofree char *iops = fmt_num (num_or_nan (load, "iops"), "%.0f");
    g_autofree char *lat = fmt_num (num_or_nan (load, "latency-ms"), "%.2f");
    g_autofree char *next = fmt_num (num_or_nan (fc, "next"), "%.0f");
    g_autofree char *upper = fmt_num (num_or_nan (fc, "horizon-upper"), "%.0f");
    g_autofree char *when = last ? fmt_time (num_or_nan (last, "time")) : NULL;

    g_print ("%s: on %s (%s), %s%s%s\n", str_or (o, "name", "?"),
             str_or (o, "active-tier", "?"), str_or (o, "active-child", "?"),
             json_object_get_boolean_member (o, "connected") ? "connected" : "DISCONNECTED",
             json_object_get_boolean_member (o, "paused") ? ", paused" : "",
             json_object_get_boolean_member (o, "dry-run") ? ", dry run" : "");
    g_print ("  load %s IOPS, %s ms (SLO %.2f ms); forecast %s IOPS, upper %s over %.0f s "
             "(%s)%s\n", iops, lat, num_or_nan (o, "slo-latency-ms"), next, upper,
             num_or_nan (fc, "horizon-s"), str_or (fc, "model", "?"),
             fc && json_object_get_boolean_member_with_default (fc, "spike", FALSE) ?
             ", SPIKE" : "");
    for (guint j = 0; tiers && j < json_array_get_length (tiers); j++) {
      JsonObject *t = json_array_get_object_element (tiers, j);
      g_autofree char *tl = fmt_num (num_or_nan (t, "base-latency-ms"), "%.2f ms");
      g_autofree char *lim = fmt_num (num_or_nan (t, "limit-iops"), "%.0f IOPS");

      g_print ("  tier %-10s %-12s %-9s %5.3f/GiB-month  base %s, limit %s\n",
               str_or (t, "name", "?"), str_or (t, "child", "?"),
               str_or (t, "state", "absent"), num_or_nan (t, "cost-gib-month"), tl, lim);
    }
    if (str_or (o, "problem", NULL))
      g_print ("  problem: %s\n", str_or (o, "problem", ""));
    if (last)
      g_print ("  last decision (%s): %s: %s\n", when, str_or (last, "kind", "?"),
               str_or (last, "reason", ""));
  }
}

static JsonObject *
request (const char *command)
{
  JsonObject *o = json_object_new ();

  json_object_set_string_member (o, "command", command);
  return o;
}

static int
call (JsonObject *req, JsonNode **out)
{
  g_autoptr (GError) error = NULL;

  *out = shd_control_call (control_path, req, control_timeout_ms, &error);
  json_object_unref (req);
  if (*out == NULL) {
    g_printerr ("%s: %s\n", prog, error->message);
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}

static gboolean
parse_opts (int *argc, char ***argv, const char *usage_text, GOptionEntry *entries,
            guint min_args, guint max_args)
{
  g_autoptr (GOptionContext) ctx = g_option_context_new (usage_text);
  g_autoptr (GError) error = NULL;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, argc, argv, &error)) {
    g_printerr ("shadowctl %s: %s\n", (*argv)[0], error->message);
    return FALSE;
  }
  if ((guint) *argc - 1 < min_args || (guint) *argc - 1 > max_args) {
    g_printerr ("shadowctl: usage: shadowctl %s %s\n", (*argv)[0], usage_text);
    return FALSE;
  }
  return TRUE;
}

static int
cmd_status (int argc, char **argv)
{
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (JsonNode) ret = NULL;
  JsonObject *req;
  int rc;

  if (!parse_opts (&argc, &argv, "[DISK] - the state of each disk", entries, 0, 1))
    return EXIT_USAGE;
  req = request ("status");
  if (argc > 1)
    json_object_set_string_member (req, "disk", argv[1]);
  if ((rc = call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (json)
    print_json (ret);
  else
    print_status (json_node_get_array (ret));
  return EXIT_SUCCESS;
}

static int
cmd_history (int argc, char **argv)
{
  gboolean json = FALSE, decisions = FALSE;
  g_autofree char *since = NULL, *resolution = NULL;
  int limit = 0;
  GOptionEntry entries[] = {
    { "since", 's', 0, G_OPTION_ARG_STRING, &since,
      "How far back: 90, 30s, 15m, 6h, 7d (default 1h)", "DURATION" },
    { "resolution", 'r', 0, G_OPTION_ARG_STRING, &resolution,
      "full, minute or auto (default)", "RES" },
    { "limit", 'l', 0, G_OPTION_ARG_INT, &limit, "At most N rows, the newest", "N" },
    { "decisions", 'd', 0, G_OPTION_ARG_NONE, &decisions, "Decisions, not samples", NULL },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (JsonNode) ret = NULL;
  JsonObject *req;
  JsonArray *a;
  double secs = 3600;
  int rc;

  if (!parse_opts (&argc, &argv, "[DISK] - samples or decisions from the history",
                   entries, 0, 1))
    return EXIT_USAGE;
  if (since && (secs = parse_duration (since)) < 0) {
    g_printerr ("shadowctl history: --since '%s' is not a duration (e.g. 90, 15m, 6h, 7d)\n",
                since);
    return EXIT_USAGE;
  }
  if (limit < 0) {
    g_printerr ("shadowctl history: --limit must not be negative\n");
    return EXIT_USAGE;
  }
  req = request ("history");
  if (argc > 1)
    json_object_set_string_member (req, "disk", argv[1]);
  json_object_set_double_member (req, "since", secs);
  json_object_set_int_member (req, "limit", limit);
  json_object_set_string_member (req, "what", decisions ? "decisions" : "samples");
  if (resolution)
    json_object_set_string_member (req, "resolution", resolution);
  if ((rc = call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (json) {
    print_json (ret);
    return EXIT_SUCCESS;
  }
  a = json_node_get_array (ret);
  if (!decisions)
    g_print ("%-19s %-12s %9s %12s %9s %9s %9s  %s\n", "time", "disk", "IOPS", "bytes/s",
             "lat ms", "forecast", "upper", "tier");
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *o = json_array_get_object_element (a, i);
    g_autofree char *when = fmt_time (num_or_nan (o, "time"));

    if (decisions) {
      g_print ("%s %s %s: %s\n", when, str_or (o, "disk", "?"), str_or (o, "kind", "?"),
               str_or (o, "reason", ""));
    } else {
      g_autofree char *iops = fmt_num (num_or_nan (o, "iops"), "%.1f");
      g_autofree char *bps = fmt_num (num_or_nan (o, "bps"), "%.0f");
      g_autofree char *lat = fmt_num (num_or_nan (o, "latency-ms"), "%.3f");
      g_autofree char *fc = fmt_num (num_or_nan (o, "forecast"), "%.1f");
      g_autofree char *hi = fmt_num (num_or_nan (o, "forecast-upper"), "%.1f");

      g_print ("%-19s %-12s %9s %12s %9s %9s %9s  %s\n", when, str_or (o, "disk", "?"),
               iops, bps, lat, fc, hi, str_or (o, "tier", "-"));
    }
  }
  return EXIT_SUCCESS;
}

static int
cmd_forecast (int argc, char **argv)
{
  gboolean json = FALSE;
  int steps = 0;
  GOptionEntry entries[] = {
    { "steps", 'H', 0, G_OPTION_ARG_INT, &steps,
      "Intervals ahead (default: the policy's horizon)", "N" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (JsonNode) ret = NULL;
  JsonObject *req;
  JsonArray *a;
  int rc;

  if (!parse_opts (&argc, &argv, "[DISK] - the load forecast with its interval",
                   entries, 0, 1))
    return EXIT_USAGE;
  if (steps < 0) {
    g_printerr ("shadowctl forecast: --steps must not be negative\n");
    return EXIT_USAGE;
  }
  req = request ("forecast");
  if (argc > 1)
    json_object_set_string_member (req, "disk", argv[1]);
  json_object_set_int_member (req, "steps", steps);
  if ((rc = call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (json) {
    print_json (ret);
    return EXIT_SUCCESS;
  }
  a = json_node_get_array (ret);
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *o = json_array_get_object_element (a, i);
    JsonArray *f = json_object_get_array_member (o, "forecast");

    g_print ("%s: model %s, %.0f%% interval\n", str_or (o, "name", "?"),
             str_or (o, "model", "?"), 100 * num_or_nan (o, "level"));
    g_print ("  %8s %10s %10s %10s\n", "seconds", "IOPS", "lower", "upper");
    for (guint j = 0; f && j < json_array_get_length (f); j++) {
      JsonObject *e = json_array_get_object_element (f, j);

      g_print ("  %8.1f %10.1f %10.1f %10.1f\n", num_or_nan (e, "seconds"),
               num_or_nan (e, "iops"), num_or_nan (e, "lower"), num_or_nan (e, "upper"));
    }
  }
  return EXIT_SUCCESS;
}

static int
cmd_disk_tier (int argc, char **argv, const char *command)
{
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (JsonNode) ret = NULL;
  JsonObject *req;
  int rc;

  if (!parse_opts (&argc, &argv, strcmp (command, "switch") == 0 ?
                   "DISK TIER - switch now (once the tier's child is synced)" :
                   "DISK TIER - make sure TIER is warm; shows how far it is",
                   entries, 2, 2))
    return EXIT_USAGE;
  req = request (command);
  json_object_set_string_member (req, "disk", argv[1]);
  json_object_set_string_member (req, "tier", argv[2]);
  if ((rc = call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (json) {
    print_json (ret);
  } else if (strcmp (command, "switch") == 0) {
    g_print ("%s: switch to %s requested\n", argv[1], argv[2]);
  } else {
    JsonObject *o = json_node_get_object (ret);
    g_autofree char *eta = fmt_num (num_or_nan (o, "eta-s"), "%.0f s");

    g_print ("%s: tier %s (%s) is %s, %.0f MiB valid, %.0f MiB to copy, ready in %s\n",
             argv[1], argv[2], str_or (o, "child", "?"), str_or (o, "state", "?"),
             num_or_nan (o, "valid-bytes") / 1048576, num_or_nan (o, "stale-bytes") / 1048576,
             eta);
  }
  return EXIT_SUCCESS;
}

static int
cmd_pause (int argc, char **argv, const char *command)
{
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (JsonNode) ret = NULL;
  JsonObject *req;
  JsonArray *a;
  int rc;

  if (!parse_opts (&argc, &argv, strcmp (command, "pause") == 0 ?
                   "[DISK] - keep deciding, stop acting" : "[DISK] - act again",
                   entries, 0, 1))
    return EXIT_USAGE;
  req = request (command);
  if (argc > 1)
    json_object_set_string_member (req, "disk", argv[1]);
  if ((rc = call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (json) {
    print_json (ret);
    return EXIT_SUCCESS;
  }
  a = json_node_get_array (ret);
  for (guint i = 0; i < json_array_get_length (a); i++)
    g_print ("%s: %s\n", json_array_get_string_element (a, i),
             strcmp (command, "pause") == 0 ? "paused" : "resumed");
  return EXIT_SUCCESS;
}

/* ---- libvirt domains ---- */

static const char *connect_uri;

static void
print_libvirt (JsonArray *a)
{
  if (json_array_get_length (a) == 0)
    g_print ("no libvirt domain disk has shadow metadata\n");
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *o = json_array_get_object_element (a, i);

    g_print ("%s: domain %s disk %s: %s", str_or (o, "name", "?"), str_or (o, "domain", "?"),
             str_or (o, "target", "?"), str_or (o, "state", "?"));
    if (str_or (o, "error", NULL))
      g_print (": %s", str_or (o, "error", ""));
    else if (g_strcmp0 (str_or (o, "state", ""), "attached") == 0)
      g_print (" (node %s, %s in %.0f ms)", str_or (o, "node", "?"),
               json_object_get_boolean_member_with_default (o, "adopted", FALSE) ?
               "adopted" : "inserted", num_or_nan (o, "attach-ms"));
    g_print ("  [%s]\n", str_or (o, "uri", "?"));
  }
}

static int
cmd_libvirt (int argc, char **argv)
{
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (JsonNode) ret = NULL;
  JsonObject *req;
  int rc;

  if (!parse_opts (&argc, &argv, "[DISK] - the libvirt domain disks and their shadows",
                   entries, 0, 1))
    return EXIT_USAGE;
  req = request ("libvirt");
  if (argc > 1)
    json_object_set_string_member (req, "disk", argv[1]);
  if ((rc = call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (json)
    print_json (ret);
  else
    print_libvirt (json_node_get_array (ret));
  return EXIT_SUCCESS;
}

/* The disk's libvirt state, or NULL when shadowd does not know it (yet) */
static JsonObject *
libvirt_state (const char *name)
{
  g_autoptr (GError) error = NULL;
  JsonObject *req = request ("libvirt");
  g_autoptr (JsonNode) ret = NULL;
  JsonArray *a;

  json_object_set_string_member (req, "disk", name);
  ret = shd_control_call (control_path, req, control_timeout_ms, &error);
  json_object_unref (req);
  if (ret == NULL || !JSON_NODE_HOLDS_ARRAY (ret))
    return NULL;
  a = json_node_get_array (ret);
  if (json_array_get_length (a) == 0)
    return NULL;
  return json_object_ref (json_array_get_object_element (a, 0));
}

static int
cmd_attach (int argc, char **argv, gboolean attach)
{
  int wait_s = 60;
  gboolean no_wait = FALSE;
  GOptionEntry entries[] = {
    { "connect", 'c', 0, G_OPTION_ARG_STRING, &connect_uri, "The domain's libvirt URI", "URI" },
    { "wait", 0, 0, G_OPTION_ARG_INT, &wait_s, "Seconds to wait for the result (60)", "S" },
    { "no-wait", 0, 0, G_OPTION_ARG_NONE, &no_wait, "Return once requested", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (JsonNode) ret = NULL;
  g_autofree char *name = NULL;
  const char *want = attach ? "attached" : "detached";
  gint64 end;
  JsonObject *req;
  int rc;

  if (!parse_opts (&argc, &argv, attach ?
                   "DOMAIN DISK - insert the shadow its metadata describes" :
                   "DOMAIN DISK - give the disk back to libvirt (until attach)",
                   entries, 2, 2))
    return EXIT_USAGE;
  req = request (attach ? "attach" : "detach");
  json_object_set_string_member (req, "domain", argv[1]);
  json_object_set_string_member (req, "target", argv[2]);
  if (connect_uri)
    json_object_set_string_member (req, "uri", connect_uri);
  if ((rc = call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  name = g_strdup_printf ("%s.%s", argv[1], argv[2]);
  if (no_wait) {
    g_print ("%s: %s requested\n", name, attach ? "attach" : "detach");
    return EXIT_SUCCESS;
  }
  end = g_get_monotonic_time () + (gint64) wait_s * G_USEC_PER_SEC;
  /* the first look may still show the previous state */
  g_usleep (200 * 1000);
  for (;;) {
    g_autoptr (JsonObject) o = libvirt_state (name);
    const char *state = o ? str_or (o, "state", "") : (attach ? "" : "detached");

    if (strcmp (state, want) == 0) {
      g_print ("%s: %s\n", name, want);
      return EXIT_SUCCESS;
    }
    if (strcmp (state, "error") == 0) {
      g_printerr ("%s: %s\n", name, str_or (o, "error", "failed"));
      return EXIT_FAILURE;
    }
    if (g_get_monotonic_time () > end) {
      g_printerr ("%s: not %s after %d s (state: %s)\n", name, want, wait_s,
                  *state ? state : "unknown");
      return EXIT_FAILURE;
    }
    g_usleep (200 * 1000);
  }
}

/* virsh-shadow [--connect URI] [--control SOCKET] DOMAIN DISK COMMAND [ARGS]:
 * the same commands, in virsh's order */
static int
virsh_usage (FILE *to)
{
  fprintf (to,
           "Usage: virsh-shadow [--connect URI] [--control SOCKET] DOMAIN DISK COMMAND\n"
           "\n"
           "  attach            insert the shadow the domain's metadata describes\n"
           "  status [--json]   the shadow's state, tiers, load and last decision\n"
           "  switch TIER       switch the disk to TIER now (once it is in sync)\n"
           "  detach            give the disk back to libvirt's own nodes\n"
           "  history [--decisions] [--since 1h] [--json]\n"
           "                    the disk's samples or decisions\n"
           "\n"
           "DISK is the target dev (vda).  Commands go to shadowd's control socket\n"
           "(default %s, or $SHADOWD_CONTROL).\n", "/run/shadowd/control.sock");
  return to == stdout ? EXIT_SUCCESS : EXIT_USAGE;
}

static int
virsh_main (int argc, char **argv)
{
  g_autofree char *name = NULL;
  g_autoptr (GPtrArray) args = g_ptr_array_new ();
  const char *domain, *disk, *command;
  int i = 1;

  prog = "virsh-shadow";
  while (i < argc && argv[i][0] == '-') {
    if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0)
      return virsh_usage (stdout);
    if ((strcmp (argv[i], "--connect") == 0 || strcmp (argv[i], "-c") == 0) && i + 1 < argc) {
      connect_uri = argv[i + 1];
      i += 2;
    } else if (g_str_has_prefix (argv[i], "--connect=")) {
      connect_uri = argv[i] + strlen ("--connect=");
      i++;
    } else if (strcmp (argv[i], "--control") == 0 && i + 1 < argc) {
      control_path = argv[i + 1];
      i += 2;
    } else {
      g_printerr ("virsh-shadow: unknown option '%s'\n", argv[i]);
      return virsh_usage (stderr);
    }
  }
  if (argc - i < 3)
    return virsh_usage (stderr);
  domain = argv[i];
  disk = argv[i + 1];
  command = argv[i + 2];
  name = g_strdup_printf ("%s.%s", domain, disk);
  /* rebuild a shadowctl command line: COMMAND [DISK...] [ARGS] */
  g_ptr_array_add (args, (gpointer) command);
  if (strcmp (command, "attach") == 0 || strcmp (command, "detach") == 0) {
    g_ptr_array_add (args, (gpointer) domain);
    g_ptr_array_add (args, (gpointer) disk);
  } else {
    g_ptr_array_add (args, name);
  }
  for (int j = i + 3; j < argc; j++)
    g_ptr_array_add (args, argv[j]);
  g_ptr_array_add (args, NULL);
  argc = (int) args->len - 1;
  argv = (char **) args->pdata;
  if (strcmp (command, "attach") == 0)
    return cmd_attach (argc, argv, TRUE);
  if (strcmp (command, "detach") == 0)
    return cmd_attach (argc, argv, FALSE);
  if (strcmp (command, "switch") == 0)
    return cmd_disk_tier (argc, argv, "switch");
  if (strcmp (command, "history") == 0)
    return cmd_history (argc, argv);
  if (strcmp (command, "status") == 0) {
    g_autoptr (JsonObject) o = libvirt_state (name);

    if (o && g_strcmp0 (str_or (o, "state", ""), "attached") != 0 &&
        (argc < 2 || strcmp (argv[argc - 1], "--json") != 0)) {
      g_autoptr (JsonArray) a = json_array_new ();

      json_array_add_object_element (a, json_object_ref (o));
      print_libvirt (a);
      return g_strcmp0 (str_or (o, "state", ""), "error") == 0 ? EXIT_FAILURE : EXIT_SUCCESS;
    }
    return cmd_status (argc, argv);
  }
  g_printerr ("virsh-shadow: unknown command '%s'\n", command);
  return virsh_usage (stderr);
}

static void
usage (FILE *to)
{
  fprintf (to,
           "Usage: shadowctl [--control SOCKET] [--timeout MS] COMMAND [OPTIONS]\n"
           "\n"
           "Commands (through shadowd's control socket, default %s,\n"
           "or $SHADOWD_CONTROL):\n"
           "  status [DISK] [--json]         active tier, load, forecast, last decision\n"
           "  history [DISK] [--since 1h] [--resolution full|minute|auto] [--limit N]\n"
           "          [--decisions] [--json] samples or decisions from the history\n"
           "  forecast [DISK] [--steps N] [--json]\n"
           "                                 the load forecast with its interval\n"
           "  prewarm DISK TIER [--json]     make sure a tier is warm; how far it is\n"
           "  switch DISK TIER [--json]      switch now (once the child is synced)\n"
           "  pause [DISK] [--json]          keep deciding, stop acting\n"
           "  resume [DISK] [--json]         act again\n"
           "\n"
           "libvirt domains (DISK is DOMAIN.TARGET above; virsh-shadow(1) has virsh's order):\n"
           "  libvirt [DISK] [--json]        the domain disks with shadow metadata\n"
           "  attach DOMAIN TARGET [--connect URI]\n"
           "                                 insert the shadow (again)\n"
           "  detach DOMAIN TARGET [--connect URI]\n"
           "                                 give the disk back to libvirt until attach\n"
           "\n"
           "Offline:\n"
           "  backtest FILE.csv --column NAME [--period N] [--horizon H] [--json]\n"
           "      rolling-origin backtest of every forecaster on one CSV column\n"
           "\n"
           "Run 'shadowctl COMMAND --help' for the options of a command.\n",
           "/run/shadowd/control.sock");
}
int
main (int argc, char **argv)
{
  const char *env = g_getenv ("SHADOWD_CONTROL");
  int i = 1;

  setlocale (LC_ALL, "");
  if (env && *env)
    control_path = env;
  {
    g_autofree char *base = g_path_get_basename (argv[0]);

    if (strcmp (base, "virsh-shadow") == 0)
      return virsh_main (argc, argv);
  }
  /* global options, before the command */
  while (i < argc && argv[i][0] == '-') {
    if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0) {
      usage (stdout);
      return EXIT_SUCCESS;
    } else if (strcmp (argv[i], "--control") == 0 && i + 1 < argc) {
      control_path = argv[i + 1];
      i += 2;
    } else if (g_str_has_prefix (argv[i], "--control=")) {
      control_path = argv[i] + strlen ("--control=");
      i++;
    } else if (strcmp (argv[i], "--timeout") == 0 && i + 1 < argc) {
      guint64 v;

      if (!g_ascii_string_to_unsigned (argv[i + 1], 10, 1, 3600000, &v, NULL)) {
        g_printerr ("shadowctl: --timeout takes milliseconds\n");
        return EXIT_USAGE;
      }
      control_timeout_ms = (guint) v;
      i += 2;
    } else {
      g_printerr ("shadowctl: unknown option '%s'\n", argv[i]);
      usage (stderr);
      return EXIT_USAGE;
    }
  }
  if (i >= argc) {
    usage (stderr);
    return EXIT_USAGE;
  }
  argc -= i;
  argv += i;
  if (strcmp (argv[0], "backtest") == 0)
    return cmd_backtest (argc, argv);
  if (strcmp (argv[0], "status") == 0)
    return cmd_status (argc, argv);
  if (strcmp (argv[0], "history") == 0)
    return cmd_history (argc, argv);
  if (strcmp (argv[0], "forecast") == 0)
    return cmd_forecast (argc, argv);
  if (strcmp (argv[0], "switch") == 0 || strcmp (argv[0], "prewarm") == 0)
    return cmd_disk_tier (argc, argv, argv[0]);
  if (strcmp (argv[0], "pause") == 0 || strcmp (argv[0], "resume") == 0)
    return cmd_pause (argc, argv, argv[0]);
  if (strcmp (argv[0], "libvirt") == 0)
    return cmd_libvirt (argc, argv);
  if (strcmp (argv[0], "attach") == 0 || strcmp (argv[0], "detach") == 0)
    return cmd_attach (argc, argv, strcmp (argv[0], "attach") == 0);
  g_printerr ("shadowctl: unknown command '%s'\n", argv[0]);
  usage (stderr);
  return EXIT_USAGE;
}
