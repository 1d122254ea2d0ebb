/* The tiering policy of one disk; see policy.h. */
#include "policy.h"

#include "forecast.h"
#include "ring.h"
#include "spike.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define WARMUP 20               /* samples before the forecast may trigger */
#define RESID_WINDOW 24         /* one-step errors for the robust interval */
#define SWITCH_LOG 64           /* switch times kept for the hourly cap */
#define MAX_HORIZON 600         /* steps */
#define BASE_ALPHA 0.1          /* smoothing of the base latency */
#define MIN_LOAD 1.0            /* IOPS below which latency says nothing */
#define CAPACITY_MEMORY_S 3600  /* a learned capacity is kept this long */
#define SATURATED_QUEUE 1.0     /* mean requests in flight to call a tier saturated */

struct _ShdPolicy {
  ShdPolicyConfig cfg;
  ShdForecaster *fc;
  ShdSpikeDetector *spike;
  ShdTierProfile prof[SHD_POLICY_MAX_TIERS];
  double cap_learned_t[SHD_POLICY_MAX_TIERS];
  double unavailable_until[SHD_POLICY_MAX_TIERS];  /* adding the child failed */
  double now;
  int order[SHD_POLICY_MAX_TIERS];      /* tier indexes, cheapest first */
  int active;
  guint64 n;
  double last_point;            /* previous one-step forecast, NAN */
  ShdRing resid;                /* one-step errors of the forecast in use */
  double *scratch;
  guint violations;
  gboolean hi_over_prev;        /* last interval's upper bound crossed too */
  double low_since;             /* NAN: the load is not low */
  double last_switch_t;         /* NAN: never */
  ShdRing switches;             /* times of switches */
  guint switch_count;
  int requested;                /* manual switch pending; -1 */
  gboolean paused;
  ShdDecision last;
};

static const char *const action_names[] = {
  [SHD_ACTION_NONE] = "none",
  [SHD_ACTION_PREWARM] = "prewarm",
  [SHD_ACTION_SWITCH] = "switch",
};

static const char *const kind_names[] = {
  [SHD_DECISION_NO_DATA] = "no-data",
  [SHD_DECISION_HOLD] = "hold",
  [SHD_DECISION_SWITCH_UP] = "switch-up",
  [SHD_DECISION_SWITCH_BACK] = "switch-back",
  [SHD_DECISION_SWITCH_MANUAL] = "switch-manual",
  [SHD_DECISION_PREWARM] = "prewarm",
  [SHD_DECISION_WAIT_SYNC] = "wait-sync",
  [SHD_DECISION_BLOCKED] = "blocked",
};

static const char *const trigger_names[] = {
  [SHD_TRIGGER_NONE] = NULL,
  [SHD_TRIGGER_SPIKE] = "spike",
  [SHD_TRIGGER_FORECAST] = "forecast",
  [SHD_TRIGGER_SLO] = "slo",
  [SHD_TRIGGER_LOW_LOAD] = "low-load",
  [SHD_TRIGGER_MANUAL] = "manual",
};

const char *
shd_action_name (ShdAction a)
{
  g_return_val_if_fail ((guint) a < G_N_ELEMENTS (action_names), "?");
  return action_names[a];
}

const char *
shd_decision_kind_name (ShdDecisionKind k)
{
  g_return_val_if_fail ((guint) k < G_N_ELEMENTS (kind_names), "?");
  return kind_names[k];
}

const char *
shd_trigger_name (ShdTrigger t)
{
  g_return_val_if_fail ((guint) t < G_N_ELEMENTS (trigger_names), NULL);
  return trigger_names[t];
}

void
shd_policy_knobs_init (ShdPolicyKnobs *k)
{
  k->horizon_s = 30;
  k->level = 0.9;
  k->hysteresis = 0.25;
  k->min_dwell_s = 60;
  k->max_switches_per_hour = 6;
  k->switch_back_after_s = 120;
  k->spike_sensitivity = 1.0;
  k->max_utilization = 0.8;
  k->violation_intervals = 3;
  k->period = 0;
}

void
shd_policy_config_clear (ShdPolicyConfig *cfg)
{
  for (guint i = 0; i < cfg->n_tiers; i++) {
    g_clear_pointer (&cfg->tiers[i].tier, g_free);
    g_clear_pointer (&cfg->tiers[i].child, g_free);
  }
  cfg->n_tiers = 0;
}

