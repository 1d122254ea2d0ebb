/* The tiering policy of one disk; see policy.h. */
#include "policy.h"

#include "forecast.h"
#include "outlook.h"
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
#define BASE_EARLY_NEED 0.9     /* update_base() */
#define MIN_LOAD 1.0            /* IOPS below which latency says nothing */
#define CAPACITY_MEMORY_S 3600  /* a learned capacity is kept this long */
#define SATURATED_QUEUE 1.0     /* mean requests in flight to call a tier saturated */
#define WARM_SAFETY 1.5         /* the copy is planned to take this much longer */
#define MIN_GUEST_SHARE (1.0 / 6) /* a busy source leaves the copy at least this */
#define DEFAULT_COPY_BPS (20.0 * 1024 * 1024) /* assumed until measured */
#define COPY_ALPHA 0.3          /* smoothing of the measured copy rate */
#define RELEASE_RETRY_S 300     /* after a refused release */

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
  double sigma;                 /* their robust sigma; NAN: compute again */
  double z;                     /* normal quantile of the interval level */
  double *scratch;
  guint violations;
  gboolean hi_over_prev;        /* last interval's upper bound crossed too */
  gboolean season_warm_prev;    /* last interval's seasonal onset was due too */
  double low_since;             /* NAN: the load is not low */
  double last_switch_t;         /* NAN: never */
  ShdRing switches;             /* times of switches */
  guint switch_count;
  int requested;                /* manual switch pending; -1 */
  gboolean paused;
  ShdOutlook *outlook;          /* the seasonal scale; NULL: forecasting off */
  ShdTierLife life[SHD_POLICY_MAX_TIERS];
  double release_hold_until[SHD_POLICY_MAX_TIERS];
  ShdCost cost;
  guint release_count;
  /* the base tier (update_base): share of time each tier's copy would be
   * held, and share of time the load needed it, over base-window */
  double share[SHD_POLICY_MAX_TIERS];
  double need_share[SHD_POLICY_MAX_TIERS];
  double needed_t[SHD_POLICY_MAX_TIERS];
  double base_t, base_elapsed, base_cost, base_changed_t;
  int base;
  gboolean base_overspent;      /* the base was set by overspend() */
  int origin;                   /* the tier of the disk's own image */
  ShdDecision last;
};

static void push_resid (ShdPolicy *p, double e);

static const char *const action_names[] = {
  [SHD_ACTION_NONE] = "none",
  [SHD_ACTION_PREWARM] = "prewarm",
  [SHD_ACTION_SWITCH] = "switch",
  [SHD_ACTION_RELEASE] = "release",
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
  [SHD_DECISION_READY] = "ready",
  [SHD_DECISION_RELEASE] = "release",
};

static const char *const trigger_names[] = {
  [SHD_TRIGGER_NONE] = NULL,
  [SHD_TRIGGER_SPIKE] = "spike",
  [SHD_TRIGGER_FORECAST] = "forecast",
  [SHD_TRIGGER_SLO] = "slo",
  [SHD_TRIGGER_LOW_LOAD] = "low-load",
  [SHD_TRIGGER_MANUAL] = "manual",
  [SHD_TRIGGER_SEASONAL] = "seasonal",
  [SHD_TRIGGER_UNUSED] = "unused",
  [SHD_TRIGGER_COST] = "cost",
};

static const char *const phase_names[] = {
  [SHD_PHASE_ABSENT] = "absent",
  [SHD_PHASE_WARMING] = "warming",
  [SHD_PHASE_READY] = "ready",
  [SHD_PHASE_ACTIVE] = "active",
  [SHD_PHASE_DEGRADED] = "degraded",
};

const char *
shd_tier_phase_name (ShdTierPhase ph)
{
  g_return_val_if_fail ((guint) ph < G_N_ELEMENTS (phase_names), "?");
  return phase_names[ph];
}

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
  k->forecast = TRUE;
  k->bucket_s = 300;
  memset (k->seasons_s, 0, sizeof k->seasons_s);
  k->seasons_s[0] = 86400;
  k->seasons_s[1] = 7 * 86400;
  k->lookahead_s = 6 * 3600;
  k->prewarm_margin_s = 120;
  k->switch_lead_s = 60;
  k->release_after_s = 3600;
  k->base_window_s = 0;
}

void
shd_policy_input_init (ShdPolicyInput *in)
{
  memset (in, 0, sizeof *in);
  in->latency_ms = NAN;
  for (guint i = 0; i < SHD_POLICY_MAX_TIERS; i++)
    in->allocated[i] = NAN;
}

