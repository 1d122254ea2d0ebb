/* shadowctl's human-readable output and JSON; see ctl.h. */
#include "ctl.h"

#include <math.h>

void
ctl_print_json (JsonNode *node)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autofree char *text = NULL;

  json_generator_set_root (gen, node);
  json_generator_set_pretty (gen, TRUE);
  text = json_generator_to_data (gen, NULL);
  g_print ("%s\n", text);
}

/* 90, 90s, 15m, 6h, 7d -> seconds; -1 when malformed */
double
ctl_num (JsonObject *o, const char *name)
{
  JsonNode *n = o ? json_object_get_member (o, name) : NULL;

  if (n == NULL || !JSON_NODE_HOLDS_VALUE (n))
    return NAN;
  return json_node_get_double (n);
}

const char *
ctl_str (JsonObject *o, const char *name, const char *dflt)
{
  JsonNode *n = o ? json_object_get_member (o, name) : NULL;

  if (n == NULL || !JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
    return dflt;
  return json_node_get_string (n);
}

char *
ctl_fmt_time (double t)
{
  g_autoptr (GDateTime) dt = g_date_time_new_from_unix_local ((gint64) t);

  return dt ? g_date_time_format (dt, "%Y-%m-%d %H:%M:%S") : g_strdup ("?");
}

char *
ctl_fmt_num (double v, const char *fmt)
{
  return isfinite (v) ? g_strdup_printf (fmt, v) : g_strdup ("-");
}

void
ctl_print_status (JsonArray *a)
{
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *o = json_array_get_object_element (a, i);
    JsonObject *load = json_object_get_object_member (o, "load");
    JsonObject *fc = json_object_get_object_member (o, "forecast");
    JsonObject *last = json_object_get_object_member (o, "last-decision");
    JsonArray *tiers = json_object_get_array_member (o, "tiers");
    g_autofree char *iops = ctl_fmt_num (ctl_num (load, "iops"), "%.0f");
    g_autofree char *lat = ctl_fmt_num (ctl_num (load, "latency-ms"), "%.2f");
    g_autofree char *next = ctl_fmt_num (ctl_num (fc, "next"), "%.0f");
    g_autofree char *upper = ctl_fmt_num (ctl_num (fc, "horizon-upper"), "%.0f");
    g_autofree char *when = last ? ctl_fmt_time (ctl_num (last, "time")) : NULL;

    g_print ("%s: on %s (%s), %s%s%s\n", ctl_str (o, "name", "?"),
             ctl_str (o, "active-tier", "?"), ctl_str (o, "active-child", "?"),
             json_object_get_boolean_member (o, "connected") ? "connected" : "DISCONNECTED",
             json_object_get_boolean_member (o, "paused") ? ", paused" : "",
             json_object_get_boolean_member (o, "dry-run") ? ", dry run" : "");
    g_print ("  load %s IOPS, %s ms (SLO %.2f ms); forecast %s IOPS, upper %s over %.0f s "
             "(%s)%s\n", iops, lat, ctl_num (o, "slo-latency-ms"), next, upper,
             ctl_num (fc, "horizon-s"), ctl_str (fc, "model", "?"),
             fc && json_object_get_boolean_member_with_default (fc, "spike", FALSE) ?
             ", SPIKE" : "");
    for (guint j = 0; tiers && j < json_array_get_length (tiers); j++) {
      JsonObject *t = json_array_get_object_element (tiers, j);
      g_autofree char *tl = ctl_fmt_num (ctl_num (t, "base-latency-ms"), "%.2f ms");
      g_autofree char *lim = ctl_fmt_num (ctl_num (t, "limit-iops"), "%.0f IOPS");

      g_autofree char *alloc = ctl_fmt_num (ctl_num (t, "allocated-bytes") / 1048576,
                                            "%.0f MiB");

      g_print ("  tier %-10s %-12s %-8s %-9s %5.3f/GiB-month  base %s, limit %s\n",
               ctl_str (t, "name", "?"), ctl_str (t, "child", "?"),
               ctl_str (t, "phase", "?"), ctl_str (t, "state", "absent"),
               ctl_num (t, "cost-gib-month"), tl, lim);
      g_print ("       allocated %s, %.3f GiB-hours, cost %.4f; warmed %.0f, released %.0f "
               "times\n", alloc, ctl_num (t, "gib-hours"), ctl_num (t, "cost"),
               ctl_num (t, "warms"), ctl_num (t, "releases"));
    }
    {
      JsonObject *cost = json_object_get_object_member (o, "cost");
      JsonObject *sf = fc ? json_object_get_object_member (fc, "seasonal") : NULL;

      if (cost)
        g_print ("  cost so far %.4f (every tier's image counted), %.0f s over the SLO in "
                 "%.0f s\n", ctl_num (cost, "total"), ctl_num (cost, "violation-s"),
                 ctl_num (cost, "accounted-s"));
      if (sf) {
        g_autofree char *onset = ctl_fmt_num (ctl_num (sf, "onset-s"), "%.0f s");

        g_print ("  seasonal forecast: %s, season %.0f buckets of %.0f s (%.0f learned); "
                 "next onset over the active tier: %s\n", ctl_str (sf, "model", "none yet"),
                 ctl_num (sf, "season-buckets"), ctl_num (sf, "bucket-s"),
                 ctl_num (sf, "buckets"), isfinite (ctl_num (sf, "onset-s")) ? onset :
                 "none in sight");
      }
    }
    if (json_object_has_member (o, "move")) {
      JsonObject *m = json_object_get_object_member (o, "move");
      double done = ctl_num (m, "done-bytes"), total = ctl_num (m, "total-bytes");
      g_autofree char *eta = ctl_fmt_num (ctl_num (m, "eta-s"), ", ETA %.0f s");
      g_autofree char *rate = ctl_fmt_num (ctl_num (m, "rate-bps") / 1048576, ", %.1f MiB/s");

      g_print ("  move to %s: %s", ctl_str (m, "tier", "?"), ctl_str (m, "state", "?"));
      if (isfinite (done) && isfinite (total) && total > 0)
        g_print (", %.0f of %.0f MiB%s%s", done / 1048576, total / 1048576,
                 isfinite (ctl_num (m, "rate-bps")) ? rate : "",
                 isfinite (ctl_num (m, "eta-s")) ? eta : "");
      if (ctl_str (m, "reason", NULL))
        g_print (": %s", ctl_str (m, "reason", ""));
      g_print ("\n");
    }
    if (json_object_has_member (o, "recommendation")) {
      JsonObject *r = json_object_get_object_member (o, "recommendation");

      if (json_object_get_boolean_member_with_default (r, "move", FALSE))
        g_print ("  recommended: shadowctl move %s %s (%s)\n", ctl_str (o, "name", "?"),
                 ctl_str (r, "tier", "?"), ctl_str (r, "reason", ""));
    }
    if (ctl_str (o, "problem", NULL))
      g_print ("  problem: %s\n", ctl_str (o, "problem", ""));
    if (last)
      g_print ("  last decision (%s): %s: %s\n", when, ctl_str (last, "kind", "?"),
               ctl_str (last, "reason", ""));
  }
}