guint
shd_policy_horizon_steps (const ShdPolicy *p)
{
  double h = ceil (p->cfg.knobs.horizon_s / p->cfg.interval_s);

  return (guint) CLAMP (h, 1, MAX_HORIZON);
}

ShdPolicy *
shd_policy_new (const ShdPolicyConfig *cfg)
{
  ShdPolicy *p = g_new0 (ShdPolicy, 1);
  ShdForecastConfig fc;
  ShdSpikeConfig sc;

  g_return_val_if_fail (cfg->n_tiers >= 1 && cfg->n_tiers <= SHD_POLICY_MAX_TIERS, NULL);
  p->cfg = *cfg;
  for (guint i = 0; i < cfg->n_tiers; i++) {
    p->cfg.tiers[i].tier = g_strdup (cfg->tiers[i].tier);
    p->cfg.tiers[i].child = g_strdup (cfg->tiers[i].child);
    p->prof[i].base_latency_ms = cfg->tiers[i].prior_latency_ms > 0 ?
                                 cfg->tiers[i].prior_latency_ms : NAN;
    p->prof[i].capacity_iops = cfg->tiers[i].prior_max_iops;
    p->prof[i].latency_ms = NAN;
    p->prof[i].copy_bps = NAN;
    p->cap_learned_t[i] = NAN;
    p->unavailable_until[i] = -INFINITY;
    p->order[i] = i;
  }
  /* cheapest first; equal costs keep the file order */
  for (guint i = 1; i < cfg->n_tiers; i++)
    for (guint j = i; j > 0 &&
         cfg->tiers[p->order[j]].cost_gib_month <
         cfg->tiers[p->order[j - 1]].cost_gib_month; j--) {
      int t = p->order[j];
      p->order[j] = p->order[j - 1];
      p->order[j - 1] = t;
    }

  shd_forecast_config_init (&fc);
  fc.period = cfg->knobs.period;
  fc.level = cfg->knobs.level;
  fc.horizon = MIN (shd_policy_horizon_steps (p), 8);
  p->fc = shd_forecaster_new (&fc);
  shd_spike_config_init (&sc);
  shd_spike_config_set_sensitivity (&sc, cfg->knobs.spike_sensitivity);
  p->spike = shd_spike_new (&sc);
  shd_ring_init (&p->resid, RESID_WINDOW);
  p->scratch = g_new (double, RESID_WINDOW);
  shd_ring_init (&p->switches, SWITCH_LOG);
  p->active = -1;
  p->last_point = NAN;
  p->low_since = NAN;
  p->last_switch_t = NAN;
  p->requested = -1;
  p->last.kind = SHD_DECISION_NO_DATA;
  p->last.from = p->last.target = -1;
  p->last.onset_steps = -1;
  p->last.prewarm_eta_s = NAN;
  p->last.forecast = p->last.forecast_hi = NAN;
  p->last.active_latency_ms = p->last.target_latency_ms = NAN;
  g_strlcpy (p->last.reason, "no sample yet", sizeof p->last.reason);
  return p;
}

void
shd_policy_free (ShdPolicy *p)
{
  if (p == NULL)
    return;
  shd_policy_config_clear (&p->cfg);
  shd_forecaster_free (p->fc);
  shd_spike_free (p->spike);
  shd_ring_clear (&p->resid);
  shd_ring_clear (&p->switches);
  g_free (p->scratch);
  g_free (p);
}

const char *
shd_policy_tier_name (const ShdPolicy *p, int tier)
{
  return tier >= 0 && (guint) tier < p->cfg.n_tiers ? p->cfg.tiers[tier].tier : NULL;
}

int
shd_policy_tier_by_name (const ShdPolicy *p, const char *tier)
{
  for (guint i = 0; i < p->cfg.n_tiers; i++)
    if (strcmp (p->cfg.tiers[i].tier, tier) == 0)
      return i;
  return -1;
}

int
shd_policy_tier_by_child (const ShdPolicy *p, const char *child)
{
  if (child == NULL)
    return -1;
  for (guint i = 0; i < p->cfg.n_tiers; i++)
    if (strcmp (p->cfg.tiers[i].child, child) == 0)
      return i;
  return -1;
}