void
shd_policy_config_clear (ShdPolicyConfig *cfg)
{
  for (guint i = 0; i < cfg->n_tiers; i++) {
    g_clear_pointer (&cfg->tiers[i].tier, g_free);
    g_clear_pointer (&cfg->tiers[i].child, g_free);
  }
  cfg->n_tiers = 0;
  g_clear_pointer (&cfg->origin, g_free);
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
    /* max-iops is the load the tier carries within the SLO (DESIGN.md
     * section 9): as a capacity, that over max-utilization */
    p->prof[i].capacity_iops = cfg->tiers[i].prior_max_iops / cfg->knobs.max_utilization;
    p->prof[i].latency_ms = NAN;
    p->prof[i].copy_bps = NAN;
    p->prof[i].copy_rate0 = cfg->tiers[i].prior_copy_bps > 0 ? cfg->tiers[i].prior_copy_bps : NAN;
    p->life[i] = (ShdTierLife) { .phase = SHD_PHASE_ABSENT, .warm_start_t = NAN,
                                 .ready_t = NAN, .active_t = NAN, .released_t = NAN,
                                 .wanted_t = NAN };
    p->release_hold_until[i] = -INFINITY;
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

  p->cfg.origin = g_strdup (cfg->origin);
  p->origin = cfg->origin ? shd_policy_tier_by_name (p, cfg->origin) : -1;
  if (p->origin < 0)
    p->origin = p->order[0];

  shd_forecast_config_init (&fc);
  fc.period = cfg->knobs.period;
  fc.level = cfg->knobs.level;
  fc.horizon = MIN (shd_policy_horizon_steps (p), 8);
  if (cfg->knobs.forecast)
    shd_forecast_config_set_calendar (&fc, cfg->interval_s, cfg->knobs.seasons_s);
  p->fc = shd_forecaster_new (&fc);
  if (cfg->knobs.forecast)
    p->outlook = shd_outlook_new (cfg->interval_s, cfg->knobs.bucket_s,
                                  cfg->knobs.lookahead_s, cfg->knobs.level,
                                  cfg->knobs.seasons_s);
  /* a gap of more than ten intervals (a minute at least) is a stop */
  shd_cost_init (&p->cost, cfg->n_tiers, MAX (10 * cfg->interval_s, 60));
  shd_spike_config_init (&sc);
  shd_spike_config_set_sensitivity (&sc, cfg->knobs.spike_sensitivity);
  /* the detector weighs a spike's end in samples, a few seconds' worth at
   * shadowd's polling; a sample longer than switch-back-after is that
   * long a time at its load by itself (a 30-minute row of idle load is
   * not five more rows of waiting).  The cooldown stays in samples: it
   * keeps the tail of the same spike from firing again. */
  if (cfg->interval_s > MAX (cfg->knobs.switch_back_after_s, 1))
    sc.end_h *= MAX (cfg->knobs.switch_back_after_s, 1) / cfg->interval_s;
  p->spike = shd_spike_new (&sc);
  shd_ring_init (&p->resid, RESID_WINDOW);
  p->sigma = NAN;
  p->z = shd_normal_quantile (0.5 + cfg->knobs.level / 2);
  p->scratch = g_new (double, RESID_WINDOW);
  shd_ring_init (&p->switches, SWITCH_LOG);
  p->active = -1;
  p->last_point = NAN;
  p->low_since = NAN;
  p->last_switch_t = NAN;
  p->requested = -1;
  p->base = -1;
  p->base_t = NAN;
  p->base_changed_t = NAN;
  for (guint i = 0; i < SHD_POLICY_MAX_TIERS; i++)
    p->needed_t[i] = -INFINITY;
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
  shd_outlook_free (p->outlook);
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
const ShdOutlook *shd_policy_outlook (const ShdPolicy *p) { return p->outlook; }
const ShdCost *shd_policy_cost (const ShdPolicy *p) { return &p->cost; }
guint shd_policy_release_count (const ShdPolicy *p) { return p->release_count; }

const ShdTierLife *
shd_policy_tier_life (const ShdPolicy *p, int tier)
{
  g_return_val_if_fail (tier >= 0 && (guint) tier < p->cfg.n_tiers, NULL);
  return &p->life[tier];
}

void
shd_policy_feed_bucket (ShdPolicy *p, gint64 index, double value)
{
  if (p->outlook)
    shd_outlook_feed (p->outlook, index, value);
}

void
shd_policy_forget_buckets (ShdPolicy *p)
{
  if (p->outlook)
    shd_outlook_forget (p->outlook);
}

void
shd_policy_release_failed (ShdPolicy *p, int tier, const char *why)
{
  g_return_if_fail (tier >= 0 && (guint) tier < p->cfg.n_tiers);
  p->release_hold_until[tier] = p->now + RELEASE_RETRY_S;
  if (p->release_count > 0 && p->last.action == SHD_ACTION_RELEASE && p->last.target == tier)
    p->release_count--;
  g_debug ("release of %s failed: %s", p->cfg.tiers[tier].tier, why);
}
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
      push_resid (p, fabs (load[i] - p->last_point));
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
    if ((in->children[c].valid && in->children[c].copy_bps > 0) ||
        g_strcmp0 (in->children[c].state, "syncing") == 0)
      copying = TRUE;
  /* a learned capacity is forgotten after an hour without confirmation:
   * the tier may have been busy with something else at the time */
  for (guint i = 0; i < p->cfg.n_tiers; i++)
    if (p->prof[i].capacity_iops > 0 && isfinite (p->cap_learned_t[i]) &&
        in->t - p->cap_learned_t[i] > CAPACITY_MEMORY_S) {
      p->prof[i].capacity_iops = p->cfg.tiers[i].prior_max_iops / p->cfg.knobs.max_utilization;
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
     * queue behind the copy and say little about serving the guest; nor
     * while a copy runs, which competes with the guest on this child. */
    if (i == serving && ch->latency_ms <= slo && !copying) {
      double b = ch->latency_ms;

      if (pr->capacity_iops > 0)
        b *= 1 - MIN (ch->iops / pr->capacity_iops, 0.9);
      pr->base_latency_ms = isfinite (pr->base_latency_ms) ?
        (1 - BASE_ALPHA) * pr->base_latency_ms + BASE_ALPHA * b : b;
    }
  }
}

/* Robust sigma of the one-step errors of the forecast in use (cached
 * until the next error comes). */
static double
resid_sigma (ShdPolicy *p)
{
  guint n = p->resid.len;

  if (n < 5)
    return NAN;
  if (isfinite (p->sigma))
    return p->sigma;
  shd_ring_copy (&p->resid, p->scratch);
  p->sigma = 1.4826 * shd_median_inplace (p->scratch, n);
  return p->sigma;
}

