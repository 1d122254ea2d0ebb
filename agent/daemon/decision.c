/* A decision of the policy as JSON and as a journal entry; see decision.h. */
#include "decision.h"

#include "jsonutil.h"
#include "log.h"

#include <math.h>
#include <string.h>

JsonNode *
shd_decision_to_json (const ShdDecision *d, const ShdPolicy *p, gint64 wall_ms)
{
  JsonObject *o = json_object_new ();
  JsonNode *n = json_node_new (JSON_NODE_OBJECT);

  json_object_set_double_member (o, "time", wall_ms / 1000.0);
  json_object_set_string_member (o, "kind", shd_decision_kind_name (d->kind));
  json_object_set_string_member (o, "action", shd_action_name (d->action));
  shd_json_set_str (o, "from", shd_policy_tier_name (p, d->from));
  shd_json_set_str (o, "to", shd_policy_tier_name (p, d->target));
  shd_json_set_str (o, "trigger", shd_trigger_name (d->trigger));
  json_object_set_boolean_member (o, "dry-run", d->dry_run);
  json_object_set_boolean_member (o, "spike", d->spike);
  shd_json_set_num (o, "spike-z", d->spike_z);
  shd_json_set_num (o, "load", d->load);
  shd_json_set_num (o, "forecast", d->forecast);
  shd_json_set_num (o, "forecast-upper", d->forecast_hi);
  if (d->onset_steps >= 0)
    json_object_set_int_member (o, "onset-steps", d->onset_steps);
  else
    json_object_set_null_member (o, "onset-steps");
  shd_json_set_num (o, "need", d->need);
  shd_json_set_num (o, "active-limit", d->active_limit);
  shd_json_set_num (o, "target-limit", d->target_limit);
  shd_json_set_num (o, "active-latency-ms", d->active_latency_ms);
  shd_json_set_num (o, "target-latency-ms", d->target_latency_ms);
  shd_json_set_num (o, "prewarm-eta-s", d->prewarm_eta_s);
  json_object_set_int_member (o, "stale-bytes", d->stale_bytes);
  shd_json_set_str (o, "model", d->model);
  shd_json_set_str (o, "outlook-model", d->outlook_model);
  shd_json_set_num (o, "onset-s", d->onset_s);
  shd_json_set_num (o, "outlook-peak", d->outlook_peak);
  shd_json_set_num (o, "warm-s", d->warm_s);
  json_object_set_string_member (o, "reason", d->reason);
  json_node_take_object (n, o);
  return n;
}

static char *
num (double v)
{
  return isfinite (v) ? g_strdup_printf ("%.6g", v) : g_strdup ("");
}

void
shd_decision_log (const char *disk, const ShdDecision *d, const char *from, const char *to)
{
  g_autofree char *msg = g_strdup_printf ("%s: %s", disk, d->reason);
  g_autofree char *load = num (d->load), *fc = num (d->forecast);
  g_autofree char *hi = num (d->forecast_hi), *need = num (d->need);
  g_autofree char *lat = num (d->active_latency_ms), *lim = num (d->active_limit);
  g_autofree char *eta = num (d->prewarm_eta_s), *onset = num (d->onset_s);
  GLogField f[] = {
    { "GLIB_DOMAIN", G_LOG_DOMAIN, -1 },
    { "MESSAGE", msg, -1 },
    { "SHADOWD_DISK", disk, -1 },
    { "SHADOWD_EVENT", "decision", -1 },
    { "SHADOWD_KIND", shd_decision_kind_name (d->kind), -1 },
    { "SHADOWD_ACTION", shd_action_name (d->action), -1 },
    { "SHADOWD_FROM", from ? from : "", -1 },
    { "SHADOWD_TO", to ? to : "", -1 },
    { "SHADOWD_TRIGGER", shd_trigger_name (d->trigger) ? shd_trigger_name (d->trigger) : "", -1 },
    { "SHADOWD_DRY_RUN", d->dry_run ? "1" : "0", -1 },
    { "SHADOWD_LOAD", load, -1 },
    { "SHADOWD_FORECAST", fc, -1 },
    { "SHADOWD_FORECAST_UPPER", hi, -1 },
    { "SHADOWD_NEED", need, -1 },
    { "SHADOWD_LATENCY_MS", lat, -1 },
    { "SHADOWD_ACTIVE_LIMIT", lim, -1 },
    { "SHADOWD_PREWARM_ETA_S", eta, -1 },
    { "SHADOWD_MODEL", d->model ? d->model : "", -1 },
    { "SHADOWD_ONSET_S", onset, -1 },
  };
  GLogLevelFlags level = d->action == SHD_ACTION_NONE &&
                         d->kind == SHD_DECISION_HOLD ? G_LOG_LEVEL_INFO :
                         G_LOG_LEVEL_MESSAGE;

  shd_log_fields (level, f, G_N_ELEMENTS (f));
}
