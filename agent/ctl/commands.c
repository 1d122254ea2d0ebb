/* shadowctl's commands through shadowd's control socket; see ctl.h. */
#include "ctl.h"

#include "client.h"

#include <math.h>
#include <string.h>

const char *ctl_control_path = "/run/shadowd/control.sock";
const char *ctl_prog = "shadowctl";     /* or virsh-shadow, in messages */
guint ctl_timeout_ms = 10000;
const char *ctl_connect_uri;

double
ctl_parse_duration (const char *s)
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

JsonObject *
ctl_request (const char *command)
{
  JsonObject *o = json_object_new ();

  json_object_set_string_member (o, "command", command);
  return o;
}

int
ctl_call (JsonObject *req, JsonNode **out)
{
  g_autoptr (GError) error = NULL;

  *out = shd_control_call (ctl_control_path, req, ctl_timeout_ms, &error);
  json_object_unref (req);
  if (*out == NULL) {
    g_printerr ("%s: %s\n", ctl_prog, error->message);
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}

gboolean
ctl_parse_opts (int *argc, char ***argv, const char *usage_text, GOptionEntry *entries,
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

int
ctl_cmd_status (const CtlCommand *cmd, int argc, char **argv)
{
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (JsonNode) ret = NULL;
  JsonObject *req;
  int rc;

  (void) cmd;

  if (!ctl_parse_opts (&argc, &argv, "[DISK] - the state of each disk", entries, 0, 1))
    return EXIT_USAGE;
  req = ctl_request ("status");
  if (argc > 1)
    json_object_set_string_member (req, "disk", argv[1]);
  if ((rc = ctl_call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (json)
    ctl_print_json (ret);
  else
    ctl_print_status (json_node_get_array (ret));
  return EXIT_SUCCESS;
}

int
ctl_cmd_history (const CtlCommand *cmd, int argc, char **argv)
{
  gboolean json = FALSE, decisions = FALSE, tiers = FALSE;
  g_autofree char *since = NULL, *resolution = NULL;
  int limit = 0;
  GOptionEntry entries[] = {
    { "since", 's', 0, G_OPTION_ARG_STRING, &since,
      "How far back: 90, 30s, 15m, 6h, 7d (default 1h)", "DURATION" },
    { "resolution", 'r', 0, G_OPTION_ARG_STRING, &resolution,
      "full, minute or auto (default)", "RES" },
    { "limit", 'l', 0, G_OPTION_ARG_INT, &limit, "At most N rows, the newest", "N" },
    { "decisions", 'd', 0, G_OPTION_ARG_NONE, &decisions, "Decisions, not samples", NULL },
    { "tiers", 't', 0, G_OPTION_ARG_NONE, &tiers,
      "The tiers' allocated bytes and lifecycle phases, not samples", NULL },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (JsonNode) ret = NULL;
  JsonObject *req;
  JsonArray *a;
  double secs = 3600;
  int rc;

  (void) cmd;

  if (!ctl_parse_opts (&argc, &argv, "[DISK] - samples or decisions from the history",
                   entries, 0, 1))
    return EXIT_USAGE;
  if (since && (secs = ctl_parse_duration (since)) < 0) {
    g_printerr ("shadowctl history: --since '%s' is not a duration (e.g. 90, 15m, 6h, 7d)\n",
                since);
    return EXIT_USAGE;
  }
  if (limit < 0) {
    g_printerr ("shadowctl history: --limit must not be negative\n");
    return EXIT_USAGE;
  }
  req = ctl_request ("history");
  if (argc > 1)
    json_object_set_string_member (req, "disk", argv[1]);
  json_object_set_double_member (req, "since", secs);
  json_object_set_int_member (req, "limit", limit);
  json_object_set_string_member (req, "what", decisions ? "decisions" : tiers ? "tiers" :
                                                                    "samples");
  if (resolution)
    json_object_set_string_member (req, "resolution", resolution);
  if ((rc = ctl_call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (json) {
    ctl_print_json (ret);
    return EXIT_SUCCESS;
  }
  a = json_node_get_array (ret);
  if (tiers)
    g_print ("%-19s %-12s %-10s %14s %-8s %s\n", "time", "disk", "tier", "allocated MiB",
             "phase", "active");
  else if (!decisions)
    g_print ("%-19s %-12s %9s %12s %9s %9s %9s  %s\n", "time", "disk", "IOPS", "bytes/s",
             "lat ms", "forecast", "upper", "tier");
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *o = json_array_get_object_element (a, i);
    g_autofree char *when = ctl_fmt_time (ctl_num (o, "time"));

    if (decisions) {
      g_print ("%s %s %s: %s\n", when, ctl_str (o, "disk", "?"), ctl_str (o, "kind", "?"),
               ctl_str (o, "reason", ""));
    } else if (tiers) {
      g_autofree char *mib = ctl_fmt_num (ctl_num (o, "allocated-bytes") / 1048576, "%.1f");

      g_print ("%-19s %-12s %-10s %14s %-8s %s\n", when, ctl_str (o, "disk", "?"),
               ctl_str (o, "tier", "?"), mib, ctl_str (o, "phase", "?"),
               json_object_get_boolean_member_with_default (o, "active", FALSE) ? "yes" : "");
    } else {
      g_autofree char *iops = ctl_fmt_num (ctl_num (o, "iops"), "%.1f");
      g_autofree char *bps = ctl_fmt_num (ctl_num (o, "bps"), "%.0f");
      g_autofree char *lat = ctl_fmt_num (ctl_num (o, "latency-ms"), "%.3f");
      g_autofree char *fc = ctl_fmt_num (ctl_num (o, "forecast"), "%.1f");
      g_autofree char *hi = ctl_fmt_num (ctl_num (o, "forecast-upper"), "%.1f");

      g_print ("%-19s %-12s %9s %12s %9s %9s %9s  %s\n", when, ctl_str (o, "disk", "?"),
               iops, bps, lat, fc, hi, ctl_str (o, "tier", "-"));
    }
  }
  return EXIT_SUCCESS;
}

int
ctl_cmd_forecast (const CtlCommand *cmd, int argc, char **argv)
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

  (void) cmd;

  if (!ctl_parse_opts (&argc, &argv, "[DISK] - the load forecast with its interval",
                   entries, 0, 1))
    return EXIT_USAGE;
  if (steps < 0) {
    g_printerr ("shadowctl forecast: --steps must not be negative\n");
    return EXIT_USAGE;
  }
  req = ctl_request ("forecast");
  if (argc > 1)
    json_object_set_string_member (req, "disk", argv[1]);
  json_object_set_int_member (req, "steps", steps);
  if ((rc = ctl_call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (json) {
    ctl_print_json (ret);
    return EXIT_SUCCESS;
  }
  a = json_node_get_array (ret);
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *o = json_array_get_object_element (a, i);
    JsonArray *f = json_object_get_array_member (o, "forecast");

    g_print ("%s: model %s, %.0f%% interval\n", ctl_str (o, "name", "?"),
             ctl_str (o, "model", "?"), 100 * ctl_num (o, "level"));
    g_print ("  %8s %10s %10s %10s\n", "seconds", "IOPS", "lower", "upper");
    for (guint j = 0; f && j < json_array_get_length (f); j++) {
      JsonObject *e = json_array_get_object_element (f, j);

      g_print ("  %8.1f %10.1f %10.1f %10.1f\n", ctl_num (e, "seconds"),
               ctl_num (e, "iops"), ctl_num (e, "lower"), ctl_num (e, "upper"));
    }
  }
  return EXIT_SUCCESS;
}

int
ctl_cmd_disk_tier (const CtlCommand *cmd, int argc, char **argv)
{
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (JsonNode) ret = NULL;
  JsonObject *req;
  int rc;

  if (!ctl_parse_opts (&argc, &argv, cmd->flag ?
                   "DISK TIER - switch now (once the tier's child is synced)" :
                   "DISK TIER - make sure TIER is warm; shows how far it is",
                   entries, 2, 2))
    return EXIT_USAGE;
  req = ctl_request (cmd->name);
  json_object_set_string_member (req, "disk", argv[1]);
  json_object_set_string_member (req, "tier", argv[2]);
  if ((rc = ctl_call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (json) {
    ctl_print_json (ret);
  } else if (cmd->flag) {
    g_print ("%s: switch to %s requested\n", argv[1], argv[2]);
  } else {
    JsonObject *o = json_node_get_object (ret);
    g_autofree char *eta = ctl_fmt_num (ctl_num (o, "eta-s"), "%.0f s");

    g_print ("%s: tier %s (%s) is %s, %.0f MiB valid, %.0f MiB to copy, ready in %s\n",
             argv[1], argv[2], ctl_str (o, "child", "?"), ctl_str (o, "state", "?"),
             ctl_num (o, "valid-bytes") / 1048576, ctl_num (o, "stale-bytes") / 1048576,
             eta);
  }
  return EXIT_SUCCESS;
}

int
ctl_cmd_pause (const CtlCommand *cmd, int argc, char **argv)
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

  if (!ctl_parse_opts (&argc, &argv, cmd->flag ?
                   "[DISK] - keep deciding, stop acting" : "[DISK] - act again",
                   entries, 0, 1))
    return EXIT_USAGE;
  req = ctl_request (cmd->name);
  if (argc > 1)
    json_object_set_string_member (req, "disk", argv[1]);
  if ((rc = ctl_call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (json) {
    ctl_print_json (ret);
    return EXIT_SUCCESS;
  }
  a = json_node_get_array (ret);
  for (guint i = 0; i < json_array_get_length (a); i++)
    g_print ("%s: %s\n", json_array_get_string_element (a, i),
             cmd->flag ? "paused" : "resumed");
  return EXIT_SUCCESS;
}

/* ---- libvirt domains ---- */

int
ctl_cmd_libvirt (const CtlCommand *cmd, int argc, char **argv)
{
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (JsonNode) ret = NULL;
  JsonObject *req;
  int rc;

  (void) cmd;

  if (!ctl_parse_opts (&argc, &argv, "[DISK] - the libvirt domain disks and their shadows",
                   entries, 0, 1))
    return EXIT_USAGE;
  req = ctl_request ("libvirt");
  if (argc > 1)
    json_object_set_string_member (req, "disk", argv[1]);
  if ((rc = ctl_call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (json)
    ctl_print_json (ret);
  else
    ctl_print_libvirt (json_node_get_array (ret));
  return EXIT_SUCCESS;
}

/* The disk's libvirt state, or NULL when shadowd does not know it (yet) */
JsonObject *
ctl_libvirt_state (const char *name)
{
  g_autoptr (GError) error = NULL;
  JsonObject *req = ctl_request ("libvirt");
  g_autoptr (JsonNode) ret = NULL;
  JsonArray *a;

  json_object_set_string_member (req, "disk", name);
  ret = shd_control_call (ctl_control_path, req, ctl_timeout_ms, &error);
  json_object_unref (req);
  if (ret == NULL || !JSON_NODE_HOLDS_ARRAY (ret))
    return NULL;
  a = json_node_get_array (ret);
  if (json_array_get_length (a) == 0)
    return NULL;
  return json_object_ref (json_array_get_object_element (a, 0));
}

int
ctl_cmd_attach (const CtlCommand *cmd, int argc, char **argv)
{
  int wait_s = 60;
  gboolean no_wait = FALSE;
  GOptionEntry entries[] = {
    { "connect", 'c', 0, G_OPTION_ARG_STRING, &ctl_connect_uri, "The domain's libvirt URI", "URI" },
    { "wait", 0, 0, G_OPTION_ARG_INT, &wait_s, "Seconds to wait for the result (60)", "S" },
    { "no-wait", 0, 0, G_OPTION_ARG_NONE, &no_wait, "Return once requested", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (JsonNode) ret = NULL;
  g_autofree char *name = NULL;
  gboolean attach = cmd->flag;
  const char *want = attach ? "attached" : "detached";
  gint64 end;
  JsonObject *req;
  int rc;

  if (!ctl_parse_opts (&argc, &argv, attach ?
                   "DOMAIN DISK - insert the shadow its metadata describes" :
                   "DOMAIN DISK - give the disk back to libvirt (until attach)",
                   entries, 2, 2))
    return EXIT_USAGE;
  req = ctl_request (cmd->name);
  json_object_set_string_member (req, "domain", argv[1]);
  json_object_set_string_member (req, "target", argv[2]);
  if (ctl_connect_uri)
    json_object_set_string_member (req, "uri", ctl_connect_uri);
  if ((rc = ctl_call (req, &ret)) != EXIT_SUCCESS)
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
    g_autoptr (JsonObject) o = ctl_libvirt_state (name);
    const char *state = o ? ctl_str (o, "state", "") : (attach ? "" : "detached");

    if (strcmp (state, want) == 0) {
      g_print ("%s: %s\n", name, want);
      return EXIT_SUCCESS;
    }
    if (strcmp (state, "error") == 0) {
      g_printerr ("%s: %s\n", name, ctl_str (o, "error", "failed"));
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