int shd_policy_active (const ShdPolicy *p) { return p->active; }
const ShdPolicyConfig *shd_policy_config (const ShdPolicy *p) { return &p->cfg; }
const ShdDecision *shd_policy_last (const ShdPolicy *p) { return &p->last; }
guint shd_policy_switch_count (const ShdPolicy *p) { return p->switch_count; }
gboolean shd_policy_paused (const ShdPolicy *p) { return p->paused; }
void shd_policy_set_paused (ShdPolicy *p, gboolean paused) { p->paused = paused; }

const ShdTierProfile *
shd_policy_profile (const ShdPolicy *p, int tier)
{
  g_return_val_if_fail (tier >= 0 && (guint) tier < p->cfg.n_tiers, NULL);
  return &p->prof[tier];
}

const char *
shd_policy_model (const ShdPolicy *p)
{
  return shd_model_kind_name (shd_forecaster_best (p->fc));
}

void
shd_policy_request_switch (ShdPolicy *p, int tier)
{
  g_return_if_fail (tier >= -1 && tier < (int) p->cfg.n_tiers);
  p->requested = tier;
}

void
shd_policy_mark_unavailable (ShdPolicy *p, int tier, double until)
{
  g_return_if_fail (tier >= 0 && (guint) tier < p->cfg.n_tiers);
  p->unavailable_until[tier] = until;
}

void
shd_policy_warm (ShdPolicy *p, const double *load, gsize n)
{
  ShdSpikeReport sr;
  double pt, lo, hi;

  for (gsize i = 0; i < n; i++) {
    if (!isfinite (load[i]))
      continue;
    if (isfinite (p->last_point))
      shd_ring_push (&p->resid, fabs (load[i] - p->last_point));
    shd_forecaster_update (p->fc, load[i]);
    shd_spike_update (p->spike, load[i], &sr);
    p->n++;
    p->last_point = shd_policy_forecast (p, 1, &pt, &lo, &hi) ? pt : NAN;
  }
}

void
shd_policy_switch_failed (ShdPolicy *p, const char *why)
{
  if (p->last.action == SHD_ACTION_SWITCH && p->active == p->last.target) {
    p->active = p->last.from;
    if (p->switch_count > 0)
      p->switch_count--;
    if (p->switches.len > 0)
      p->switches.len--;        /* drop the newest */
  }
  g_debug ("switch failed: %s", why);
}

/* ---- the tier model ---- */

double
shd_policy_tier_limit (const ShdPolicy *p, int tier)
{
  const ShdTierProfile *pr = &p->prof[tier];
  double slo = p->cfg.slo_latency_ms, cap = pr->capacity_iops;
  double base = pr->base_latency_ms;

  if (isfinite (base) && base > slo)
    return 0;
  if (cap <= 0)
    return INFINITY;
  if (!isfinite (base))
    return p->cfg.knobs.max_utilization * cap;
  return MIN (p->cfg.knobs.max_utilization * cap, cap * (1 - base / slo));
}

static double
predicted_latency (const ShdPolicy *p, int tier, double load)
{
  const ShdTierProfile *pr = &p->prof[tier];
  double base = pr->base_latency_ms;

  if (!isfinite (base))
    return NAN;
  if (pr->capacity_iops <= 0)
    return base;
  if (load >= pr->capacity_iops)
    return INFINITY;
  return base / (1 - load / pr->capacity_iops);
}

static gboolean
meets (const ShdPolicy *p, int tier, double load)
{
  double limit = shd_policy_tier_limit (p, tier);

  return limit > 0 && load <= limit;
}

/* A tier the disk may go to: in the node and not degraded, or not in the
 * node yet (the agent adds its child) unless adding it failed lately. */
static gboolean
usable (const ShdPolicy *p, int tier)
{
  const char *s = p->prof[tier].state;

  if (s == NULL)
    return p->cfg.add_children && !(p->now < p->unavailable_until[tier]);
  return strcmp (s, "degraded") != 0;
}

static gboolean
absent (const ShdPolicy *p, int tier)
{
  return p->prof[tier].state == NULL;
}

static gboolean
ready (const ShdPolicy *p, int tier)
{
  const char *s = p->prof[tier].state;

  return s != NULL && (strcmp (s, "synced") == 0 || strcmp (s, "active") == 0);
}