void
ctl_print_libvirt (JsonArray *a)
{
  if (json_array_get_length (a) == 0)
    g_print ("no libvirt domain disk has shadow metadata\n");
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *o = json_array_get_object_element (a, i);

    g_print ("%s: domain %s disk %s: %s", ctl_str (o, "name", "?"), ctl_str (o, "domain", "?"),
             ctl_str (o, "target", "?"), ctl_str (o, "state", "?"));
    if (ctl_str (o, "error", NULL))
      g_print (": %s", ctl_str (o, "error", ""));
    else if (g_strcmp0 (ctl_str (o, "state", ""), "attached") == 0)
      g_print (" (node %s, %s in %.0f ms)", ctl_str (o, "node", "?"),
               json_object_get_boolean_member_with_default (o, "adopted", FALSE) ?
               "adopted" : "inserted", ctl_num (o, "attach-ms"));
    g_print ("  [%s]\n", ctl_str (o, "uri", "?"));
    if (json_object_has_member (o, "move") &&
        JSON_NODE_HOLDS_OBJECT (json_object_get_member (o, "move"))) {
      JsonObject *m = json_object_get_object_member (o, "move");

      g_print ("  move to %s (libvirt block copy into %s): %s", ctl_str (m, "tier", "?"),
               ctl_str (m, "image", "?"), ctl_str (m, "state", "?"));
      if (ctl_str (m, "reason", NULL))
        g_print (": %s", ctl_str (m, "reason", ""));
      g_print ("\n");
    }
  }
}