static void
push_resid (ShdPolicy *p, double e)
{
  shd_ring_push (&p->resid, e);
  p->sigma = NAN;
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
  z = p->z;
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

/* min-dwell or the hourly cap would hold an automatic switch now */
static gboolean
dwell_blocks (const ShdPolicy *p, const ShdPolicyInput *in, gboolean manual)
{
  const ShdPolicyKnobs *k = &p->cfg.knobs;

  if (manual)
    return FALSE;
  return (isfinite (p->last_switch_t) && in->t - p->last_switch_t < k->min_dwell_s) ||
         switches_last_hour (p, in->t) >= k->max_switches_per_hour;
}

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
  case SHD_TRIGGER_SEASONAL:
    snprintf (why, sizeof why, "seasonal forecast (%s, season %u buckets): up to %.0f IOPS "
              "from %.0f s on, over %s's limit %.0f", d->outlook_model ? d->outlook_model : "-",
              p->outlook ? shd_outlook_period (p->outlook) : 0, d->outlook_peak, d->onset_s,
              tier_name (p, p->active), d->active_limit);
    break;
  case SHD_TRIGGER_COST:
    snprintf (why, sizeof why, "the copies held so far have cost as much as living on %s "
              "alone would have: the disk lives there now", tier_name (p, target));
    break;
  case SHD_TRIGGER_NONE:
  case SHD_TRIGGER_MANUAL:
  case SHD_TRIGGER_UNUSED:
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
  /* with a metadata child the switch may go to a child still copying: it
   * serves at once and hydrates; only when going up, where waiting costs
   * the service level */
  if (!ready (p, target) && p->cfg.instant_switch && kind != SHD_DECISION_SWITCH_BACK &&
      !dwell_blocks (p, in, manual) && p->prof[target].state &&
      strcmp (p->prof[target].state, "degraded") != 0) {
    d->kind = kind;
    d->action = SHD_ACTION_SWITCH;
    REASON (d, "%s %s -> %s: %s; instant switch (metadata): %s is %s with %" G_GUINT64_FORMAT
            " bytes still to copy, which it hydrates while serving", kind_names[kind],
            tier_name (p, p->active), tier_name (p, target), why, tier_name (p, target),
            p->prof[target].state, d->stale_bytes);
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

static guint64
disk_size (const ShdPolicy *p, const ShdPolicyInput *in)
{
  return in->size_bytes ? in->size_bytes : p->cfg.size_bytes;
}

/* The share of its idle speed a copy gets at this load on the active
 * tier: the driver gives the guest priority, and a busy source leaves the
 * copy about a sixth of its time. */
static double
guest_share (const ShdPolicy *p, double load)
{
  double limit = p->active >= 0 ? shd_policy_tier_limit (p, p->active) : INFINITY;

  if (!isfinite (limit) || limit <= 0)
    return 1;
  return CLAMP (1 - load / limit, MIN_GUEST_SHARE, 1);
}

/* Seconds the copy onto `tier` needs from now: its stale bytes (the whole
 * disk when it is not in the node) over the copy rate expected at this
 * load.  0 when ready; NAN when the disk's size is unknown. */
static double
warm_seconds_at (const ShdPolicy *p, const ShdPolicyInput *in, int tier, double load)
{
  const ShdTierProfile *pr = &p->prof[tier];
  double rate = isfinite (pr->copy_rate0) ? pr->copy_rate0 : DEFAULT_COPY_BPS;
  guint64 size = disk_size (p, in), stale;

  if (ready (p, tier))
    return 0;
  if (size == 0)
    return NAN;
  stale = absent (p, tier) ? size : size > pr->valid_bytes ? size - pr->valid_bytes : 0;
  return stale / (rate * guest_share (p, load));
}

/* The load the copy will compete with until `until` seconds from now:
 * the highest of now's and the seasonal forecast's before then. */
static double
load_until (const ShdPolicy *p, const ShdPolicyInput *in, double until)
{
  double load = in->iops;

  if (p->outlook && shd_outlook_period (p->outlook))
    for (guint k = 0;; k++) {
      double start, point, hi;

      if (!shd_outlook_bucket (p->outlook, k, &start, &point, &hi) ||
          !(start < in->wall + until))
        break;
      load = MAX (load, point);
    }
  return load;
}

/* Seconds a copy of the whole disk onto `tier` needs at this load. */
static double
whole_copy_seconds (const ShdPolicy *p, const ShdPolicyInput *in, int tier)
{
  const ShdTierProfile *pr = &p->prof[tier];
  double rate = isfinite (pr->copy_rate0) ? pr->copy_rate0 : DEFAULT_COPY_BPS;
  guint64 size = disk_size (p, in);

  return size ? size / (rate * guest_share (p, in->iops)) : NAN;
}

/* The copy rate onto each warming tier, per unit of guest share. */
static void
update_copy_rates (ShdPolicy *p, const ShdPolicyInput *in)
{
  for (guint c = 0; c < in->n_children; c++) {
    const ShdPolicyChild *ch = &in->children[c];
    int i = shd_policy_tier_by_child (p, ch->child);
    ShdTierProfile *pr;
    double r0;

    if (i < 0 || !ch->valid || !(ch->copy_bps > 0) || ch->state == NULL ||
        (strcmp (ch->state, "syncing") != 0 && strcmp (ch->state, "active") != 0))
      continue;
    pr = &p->prof[i];
    r0 = ch->copy_bps / guest_share (p, in->iops);
    pr->copy_rate0 = isfinite (pr->copy_rate0) ?
                     (1 - COPY_ALPHA) * pr->copy_rate0 + COPY_ALPHA * r0 : r0;
  }
}

static ShdTierPhase
phase_of (const ShdPolicy *p, int tier)
{
  const char *s = p->prof[tier].state;

  if (s == NULL)
    return SHD_PHASE_ABSENT;
  if (strcmp (s, "active") == 0)
    return SHD_PHASE_ACTIVE;
  if (strcmp (s, "synced") == 0)
    return SHD_PHASE_READY;
  if (strcmp (s, "degraded") == 0)
    return SHD_PHASE_DEGRADED;
  return SHD_PHASE_WARMING;
}

/* Phases from the node's child states; returns a tier that just became
 * ready after warming (-1: none). */
static int
update_life (ShdPolicy *p, const ShdPolicyInput *in)
{
  int became_ready = -1;

  for (guint i = 0; i < p->cfg.n_tiers; i++) {
    ShdTierLife *l = &p->life[i];
    ShdTierPhase ph = phase_of (p, i);

    if (!isfinite (l->wanted_t))
      l->wanted_t = in->t;      /* nothing is released sooner than release-after */
    if (ph == l->phase)
      continue;
    if (ph == SHD_PHASE_WARMING && l->phase == SHD_PHASE_ABSENT &&
        !(l->warm_start_t > l->released_t) && !(isfinite (l->warm_start_t) &&
                                                !isfinite (l->released_t))) {
      l->warm_start_t = in->t;  /* added by someone else (the operator) */
      l->warms++;
    }
    if (ph == SHD_PHASE_READY && l->phase == SHD_PHASE_WARMING) {
      l->ready_t = in->t;
      became_ready = i;
    }
    if (ph == SHD_PHASE_ACTIVE)
      l->active_t = in->t;
    l->phase = ph;
  }
  return became_ready;
}

/* The cheapest usable tier that meets `load`, or, when none does, the one
 * with the highest limit. */
static int
tier_for (const ShdPolicy *p, double load)
{
  int best = -1;
  double best_limit = -1;

  for (guint o = 0; o < p->cfg.n_tiers; o++) {
    int i = p->order[o];

    if (usable (p, i) && meets (p, i, load))
      return i;
  }
  for (guint o = 0; o < p->cfg.n_tiers; o++) {
    int i = p->order[o];
    double l = shd_policy_tier_limit (p, i);

    if (usable (p, i) && l >= best_limit) {
      best_limit = l;
      best = i;
    }
  }
  return best;
}

/* Whether a tier's copy may ever be released.  Invariant: the disk's own
 * image (origin) is never given back unless the configuration says so
 * (release-origin): it is what the VM's definition points at, and outside
 * the shadow node nothing else holds its data. */
static gboolean
releasable (const ShdPolicy *p, int tier)
{
  return tier != p->origin || p->cfg.release_origin;
}

/* Whether the seasonal forecast wants `tier`'s copy now: the load
 * outgrows every tier cheaper than it within release-after plus the time
 * a warm-up from scratch needs (so that a tier warmed for an onset stays
 * wanted until it comes).  Kept while the forecast comes within the
 * hysteresis of the limit that warmed it: an upper bound hovering at the
 * limit would otherwise release and warm it again on alternate
 * intervals.  From the forecast of the load alone: which copies are
 * present does not enter. */
static gboolean
forecast_wants (const ShdPolicy *p, const ShdPolicyInput *in, int tier)
{
  const ShdPolicyKnobs *k = &p->cfg.knobs;
  double warm, onset, limit = -INFINITY;

  if (!p->outlook || !shd_outlook_period (p->outlook))
    return FALSE;
  for (guint j = 0; j < p->cfg.n_tiers; j++)
    if (cost (p, j) < cost (p, tier))
      limit = MAX (limit, shd_policy_tier_limit (p, j));
  if (!(limit > 0))
    return FALSE;
  warm = whole_copy_seconds (p, in, tier);
  onset = shd_outlook_onset (p->outlook, in->wall, limit * (1 - k->hysteresis), NULL);
  return onset <= k->release_after_s + (isfinite (warm) ? WARM_SAFETY * warm : 0) +
                  k->prewarm_margin_s + k->switch_lead_s + p->cfg.interval_s;
}

/* What the copies held since the agent started have cost beyond keeping
 * the disk on `tier` alone (with the copies that are never released) for
 * the same time, in currency; 0 while nothing was measured. */
static double
overspend (const ShdPolicy *p, const ShdPolicyInput *in, int tier)
{
  double spent = 0, alone = cost (p, tier);
  gboolean measured = FALSE;

  for (guint i = 0; i < p->cfg.n_tiers; i++) {
    spent += shd_cost_amount (&p->cost, i, cost (p, i));
    measured = measured || isfinite (p->cost.allocated[i]);
    if ((int) i != tier && !releasable (p, i))
      alone += cost (p, i);
  }
  if (!measured)
    return 0;
  return spent - (double) disk_size (p, in) / (1 << 30) * p->cost.seconds / 3600 *
                 alone / SHD_HOURS_PER_MONTH;
}

/* The base tier: where the disk lives between spikes.  Keeping a cheap
 * copy and warming a dear one for the hours it is needed costs
 * price(cheap) + price(dear) x (the share of the time its copy is held);
 * living on the dear tier alone costs price(dear), plus every cheaper copy
 * that is never released (the origin, unless release-origin).
 *
 * Invariant: the shares come from the load and its forecast only: a tier
 * counts as held while the load needs it, for release-after beyond, and
 * while the seasonal forecast wants it (forecast_wants), never because a
 * copy of it is present.  Counting present copies is circular: holding a
 * copy raises its share, which moves the base up to it, which holds it.
 *
 * Shares are running means over base-window (by default the first season,
 * a day: a daily spike is no habit), and the base is the tier with the
 * lowest such cost, changed for a 3% saving and at most once per eighth
 * of the window (each change copies the disk).  Before a window is seen it
 * is the cheapest tier, unless for at least twice release-after the load
 * needed a dearer one nearly all the time.
 *
 * Rent or buy (overspend()): the shares are estimates and lag, the money
 * spent is measured.  Once the copies held have cost what the dearest tier
 * the load needed would have alone, while a copy besides it that may be
 * released is still held, that tier becomes the base: from then on the
 * disk costs what it alone does.  Judged from twice release-after on
 * without a season, over a whole window with one (the first hours of a
 * seasonal load may be its peak).  A cheaper base must repay the
 * overspend within a window before it is chosen again. */
static void
update_base (ShdPolicy *p, const ShdPolicyInput *in, int wanted)
{
  const ShdPolicyKnobs *k = &p->cfg.knobs;
  double dt = isfinite (p->base_t) ? in->t - p->base_t : 0;
  double day = k->seasons_s[0] > 0 ? k->seasons_s[0] : 86400, cost_base = INFINITY;
  double window = k->base_window_s > 0 ? k->base_window_s : day, alpha;
  double over = 0, window_gib_month;
  gboolean early, overspent = FALSE;
  gboolean seasonal = p->outlook && shd_outlook_period (p->outlook) > 0;
  int best = -1, dear = -1;

  p->base_t = in->t;
  if (dt <= 0 || dt > 10 * p->cfg.interval_s + 60)
    dt = p->cfg.interval_s;
  p->base_elapsed += dt;
  early = p->base_elapsed < window;
  alpha = MIN (1, dt / MIN (window, p->base_elapsed));
  if (wanted >= 0)
    p->needed_t[wanted] = in->t;
  for (guint i = 0; i < p->cfg.n_tiers; i++) {
    gboolean held = (int) i == wanted || in->t - p->needed_t[i] < k->release_after_s ||
      (cost (p, i) > cost (p, p->order[0]) && forecast_wants (p, in, i));

    p->share[i] += alpha * (held - p->share[i]);
    p->need_share[i] += alpha * (((int) i == wanted) - p->need_share[i]);
  }
  /* the dearest tier the load has needed, and what the lifecycle has
   * spent beyond living there */
  for (guint o = p->cfg.n_tiers; o-- > 0;) {
    int i = p->order[o];

    if (usable (p, i) && isfinite (p->needed_t[i])) {
      dear = i;
      break;
    }
  }
  if (dear >= 0 && cost (p, dear) > cost (p, p->order[0])) {
    gboolean held_besides = FALSE;
    double besides = 0, move_s;

    over = overspend (p, in, dear);
    for (guint i = 0; i < p->cfg.n_tiers; i++)
      if ((int) i != dear && releasable (p, i) && p->cost.allocated[i] > 0) {
        held_besides = TRUE;
        besides += cost (p, i);
      }
    /* the copies besides are paid until the move is done: the switch up
     * (after the copy, when it is not ready), min-dwell, the release two
     * intervals on.  Decided that much early, the disk never costs more
     * than the dear tier alone would have */
    move_s = 2 * p->cfg.interval_s + k->min_dwell_s +
             (ready (p, dear) ? 0 : WARM_SAFETY * warm_seconds_at (p, in, dear, in->iops));
    if (isfinite (move_s))
      over += (double) disk_size (p, in) / (1 << 30) * move_s / 3600 * besides /
              SHD_HOURS_PER_MONTH;
    overspent = p->cost.seconds > 0 && over >= 0 && held_besides && !absent (p, dear);
  }
  window_gib_month = (double) disk_size (p, in) / (1 << 30) * window / 3600 /
                     SHD_HOURS_PER_MONTH;
  for (guint o = 0; o < p->cfg.n_tiers; o++) {
    int b = p->order[o];
    double c = cost (p, b);

    if (!usable (p, b))
      continue;
    if (early && o > 0 && (p->base_elapsed < 2 * k->release_after_s ||
                           p->need_share[b] < BASE_EARLY_NEED))
      continue;
    for (guint i = 0; i < p->cfg.n_tiers; i++) {
      if (cost (p, i) > cost (p, b))
        c += cost (p, i) * p->share[i];
      else if ((int) i != b && !releasable (p, i))
        c += cost (p, i);       /* kept below the base all the same */
    }
    /* an overspend is repaid over base-window by a cheaper base before it
     * is chosen again: as a cost per GiB-month over the window */
    if (dear >= 0 && cost (p, b) < cost (p, dear) && over > 0 && window_gib_month > 0)
      c += over / window_gib_month;
    if (b == p->base)
      cost_base = c;
    if (best < 0 || c < p->base_cost)
      best = b, p->base_cost = c;
  }
  if (overspent && p->base != dear &&
      p->base_elapsed >= (seasonal ? window : 2 * k->release_after_s) &&
      !(in->t - p->base_changed_t < window / 8)) {
    p->base_changed_t = in->t;
    p->base = dear;
    p->base_cost = cost (p, dear);
    p->base_overspent = TRUE;
    return;
  }
  if (p->base < 0 || !usable (p, p->base) ||
      (p->base_cost < 0.97 * cost_base && !(in->t - p->base_changed_t < window / 8))) {
    if (best != p->base) {
      p->base_changed_t = in->t;
      p->base_overspent = FALSE;
    }
    p->base = best;
  } else {
    p->base_cost = cost_base;
  }
}

/* How far ahead the load must stay over a tier cheaper than the active
 * one before its copy may go (the disk would live up there): as long as
 * keeping that copy costs what release-after of the active tier does.
 * Going down is never a risk for the service level, only a copy to make
 * again, but a cheap copy is cheap. */
static double
cheaper_horizon (const ShdPolicy *p, int tier)
{
  double ratio = cost (p, tier) > 0 ? cost (p, p->active) / cost (p, tier) : 1;

  return p->cfg.knobs.release_after_s * MAX (ratio, 1);
}

/* Which tiers a decision wants now: the active one, the one the load
 * needs, the base, and the one the forecast needs within release-after
 * (plus its copy time).  Without a season to go by a tier is kept until
 * nothing wanted it for release-after; with one, as soon as nothing wants
 * it now and the forecast does not within that time. */
static void
note_wanted (ShdPolicy *p, const ShdPolicyInput *in, ShdDecision *d, int wanted, int s_target,
             double need_down)
{
  const ShdPolicyKnobs *k = &p->cfg.knobs;

  p->life[p->active].wanted_t = in->t;
  if (wanted >= 0)
    p->life[wanted].wanted_t = in->t;
  if (p->base >= 0 && (cost (p, p->base) >= cost (p, p->active) || !p->outlook ||
                       shd_outlook_fits (p->outlook, in->wall,
                                         shd_policy_tier_limit (p, p->base) *
                                         (1 - k->hysteresis)) <= cheaper_horizon (p, p->base)))
    p->life[p->base].wanted_t = in->t;
  for (guint i = 0; i < p->cfg.n_tiers; i++)
    if (cost (p, i) > cost (p, p->active) && !absent (p, i) && forecast_wants (p, in, i))
      p->life[i].wanted_t = in->t;
  /* a cheaper tier than the active one: wanted while the load fits it,
   * or when the forecast brings the load back under it soon enough
   * (cheaper_horizon) */
  for (guint o = 0; o < p->cfg.n_tiers; o++) {
    int i = p->order[o];
    double limit;

    if (cost (p, i) >= cost (p, p->active))
      break;
    if (!usable (p, i) || i == p->base)
      continue;
    limit = shd_policy_tier_limit (p, i) * (1 - k->hysteresis);
    if (need_down <= limit || !p->outlook ||
        shd_outlook_fits (p->outlook, in->wall, limit) <= cheaper_horizon (p, i))
      p->life[i].wanted_t = in->t;
  }
  (void) d;
  (void) s_target;
}

/* How long a seasonal forecast needs to take in what just happened: the
 * bucket under way and the next one learned.  A burst that just ended
 * moves the forecast of the hour after it when its buckets close; a copy
 * released before then is often warmed again at once. */
static double
forecast_settle_s (const ShdPolicy *p)
{
  return MAX (2 * shd_outlook_bucket_s (p->outlook), p->cfg.interval_s);
}

/* A tier whose copy may be dropped now, and why (-1: none; -2 - tier:
 * that tier would be, but the active child still hydrates). */
static int
release_candidate (ShdPolicy *p, const ShdPolicyInput *in, gboolean spike_holds, char *why,
                   gsize why_len)
{
  const ShdPolicyKnobs *k = &p->cfg.knobs;
  guint64 size = disk_size (p, in);
  const ShdTierProfile *act = &p->prof[p->active];
  gboolean by_forecast = p->outlook && shd_outlook_period (p->outlook);

  if (isfinite (p->last_switch_t) && in->t - p->last_switch_t < k->min_dwell_s)
    return -1;
  for (guint o = p->cfg.n_tiers; o-- > 0;) {
    int i = p->order[o];
    const ShdTierLife *l = &p->life[i];
    double alloc = p->cost.allocated[i], idle = in->t - l->wanted_t;
    gboolean below_base = p->base >= 0 && cost (p, i) < cost (p, p->base);

    if (i == p->active || absent (p, i) || in->t < p->release_hold_until[i] ||
        !releasable (p, i))
      continue;
    /* a spike over the active tier or a violation may yet need any tier
     * but one below the base, where the disk no longer goes back to */
    if ((spike_holds || p->violations > 0) && !below_base)
      continue;
    /* below the base: the disk lives on a dearer tier now; above it: not
     * wanted, now or by the forecast soon, for switch-back-after (two
     * buckets at least: forecast_settle_s()), or (no season) not for
     * release-after */
    /* a cheaper copy stays while the season is provisional: the bursts it
     * goes by come at no fixed hour */
    if (!below_base && by_forecast && cost (p, i) < cost (p, p->active) &&
        shd_outlook_provisional (p->outlook))
      continue;
    if (!below_base &&
        !(by_forecast ? idle >= MAX (k->switch_back_after_s, forecast_settle_s (p)) - 1e-9 :
          idle >= k->release_after_s))
      continue;
    /* a small copy is kept warm */
    if (p->cfg.tiers[i].keep_warm_bytes > 0 &&
        (isfinite (alloc) ? alloc : (double) size) <= p->cfg.tiers[i].keep_warm_bytes)
      continue;
    /* never while the active child still hydrates: this one may hold the
     * only valid copy of some chunks */
    if (size && act->valid_bytes < size) {
      snprintf (why, why_len, "%s is not wanted but %s still hydrates (%" G_GUINT64_FORMAT
                " of %" G_GUINT64_FORMAT " bytes)", tier_name (p, i), tier_name (p, p->active),
                act->valid_bytes, size);
      return -2 - i;
    }
    if (below_base && p->base_overspent)
      snprintf (why, why_len, "the copies held so far have cost as much as living on %s "
                "alone would have: the disk lives there now, and keeping %s besides would "
                "cost more", tier_name (p, p->base), tier_name (p, i));
    else if (below_base)
      snprintf (why, why_len, "the disk lives on %s now: the load needed it, or it was "
                "kept for release-after, %.0f%% of the time lately, and keeping %s "
                "besides would cost more (%.4f against %.4f per GiB-month)", tier_name (p, p->base), 100 * p->share[p->base],
                tier_name (p, i), cost (p, i) + cost (p, p->base) * p->share[p->base],
                p->base_cost);
    else if (by_forecast && cost (p, i) < cost (p, p->active))
      snprintf (why, why_len, "the seasonal forecast keeps the load over %s's limit for "
                "more than %.0f s (release-after times the price ratio): the disk stays on "
                "%s", tier_name (p, i), cheaper_horizon (p, i), tier_name (p, p->active));
    else if (by_forecast)
      snprintf (why, why_len, "%s is not needed now, and the seasonal forecast does not "
                "need it within release-after (%.0f s) and its copy time",
                tier_name (p, i), k->release_after_s);
    else
      snprintf (why, why_len, "%s not wanted for %.0f s (release-after %.0f s; %s)",
                tier_name (p, i), idle, k->release_after_s,
                p->outlook ? "no season known yet" : "forecasting off");
    return i;
  }
  return -1;
}

const ShdDecision *
shd_policy_step (ShdPolicy *p, const ShdPolicyInput *in)
{
  const ShdPolicyKnobs *k = &p->cfg.knobs;
  ShdDecision *d = &p->last;
  ShdSpikeReport sr;
  guint H = shd_policy_horizon_steps (p);
  double point1 = NAN, lo, hi, hi1 = NAN, hi_max = NAN, point_max = NAN, need_down;
  int wanted = -1, in_active, s_target = -1, became_ready, rel;
  gboolean spike_now, spike_holds, violation;
  char why[200];

  memset (d, 0, sizeof *d);
  p->now = in->t;
  d->t = in->t;
  d->from = d->target = -1;
  d->onset_steps = -1;
  d->forecast = d->forecast_hi = NAN;
  d->active_latency_ms = d->target_latency_ms = NAN;
  d->prewarm_eta_s = NAN;
  d->active_limit = d->target_limit = NAN;
  d->onset_s = INFINITY;
  d->outlook_peak = NAN;
  d->warm_s = NAN;
  d->dry_run = p->cfg.dry_run || p->paused;

  in_active = shd_policy_tier_by_child (p, in->active);
  if (!p->cfg.dry_run || p->active < 0)
    p->active = in_active;
  d->from = p->active;
  update_profiles (p, in);
  update_copy_rates (p, in);
  became_ready = update_life (p, in);
  violation = in->valid && isfinite (in->latency_ms) && in->iops >= MIN_LOAD &&
              in->latency_ms > p->cfg.slo_latency_ms;
  shd_cost_step (&p->cost, in->t, in->allocated, violation);

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
    push_resid (p, fabs (in->iops - p->last_point));
  shd_forecaster_update (p->fc, in->iops);
  p->n++;
  shd_spike_update (p->spike, in->iops, &sr);
  spike_now = sr.in_spike;
  d->spike = spike_now;
  d->spike_z = sr.z;
  d->model = shd_policy_model (p);
  if (p->outlook) {
    /* the sample measured the interval before in->wall: its middle is
     * the time it belongs to */
    d->bucket_closed = shd_outlook_add (p->outlook, in->wall - p->cfg.interval_s / 2, in->iops,
                                        &d->bucket_index, &d->bucket_value);
    d->outlook_model = shd_outlook_period (p->outlook) ? shd_outlook_model (p->outlook) : NULL;
  }
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
    point_max = isfinite (point_max) ? MAX (point_max, pt) : pt;
  }
  d->forecast_hi = hi_max;
  d->need = isfinite (hi_max) && p->n >= WARMUP ? MAX (in->iops, hi_max) : in->iops;
  /* going down, the point forecast is enough: hysteresis and min-dwell
   * keep it from flapping, and the upper bound of a noisy load would keep
   * the disk up for good */
  need_down = isfinite (point_max) && p->n >= WARMUP ? MAX (in->iops, point_max) : in->iops;
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
  if (violation)
    p->violations++;
  else
    p->violations = 0;

  /* the wanted tier: the cheapest usable one that meets the need */
  wanted = tier_for (p, d->need);
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

  /* the seasonal outlook: when will the load outgrow the active tier,
   * and which tier will it need then */
  if (p->outlook) {
    d->onset_s = shd_outlook_onset (p->outlook, in->wall, d->active_limit, &d->outlook_peak);
    if (isfinite (d->onset_s)) {
      s_target = tier_for (p, d->outlook_peak);
      if (s_target >= 0 && cost (p, s_target) <= cost (p, p->active))
        s_target = -1;
    }
    if (s_target >= 0)
      d->warm_s = warm_seconds_at (p, in, s_target, load_until (p, in, d->onset_s));
  }
  /* a spike holds the tiers above the active one while it is over what
   * the active tier carries; one far under it (a busy hour on a quiet
   * disk) needs nothing more */
  spike_holds = spike_now && d->need > d->active_limit * (1 - k->hysteresis);
  update_base (p, in, wanted);
  /* never below the base: the disk lives there between spikes */
  if (wanted >= 0 && p->base >= 0 && cost (p, wanted) < cost (p, p->base))
    wanted = p->base;
  note_wanted (p, in, d, wanted, s_target, need_down);

  /* operator request */
  if (p->requested >= 0) {
    if (p->requested == p->active) {
      p->requested = -1;
    } else if (in->reopen_in_flight) {
      /* decided (and counted) once the node answered: the reopen in
       * flight may change what it is switching from */
      d->kind = SHD_DECISION_HOLD;
      d->target = p->requested;
      REASON (d, "the operator's switch to %s waits for a reopen of the node in flight",
              tier_name (p, p->requested));
      goto out;
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
      if (usable (p, i) && meets (p, i, need_down / (1 - k->hysteresis))) {
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
    else if (k->forecast && p->n >= WARMUP &&
             ((isfinite (point1) && point1 > d->active_limit) || (hi_over && p->hi_over_prev)))
      trigger = SHD_TRIGGER_FORECAST;
    else if (p->base_overspent && wanted == p->base && ready (p, wanted))
      trigger = SHD_TRIGGER_COST;
    p->hi_over_prev = hi_over;
    if (trigger != SHD_TRIGGER_NONE) {
      decide_switch (p, d, in, wanted, SHD_DECISION_SWITCH_UP, trigger, FALSE);
      goto out;
    }
  } else {
    p->hi_over_prev = FALSE;
  }

  /* the seasonal onset: switch-lead before it (and before the next
   * decision would come too late), warm in time for it */
  if (s_target >= 0) {
    double warm = isfinite (d->warm_s) ? WARM_SAFETY * d->warm_s : 0;
    gboolean due, warm_now;

    /* warmed for the upper bound, switched for the expected load: the same
     * test that keeps the disk up (shd_outlook_exceeds), or an upper bound
     * widened by the last spike moves it up and the low load back down on
     * alternate intervals for hours */
    if (d->onset_s < k->switch_lead_s + p->cfg.interval_s &&
        shd_outlook_exceeds (p->outlook, in->wall, d->active_limit) <
        k->switch_lead_s + p->cfg.interval_s) {
      decide_switch (p, d, in, s_target, SHD_DECISION_SWITCH_UP, SHD_TRIGGER_SEASONAL, FALSE);
      goto out;
    }
    /* due on two intervals running: an upper bound that crosses the limit
     * once is noise, and each warm-up copies the whole disk (the second
     * interval is added to the time allowed) */
    due = d->onset_s < warm + k->prewarm_margin_s + k->switch_lead_s + 2 * p->cfg.interval_s;
    warm_now = due && p->season_warm_prev;
    p->season_warm_prev = due;
    if (!ready (p, s_target) && warm_now) {
      d->target = s_target;
      d->kind = SHD_DECISION_PREWARM;
      d->trigger = SHD_TRIGGER_SEASONAL;
      d->action = p->cfg.async_writes || absent (p, s_target) ? SHD_ACTION_PREWARM :
                  SHD_ACTION_NONE;
      d->prewarm_eta_s = prewarm_eta (p, s_target, disk_size (p, in), &d->stale_bytes);
      REASON (d, "seasonal forecast (%s): up to %.0f IOPS from %.0f s on, over %s's limit "
              "%.0f; %s is %s, its copy needs about %.0f s at %.1f MB/s (x%.1f, + %.0f s "
              "margin): warming it now", d->outlook_model ? d->outlook_model : "-",
              d->outlook_peak, d->onset_s, tier_name (p, p->active), d->active_limit,
              tier_name (p, s_target), absent (p, s_target) ? "not in the node (adding its child)"
              : p->prof[s_target].state, d->warm_s,
              (isfinite (p->prof[s_target].copy_rate0) ? p->prof[s_target].copy_rate0
               : DEFAULT_COPY_BPS) * guest_share (p, in->iops) / 1e6,
              WARM_SAFETY, k->prewarm_margin_s);
      goto out;
    }
  } else {
    p->season_warm_prev = FALSE;
  }

  if (wanted >= 0 && cost (p, wanted) > cost (p, p->active)) {
    /* needed later within the short-term horizon: make sure it is warm */
    if (!ready (p, wanted)) {
      d->target = wanted;
      d->kind = SHD_DECISION_PREWARM;
      d->action = p->cfg.async_writes || absent (p, wanted) ? SHD_ACTION_PREWARM :
                  SHD_ACTION_NONE;
      d->prewarm_eta_s = prewarm_eta (p, wanted, disk_size (p, in), &d->stale_bytes);
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

  if (wanted >= 0 && cost (p, wanted) < cost (p, p->active)) {
    double back_onset = INFINITY;

    /* the forecast brings the load back over the cheaper tier soon: stay */
    if (p->outlook)
      back_onset = shd_outlook_exceeds (p->outlook, in->wall,
                                        shd_policy_tier_limit (p, wanted) * (1 - k->hysteresis));
    /* not when the forecast brings it back before the next decisions could
     * move up again in time */
    if (isfinite (p->low_since) && in->t - p->low_since >= k->switch_back_after_s &&
        back_onset > k->min_dwell_s + k->switch_lead_s + p->cfg.interval_s) {
      int target = -1;

      /* the cheapest ready tier that meets the need with hysteresis, not
       * below the base */
      for (guint o = 0; o < p->cfg.n_tiers; o++) {
        int i = p->order[o];

        if (cost (p, i) >= cost (p, p->active))
          break;
        if (p->base >= 0 && cost (p, i) < cost (p, p->base))
          continue;
        if (usable (p, i) && meets (p, i, need_down / (1 - k->hysteresis))) {
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
    if (isfinite (p->low_since) && in->t - p->low_since >= k->switch_back_after_s)
      REASON (d, "on %s; load %.0f IOPS is low, but the seasonal forecast brings it back "
              "over %s's limit in %.0f s", tier_name (p, p->active), d->need,
              tier_name (p, wanted), back_onset);
    else if (isfinite (p->low_since))
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

  /* a copy nobody wants: release it */
  rel = release_candidate (p, in, spike_holds, why, sizeof why);
  if (rel >= 0) {
    double alloc = p->cost.allocated[rel];

    d->kind = SHD_DECISION_RELEASE;
    d->action = SHD_ACTION_RELEASE;
    d->trigger = SHD_TRIGGER_UNUSED;
    d->target = rel;
    if (isfinite (alloc))
      REASON (d, "release %s: %s; its %.2f GiB given back (%.4f per hour at %.4f per "
              "GiB-month)", tier_name (p, rel), why, alloc / (1 << 30),
              alloc / (1 << 30) * cost (p, rel) / SHD_HOURS_PER_MONTH, cost (p, rel));
    else
      REASON (d, "release %s: %s", tier_name (p, rel), why);
    goto out;
  }

  d->kind = SHD_DECISION_HOLD;
  d->target = p->active;
  if (rel < -1)
    REASON (d, "on %s; %s", tier_name (p, p->active), why);
  else if (isfinite (d->onset_s) && s_target >= 0)
    REASON (d, "on %s at %.0f IOPS; seasonal forecast: %s needed in %.0f s (up to %.0f "
            "IOPS), %s", tier_name (p, p->active), d->load, tier_name (p, s_target),
            d->onset_s, d->outlook_peak, ready (p, s_target) ? "it is ready" :
            "warming starts in time for it");
  else if (isfinite (in->latency_ms))
    REASON (d, "on %s at %.0f IOPS, %.2f ms; needs %.0f IOPS, limit %.0f",
            tier_name (p, p->active), d->load, in->latency_ms, d->need, d->active_limit);
  else
    REASON (d, "on %s, idle; needs %.0f IOPS, limit %.0f", tier_name (p, p->active),
            d->need, d->active_limit);

out:
  if (d->kind == SHD_DECISION_HOLD && became_ready >= 0) {
    const ShdTierLife *l = &p->life[became_ready];

    d->kind = SHD_DECISION_READY;
    d->target = became_ready;
    REASON (d, "%s is ready: warmed in %.0f s%s", tier_name (p, became_ready),
            isfinite (l->warm_start_t) ? in->t - l->warm_start_t : NAN,
            isfinite (d->onset_s) ? "; the forecast onset is still ahead" : "");
  }
  if (d->action != SHD_ACTION_NONE && d->dry_run) {
    g_autofree char *tmp = g_strconcat (p->cfg.dry_run ? "dry run: " : "paused: ",
                                        d->reason, NULL);

    g_strlcpy (d->reason, tmp, sizeof d->reason);
  }
  /* paused: say what would happen, change nothing; dry run: carry on as
   * if it had happened (a virtual active tier) */
  if (!d->dry_run || p->cfg.dry_run) {
    if (d->action == SHD_ACTION_SWITCH) {
      p->last_switch_t = in->t;
      shd_ring_push (&p->switches, in->t);
      p->switch_count++;
      p->low_since = NAN;
      p->violations = 0;
      p->active = d->target;
    } else if (d->action == SHD_ACTION_PREWARM && absent (p, d->target) &&
               !(p->life[d->target].warm_start_t > p->life[d->target].released_t) &&
               !(isfinite (p->life[d->target].warm_start_t) &&
                 !isfinite (p->life[d->target].released_t))) {
      p->life[d->target].warm_start_t = in->t;
      p->life[d->target].warms++;
    } else if (d->action == SHD_ACTION_RELEASE) {
      p->life[d->target].released_t = in->t;
      p->life[d->target].releases++;
      p->release_count++;
      /* the next look at it after the node had time to drop it */
      p->release_hold_until[d->target] = in->t + MAX (10 * p->cfg.interval_s, 10);
    }
  }
  return d;
}