static double
cost (const ShdPolicy *p, int tier)
{
  return p->cfg.tiers[tier].cost_gib_month;
}

static void
update_profiles (ShdPolicy *p, const ShdPolicyInput *in)
{
  double slo = p->cfg.slo_latency_ms;
  gboolean copying = FALSE;
  /* the child really serving I/O (in a dry run p->active is virtual) */
  int serving = shd_policy_tier_by_child (p, in->active);

  /* while a shadow is being pre-warmed, its copy reads compete with the
   * guest on the active child: latency then says little about capacity */
  for (guint c = 0; c < in->n_children; c++)
    if (in->children[c].valid && in->children[c].copy_bps > 0)
      copying = TRUE;
  /* a learned capacity is forgotten after an hour without confirmation:
   * the tier may have been busy with something else at the time */
  for (guint i = 0; i < p->cfg.n_tiers; i++)
    if (p->prof[i].capacity_iops > 0 && isfinite (p->cap_learned_t[i]) &&
        in->t - p->cap_learned_t[i] > CAPACITY_MEMORY_S) {
      p->prof[i].capacity_iops = p->cfg.tiers[i].prior_max_iops;
      p->cap_learned_t[i] = NAN;
    }

  for (guint i = 0; i < p->cfg.n_tiers; i++)
    p->prof[i].state = NULL;
  for (guint c = 0; c < in->n_children; c++) {
    const ShdPolicyChild *ch = &in->children[c];
    int i = shd_policy_tier_by_child (p, ch->child);
    ShdTierProfile *pr;

    if (i < 0)
      continue;
    pr = &p->prof[i];
    pr->state = g_intern_string (ch->state ? ch->state : "unknown");
    pr->valid_bytes = ch->valid_bytes;
    if (!ch->valid)
      continue;
    pr->copy_bps = ch->copy_bps;
    if (!isfinite (ch->latency_ms) || ch->iops < MIN_LOAD) {
      pr->latency_ms = NAN;
      continue;
    }
    pr->latency_ms = ch->latency_ms;
    /* capacity: what the tier delivered while it carried the whole load
     * and missed the SLO; raised when it later did more within it */
    if (i == serving) {
      /* saturated: over the SLO with requests queueing (Little's law: at
       * least one in flight on average); slow requests at light load say
       * nothing about capacity */
      if (ch->latency_ms > slo && !copying &&
          ch->iops * ch->latency_ms / 1000 >= SATURATED_QUEUE) {
        pr->capacity_iops = pr->capacity_iops > 0 ?
                            MIN (pr->capacity_iops, ch->iops) * 0.5 +
                            ch->iops * 0.5 : ch->iops;
        p->cap_learned_t[i] = in->t;
      } else if (pr->capacity_iops > 0 && ch->iops > pr->capacity_iops) {
        pr->capacity_iops = ch->iops * 1.1;
      }
    }
    /* base latency: the light-load latency of the child serving I/O, the
     * queueing share removed where the capacity is known.  Not from
     * shadows: they only see mirrored writes, which on a throttled tier
     * queue behind the copy and say little about serving the guest. */
    if (i == serving && ch->latency_ms <= slo) {
      double b = ch->latency_ms;

      if (pr->capacity_iops > 0)
        b *= 1 - MIN (ch->iops / pr->capacity_iops, 0.9);
      pr->base_latency_ms = isfinite (pr->base_latency_ms) ?
        (1 - BASE_ALPHA) * pr->base_latency_ms + BASE_ALPHA * b : b;
    }
  }
}

/* Robust sigma of the one-step errors of the forecast in use. */
static double
resid_sigma (ShdPolicy *p)
{
  guint n = p->resid.len;

  if (n < 5)
    return NAN;
  shd_ring_copy (&p->resid, p->scratch);
  return 1.4826 * shd_median_inplace (p->scratch, n);
}

gboolean
shd_policy_forecast (const ShdPolicy *p, guint h, double *point, double *lo,
                     double *hi)
{
  ShdPrediction pr;
  double sigma, z;

  if (!shd_forecaster_predict (p->fc, h, &pr))
    return FALSE;
  *point = MAX (pr.point, 0);
  sigma = resid_sigma ((ShdPolicy *) p);
  z = shd_normal_quantile (0.5 + p->cfg.knobs.level / 2);
  if (isfinite (sigma)) {
    /* the model's own interval is inflated for a long time by every past
     * spike; the MAD of recent errors is not.  Beyond 4 steps the width
     * stops growing: over the horizons used here load is mean-reverting,
     * and a random-walk width would make every tier look too small. */
    *lo = MAX (*point - z * sigma * sqrt (MIN (h, 4)), 0);
    *hi = *point + z * sigma * sqrt (MIN (h, 4));
  } else if (pr.has_interval) {
    *lo = MAX (pr.lo, 0);
    *hi = pr.hi;
  } else {
    *lo = *hi = *point;
  }
  return TRUE;
}

static guint
switches_last_hour (const ShdPolicy *p, double t)
{
  guint n = 0;

  for (guint i = 0; i < p->switches.len; i++)
    if (t - shd_ring_get (&p->switches, i) < 3600)
      n++;
  return n;
}

static double
prewarm_eta (const ShdPolicy *p, int tier, guint64 size, guint64 *stale)
{
  const ShdTierProfile *pr = &p->prof[tier];

  *stale = size > pr->valid_bytes ? size - pr->valid_bytes : 0;
  if (ready (p, tier))
    return 0;
  if (*stale == 0 || !isfinite (pr->copy_bps) || pr->copy_bps <= 0)
    return NAN;
  return *stale / pr->copy_bps;
}

static const char *
tier_name (const ShdPolicy *p, int i)
{
  return i >= 0 ? p->cfg.tiers[i].tier : "?";
}

#define REASON(d, ...) snprintf ((d)->reason, sizeof (d)->reason, __VA_ARGS__)

/* The switch itself, once the target and trigger are known. */
static void
decide_switch (ShdPolicy *p, ShdDecision *d, const ShdPolicyInput *in, int target,
               ShdDecisionKind kind, ShdTrigger trigger, gboolean manual)
{
  const ShdPolicyKnobs *k = &p->cfg.knobs;
  guint hour = switches_last_hour (p, in->t);
  char why[200];

  d->target = target;
  d->trigger = trigger;
  d->target_limit = shd_policy_tier_limit (p, target);
  d->target_latency_ms = predicted_latency (p, target, d->need);
  d->prewarm_eta_s = prewarm_eta (p, target, in->size_bytes, &d->stale_bytes);

  switch (trigger) {
  case SHD_TRIGGER_SPIKE:
    snprintf (why, sizeof why, "spike at %.0f IOPS (robust z %.1f) over %s's limit %.0f",
              d->load, d->spike_z, tier_name (p, p->active), d->active_limit);
    break;
  case SHD_TRIGGER_FORECAST:
    snprintf (why, sizeof why, "forecast %.0f IOPS (upper %.0f, %s) next interval over "
              "%s's limit %.0f", d->forecast, d->forecast_hi, d->model,
              tier_name (p, p->active), d->active_limit);
    break;
  case SHD_TRIGGER_SLO:
    snprintf (why, sizeof why, "latency %.2f ms over the SLO %.2f ms for %u intervals "
              "at %.0f IOPS", d->active_latency_ms, p->cfg.slo_latency_ms,
              p->violations, d->load);
    break;
  case SHD_TRIGGER_LOW_LOAD:
    snprintf (why, sizeof why, "load %.0f IOPS (needs %.0f) under %s's limit %.0f "
              "less %.0f%% hysteresis for %.0f s", d->load, d->need,
              tier_name (p, target), d->target_limit, 100 * k->hysteresis,
              in->t - p->low_since);
    break;
  case SHD_TRIGGER_NONE:
  case SHD_TRIGGER_MANUAL:
    snprintf (why, sizeof why, "requested by the operator");
    break;
  }

  if (absent (p, target)) {
    d->kind = SHD_DECISION_PREWARM;
    d->action = SHD_ACTION_PREWARM;
    REASON (d, "%s wants %s -> %s but %s's child %s is not in the node: adding it; %s",
            kind_names[kind], tier_name (p, p->active), tier_name (p, target),
            tier_name (p, target), p->cfg.tiers[target].child, why);
    return;
  }
  if (!ready (p, target)) {
    d->kind = SHD_DECISION_WAIT_SYNC;
    d->action = p->cfg.async_writes ? SHD_ACTION_PREWARM : SHD_ACTION_NONE;
    if (isfinite (d->prewarm_eta_s))
      REASON (d, "%s wants %s -> %s but %s is %s: %" G_GUINT64_FORMAT
              " bytes to copy, about %.0f s at %.1f MB/s; %s", kind_names[kind],
              tier_name (p, p->active), tier_name (p, target), tier_name (p, target),
              p->prof[target].state, d->stale_bytes, d->prewarm_eta_s,
              p->prof[target].copy_bps / 1e6, why);
    else
      REASON (d, "%s wants %s -> %s but %s is %s; %s", kind_names[kind], tier_name (p, p->active),
              tier_name (p, target), tier_name (p, target), p->prof[target].state, why);
    return;
  }
  if (!manual && isfinite (p->last_switch_t) && in->t - p->last_switch_t < k->min_dwell_s) {
    d->kind = SHD_DECISION_BLOCKED;
    REASON (d, "%s to %s held: %.0f s since the last switch, min-dwell %.0f s; %s",
            kind_names[kind], tier_name (p, target), in->t - p->last_switch_t, k->min_dwell_s, why);
    return;
  }
  if (!manual && hour >= k->max_switches_per_hour) {
    d->kind = SHD_DECISION_BLOCKED;
    REASON (d, "%s to %s held: %u switches in the last hour, cap %u; %s", kind_names[kind],
            tier_name (p, target), hour, k->max_switches_per_hour, why);
    return;
  }
  d->kind = kind;
  d->action = SHD_ACTION_SWITCH;
  if (isfinite (d->target_latency_ms))
    REASON (d, "%s %s -> %s: %s; %s at %.0f IOPS: predicted %.2f ms, limit %.0f IOPS",
            kind_names[kind], tier_name (p, p->active), tier_name (p, target), why,
            tier_name (p, target), d->need, d->target_latency_ms, d->target_limit);
  else
    REASON (d, "%s %s -> %s: %s; %s not measured yet, limit %.0f IOPS", kind_names[kind],
            tier_name (p, p->active), tier_name (p, target), why, tier_name (p, target),
            d->target_limit);
}

const ShdDecision *
shd_policy_step (ShdPolicy *p, const ShdPolicyInput *in)
{
  const ShdPolicyKnobs *k = &p->cfg.knobs;
  ShdDecision *d = &p->last;
  ShdSpikeReport sr;
  guint H = shd_policy_horizon_steps (p);
  double point1 = NAN, lo, hi, hi1 = NAN, hi_max = NAN;
  int wanted = -1, in_active;
  gboolean spike_now;

  memset (d, 0, sizeof *d);
  p->now = in->t;
  d->t = in->t;
  d->from = d->target = -1;
  d->onset_steps = -1;
  d->forecast = d->forecast_hi = NAN;
  d->active_latency_ms = d->target_latency_ms = NAN;
  d->prewarm_eta_s = NAN;
  d->active_limit = d->target_limit = NAN;
  d->dry_run = p->cfg.dry_run || p->paused;

  in_active = shd_policy_tier_by_child (p, in->active);
  if (!p->cfg.dry_run || p->active < 0)
    p->active = in_active;
  d->from = p->active;
  update_profiles (p, in);

  if (!in->valid || p->active < 0) {
    d->kind = SHD_DECISION_NO_DATA;
    d->load = in->iops;
    if (p->active < 0)
      REASON (d, "the active child %s is not a configured tier", in->active ? in->active : "(none)");
    else
      REASON (d, "no valid rates this interval");
    return d;
  }

  /* load, forecast, spike */
  d->load = in->iops;
  if (isfinite (p->last_point))
    shd_ring_push (&p->resid, fabs (in->iops - p->last_point));
  shd_forecaster_update (p->fc, in->iops);
  p->n++;
  shd_spike_update (p->spike, in->iops, &sr);
  spike_now = sr.in_spike;
  d->spike = spike_now;
  d->spike_z = sr.z;
  d->model = shd_policy_model (p);
  for (guint h = 1; h <= H; h++) {
    double pt;

    if (!shd_policy_forecast (p, h, &pt, &lo, &hi))
      break;
    if (h == 1) {
      point1 = pt;
      hi1 = hi;
      d->forecast = pt;
      p->last_point = pt;
    }
    hi_max = isfinite (hi_max) ? MAX (hi_max, hi) : hi;
  }
  d->forecast_hi = hi_max;
  d->need = isfinite (hi_max) && p->n >= WARMUP ? MAX (in->iops, hi_max) : in->iops;
  d->active_latency_ms = in->latency_ms;
  d->active_limit = shd_policy_tier_limit (p, p->active);
  if (p->n >= WARMUP && isfinite (hi_max))
    for (guint h = 1; h <= H; h++) {
      double pt;

      if (!shd_policy_forecast (p, h, &pt, &lo, &hi))
        break;
      if (hi > d->active_limit) {
        d->onset_steps = h;
        break;
      }
    }

  /* measured SLO misses on the active tier */
  if (isfinite (in->latency_ms) && in->iops >= MIN_LOAD &&
      in->latency_ms > p->cfg.slo_latency_ms)
    p->violations++;
  else
    p->violations = 0;

  /* the wanted tier: the cheapest usable one that meets the need */
  for (guint o = 0; o < p->cfg.n_tiers; o++) {
    int i = p->order[o];

    if (usable (p, i) && meets (p, i, d->need)) {
      wanted = i;
      break;
    }
  }
  if (wanted < 0) {
    /* none meets it: the one with the highest limit, ties to the dearest */
    double best = -1;

    for (guint o = 0; o < p->cfg.n_tiers; o++) {
      int i = p->order[o];
      double l = shd_policy_tier_limit (p, i);

      if (usable (p, i) && l >= best) {
        best = l;
        wanted = i;
      }
    }
  }
  if ((p->violations >= k->violation_intervals ||
       (p->violations >= 1 && in->iops > d->active_limit)) && wanted >= 0 &&
      cost (p, wanted) <= cost (p, p->active)) {
    /* measured misses overrule the model: go up one step at least */
    for (guint o = 0; o < p->cfg.n_tiers; o++) {
      int i = p->order[o];

      if (usable (p, i) && cost (p, i) > cost (p, p->active)) {
        wanted = i;
        break;
      }
    }
  }

  /* operator request */
  if (p->requested >= 0) {
    if (p->requested == p->active) {
      p->requested = -1;
    } else {
      decide_switch (p, d, in, p->requested, SHD_DECISION_SWITCH_MANUAL, SHD_TRIGGER_MANUAL, TRUE);
      if (d->action == SHD_ACTION_SWITCH)
        p->requested = -1;
      d->dry_run = p->cfg.dry_run;      /* pause holds the policy, not the operator */
      goto out;
    }
  }

  /* low-load bookkeeping for switch-back */
  {
    gboolean low = FALSE;

    for (guint o = 0; o < p->cfg.n_tiers; o++) {
      int i = p->order[o];

      if (cost (p, i) >= cost (p, p->active))
        break;
      if (usable (p, i) && meets (p, i, d->need / (1 - k->hysteresis))) {
        low = TRUE;
        break;
      }
    }
    /* not while a spike is on, nor while the active tier misses the SLO */
    if (!low || spike_now || p->violations > 0)
      p->low_since = NAN;
    else if (!isfinite (p->low_since))
      p->low_since = in->t;
  }

  if (wanted >= 0 && cost (p, wanted) > cost (p, p->active)) {
    ShdTrigger trigger = SHD_TRIGGER_NONE;
    gboolean hi_over = isfinite (hi1) && hi1 > d->active_limit;

    /* measured misses: violation-intervals of them, or one when the load is
     * already past what the tier is known to carry */
    if (p->violations >= k->violation_intervals ||
        (p->violations >= 1 && in->iops > d->active_limit))
      trigger = SHD_TRIGGER_SLO;
    else if (spike_now && (in->iops > d->active_limit || hi_over))
      trigger = SHD_TRIGGER_SPIKE;
    else if (p->n >= WARMUP && ((isfinite (point1) && point1 > d->active_limit) ||
                                (hi_over && p->hi_over_prev)))
      trigger = SHD_TRIGGER_FORECAST;
    p->hi_over_prev = hi_over;
    if (trigger != SHD_TRIGGER_NONE) {
      decide_switch (p, d, in, wanted, SHD_DECISION_SWITCH_UP, trigger, FALSE);
      goto out;
    }
    /* needed later within the horizon: make sure it is warm */
    if (!ready (p, wanted)) {
      d->target = wanted;
      d->kind = SHD_DECISION_PREWARM;
      d->action = p->cfg.async_writes || absent (p, wanted) ? SHD_ACTION_PREWARM :
                  SHD_ACTION_NONE;
      d->prewarm_eta_s = prewarm_eta (p, wanted, in->size_bytes, &d->stale_bytes);
      REASON (d, "%s will be needed: %.0f IOPS forecast within %u intervals "
              "(onset in %d) over %s's limit %.0f; it is %s, copy needs %.0f s",
              tier_name (p, wanted), hi_max, H, d->onset_steps,
              tier_name (p, p->active), d->active_limit,
              absent (p, wanted) ? "not in the node (adding its child)" :
              p->prof[wanted].state, d->prewarm_eta_s);
      goto out;
    }
    d->kind = SHD_DECISION_HOLD;
    d->target = wanted;
    REASON (d, "on %s at %.0f IOPS (limit %.0f); %s may be needed within %u intervals "
            "(upper %.0f) and is ready", tier_name (p, p->active), d->load,
            d->active_limit, tier_name (p, wanted), H, hi_max);
    goto out;
  }
  p->hi_over_prev = FALSE;

  if (wanted >= 0 && cost (p, wanted) < cost (p, p->active)) {
    if (isfinite (p->low_since) && in->t - p->low_since >= k->switch_back_after_s) {
      int target = -1;

      /* the cheapest ready tier that meets the need with hysteresis */
      for (guint o = 0; o < p->cfg.n_tiers; o++) {
        int i = p->order[o];

        if (cost (p, i) >= cost (p, p->active))
          break;
        if (usable (p, i) && meets (p, i, d->need / (1 - k->hysteresis))) {
          target = i;
          break;
        }
      }
      if (target >= 0) {
        decide_switch (p, d, in, target, SHD_DECISION_SWITCH_BACK, SHD_TRIGGER_LOW_LOAD, FALSE);
        goto out;
      }
    }
    d->kind = SHD_DECISION_HOLD;
    d->target = wanted;
    if (isfinite (p->low_since))
      REASON (d, "on %s; load %.0f IOPS low for %.0f of %.0f s before switching "
              "back to %s", tier_name (p, p->active), d->need, in->t - p->low_since,
              k->switch_back_after_s, tier_name (p, wanted));
    else if (spike_now)
      REASON (d, "on %s; %s would carry %.0f IOPS, waiting for the spike to end "
              "(robust z %.1f)", tier_name (p, p->active), tier_name (p, wanted), d->need,
              d->spike_z);
    else
      REASON (d, "on %s; %s would carry %.0f IOPS but not with %.0f%% hysteresis "
              "(limit %.0f)", tier_name (p, p->active), tier_name (p, wanted), d->need,
              100 * k->hysteresis, shd_policy_tier_limit (p, wanted));
    goto out;
  }

  d->kind = SHD_DECISION_HOLD;
  d->target = p->active;
  if (isfinite (in->latency_ms))
    REASON (d, "on %s at %.0f IOPS, %.2f ms; needs %.0f IOPS, limit %.0f",
            tier_name (p, p->active), d->load, in->latency_ms, d->need, d->active_limit);
  else
    REASON (d, "on %s, idle; needs %.0f IOPS, limit %.0f", tier_name (p, p->active),
            d->need, d->active_limit);

out:
  if (d->action != SHD_ACTION_NONE && d->dry_run) {
    g_autofree char *tmp = g_strconcat (p->cfg.dry_run ? "dry run: " : "paused: ",
                                        d->reason, NULL);

    g_strlcpy (d->reason, tmp, sizeof d->reason);
  }
  /* paused: say what would happen, change nothing; dry run: carry on as
   * if it had happened (a virtual active tier) */
  if (d->action == SHD_ACTION_SWITCH && (!d->dry_run || p->cfg.dry_run)) {
    p->last_switch_t = in->t;
    shd_ring_push (&p->switches, in->t);
    p->switch_count++;
    p->low_since = NAN;
    p->violations = 0;
    p->active = d->target;
  }
  return d;
}
