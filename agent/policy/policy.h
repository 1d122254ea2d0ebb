/* The tiering policy of one disk: from each interval's rates, choose the
 * tier the disk should be on, and when to move.
 *
 * Pure and deterministic: shd_policy_step() takes one interval's numbers
 * (load, active child, per-child state, latency and copy progress) and
 * returns a decision; time is whatever the caller passes.  Nothing here
 * talks to QEMU, so tests drive it with synthetic series.
 *
 * The model, per tier, is a queue: latency(L) = base / (1 - L / capacity),
 * where base is the latency measured on that child at light load (or the
 * configured prior), and capacity, in IOPS, is the configured prior or
 * what the tier delivered while it missed the SLO.  A tier "meets" a load
 * when that predicted latency is within the SLO and the load is below
 * max-utilization of its capacity.
 *
 * Each interval:
 *  - the load (IOPS) feeds the forecaster (rolling-MASE model selection,
 *    prediction intervals) and the spike detector;
 *  - the needed load is the larger of the current load and the forecast
 *    upper bound over the horizon; the wanted tier is the cheapest usable
 *    tier that meets it;
 *  - up (to a dearer tier): at a detected spike the active tier cannot
 *    carry, at the forecast onset (the next interval's upper bound exceeds
 *    what the active tier carries), or after violation-intervals measured
 *    SLO misses, whichever first;
 *  - down (to a cheaper tier): once the needed load has stayed below the
 *    cheaper tier's limit, less the hysteresis, for switch-back-after;
 *  - both: only to a child that is synced, never before min-dwell after
 *    the last switch, never more than max-switches-per-hour;
 *  - pre-warm: when a dearer tier will be needed within the horizon and is
 *    not synced yet, the decision says so with the time the copy still
 *    needs (stale bytes / measured copy rate).
 *
 * Two time scales (forecast.h): the short-term forecaster above works on
 * the samples; the seasonal outlook (outlook.h) on buckets of wall time,
 * with a day and a week as its seasons, and looks hours ahead.  With it
 * each tier has a lifecycle (docs/agent-internals.md, "Lifecycle"):
 *
 *   absent -> warming -> ready -> active -> (back) ready -> released
 *
 *  - warming starts at the forecast onset (the first bucket whose upper
 *    bound exceeds the active tier's limit) less the time the copy needs
 *    (stale bytes over the copy rate expected at that load), less
 *    prewarm-margin;
 *  - the switch comes switch-lead before the onset; a tier still copying
 *    is switched to anyway when the node has a metadata child
 *    (instant-switch), else the decision waits and says why;
 *  - a tier that no decision wanted for release-after (and the forecast
 *    does not want within release-after plus its copy time) is released:
 *    its child removed from the node and its image given back; never the
 *    active one, never while the active child still hydrates (it would
 *    hold the only copy of some chunks), never a copy within keep-warm.
 *
 * Forecasting off (knob forecast = FALSE) is the reactive agent: spikes
 * and measured violations only, the same lifecycle driven by them. */
#pragma once

#include "cost.h"
#include "outlook.h"

#include <glib.h>

G_BEGIN_DECLS

#define SHD_POLICY_MAX_TIERS SHD_COST_MAX_TIERS
#define SHD_POLICY_MAX_SEASONS 4

/* The knobs of the tiering policy; the configuration's [shadowd] sets
 * defaults, and [disk:*] may override each one. */
typedef struct {
  double horizon_s;             /* how far ahead the forecast looks */
  double level;                 /* prediction interval level, e.g. 0.9 */
  double hysteresis;            /* fraction below a threshold to go back */
  double min_dwell_s;           /* minimum time on a tier between switches */
  guint max_switches_per_hour;
  double switch_back_after_s;   /* sustained low load before switching back */
  double spike_sensitivity;     /* 1 = default; 2 fires on half-size spikes */
  double max_utilization;       /* a tier "meets" only below this share of its capacity */
  guint violation_intervals;    /* consecutive SLO misses that force a switch */
  guint period;                 /* season in samples; 0: found in the data */
  gboolean forecast;            /* FALSE: reactive, spikes and violations only */
  double bucket_s;              /* the seasonal scale's buckets */
  double seasons_s[SHD_POLICY_MAX_SEASONS];  /* the calendar, 0-terminated */
  double lookahead_s;           /* how far ahead the seasonal outlook looks */
  double prewarm_margin_s;      /* warm this much before the copy would need to */
  double switch_lead_s;         /* switch this long before the forecast onset */
  double release_after_s;       /* release a tier nothing wanted for this long */
  double base_window_s;         /* the base tier's shares over this; 0: the
                                 * first season */
} ShdPolicyKnobs;

void shd_policy_knobs_init (ShdPolicyKnobs *k);

typedef struct {
  char *tier;                   /* tier name */
  char *child;                  /* child node */
  double cost_gib_month;
  double prior_max_iops;        /* 0: unknown */
  double prior_latency_ms;      /* 0: unknown */
  double prior_copy_bps;        /* copy onto this tier from an idle source; 0: unknown */
  double keep_warm_bytes;       /* a copy this small is never released */
} ShdPolicyTier;

typedef struct {
  double interval_s;
  double slo_latency_ms;
  ShdPolicyKnobs knobs;
  gboolean dry_run;             /* decide, never act: the chosen tier becomes
                                   a virtual active tier */
  gboolean async_writes;        /* the node runs write-mode async: pre-warm
                                   means raising it to sync first */
  gboolean add_children;        /* a tier whose child is not in the node is
                                   usable: pre-warm adds the child */
  gboolean instant_switch;      /* the node has a metadata child: a switch may
                                   go to a child still copying */
  guint64 size_bytes;           /* the disk's size when the node does not say; 0 */
  char *origin;                 /* the tier whose child is the disk's own image
                                   (its name); NULL: the cheapest */
  gboolean release_origin;      /* its copy may be released like any other;
                                   FALSE: never (release_candidate) */
  guint n_tiers;
  ShdPolicyTier tiers[SHD_POLICY_MAX_TIERS];
} ShdPolicyConfig;

void shd_policy_config_clear (ShdPolicyConfig *cfg);

typedef struct {
  const char *child;            /* node name */
  const char *state;            /* active, synced, syncing, stale, degraded */
  gboolean valid;               /* rates below are meaningful */
  double iops;
  double latency_ms;            /* NAN: no requests */
  double copy_bps;
  guint64 valid_bytes;
} ShdPolicyChild;

typedef struct {
  double t;                     /* seconds, monotonic */
  double wall;                  /* wall clock (Unix seconds): the seasons' phase */
  gboolean valid;               /* FALSE: no usable rates this interval */
  double iops;                  /* guest-facing load of the node */
  double bps;
  double latency_ms;            /* NAN: no requests */
  const char *active;           /* the node's active child */
  guint64 size_bytes;           /* virtual size; 0: unknown */
  guint n_children;
  ShdPolicyChild children[SHD_POLICY_MAX_TIERS];
  double allocated[SHD_POLICY_MAX_TIERS];   /* bytes each tier's image holds, by
                                               tier; NAN: not measured now */
  gboolean reopen_in_flight;    /* a reopen of the node is not answered yet:
                                   an operator's switch waits for it */
} ShdPolicyInput;

/* An input with nothing measured (allocation NAN). */
void shd_policy_input_init (ShdPolicyInput *in);

typedef enum {
  SHD_ACTION_NONE,
  SHD_ACTION_PREWARM,           /* make sure the target is in the node and syncing:
                                   add its child (x-blockdev-change) when absent,
                                   raise write-mode to sync when async */
  SHD_ACTION_SWITCH,            /* blockdev-reopen with a new active-child */
  SHD_ACTION_RELEASE,           /* remove the target's child from the node
                                   (x-blockdev-change) and give its space back */
} ShdAction;

typedef enum {
  SHD_DECISION_NO_DATA,         /* no usable rates yet */
  SHD_DECISION_HOLD,            /* stay */
  SHD_DECISION_SWITCH_UP,       /* to a dearer tier */
  SHD_DECISION_SWITCH_BACK,     /* to a cheaper tier */
  SHD_DECISION_SWITCH_MANUAL,   /* the operator's */
  SHD_DECISION_PREWARM,         /* a tier will be needed: warm it */
  SHD_DECISION_WAIT_SYNC,       /* a switch waits for its target to sync */
  SHD_DECISION_BLOCKED,         /* a switch held by min-dwell or the hourly cap */
  SHD_DECISION_READY,           /* a tier being warmed is ready */
  SHD_DECISION_RELEASE,         /* a tier's copy is no longer wanted: drop it */
} ShdDecisionKind;

typedef enum {
  SHD_TRIGGER_NONE,
  SHD_TRIGGER_SPIKE,
  SHD_TRIGGER_FORECAST,
  SHD_TRIGGER_SLO,
  SHD_TRIGGER_LOW_LOAD,
  SHD_TRIGGER_MANUAL,
  SHD_TRIGGER_SEASONAL,         /* the seasonal outlook's onset */
  SHD_TRIGGER_UNUSED,           /* a tier not wanted for release-after */
  SHD_TRIGGER_COST,             /* the copies held cost as much as the dearest tier alone */
} ShdTrigger;

typedef struct {
  double t;
  ShdAction action;
  ShdDecisionKind kind;
  int from;                     /* tier indexes; -1 when none */
  int target;
  gboolean dry_run;             /* decided but not acted on */
  gboolean spike;               /* a spike is in progress */
  double spike_z;               /* robust z of this interval's load */
  ShdTrigger trigger;           /* SHD_TRIGGER_NONE unless a switch is wanted */
  double load;                  /* IOPS this interval */
  double forecast;              /* point forecast, next interval */
  double forecast_hi;           /* upper bound over the horizon */
  int onset_steps;              /* first step the active tier stops meeting; -1 */
  double need;                  /* load the choice was made for */
  double active_limit;          /* IOPS the active tier carries within the SLO */
  double target_limit;
  double active_latency_ms;     /* measured */
  double target_latency_ms;     /* predicted at the needed load */
  double prewarm_eta_s;         /* NAN: unknown or nothing to copy */
  guint64 stale_bytes;
  const char *model;            /* forecaster in use */
  const char *outlook_model;    /* the seasonal scale's; NULL: none */
  double onset_s;               /* seconds until the seasonal onset over the
                                   active tier's limit; INFINITY: none */
  double outlook_peak;          /* highest upper bound from the onset on */
  double warm_s;                /* the target's copy time, as estimated */
  gboolean bucket_closed;       /* a seasonal bucket closed this interval: */
  gint64 bucket_index;          /*   floor(wall / bucket) */
  double bucket_value;          /*   its demand (IOPS) */
  char reason[320];             /* human-readable, with the numbers */
} ShdDecision;

typedef struct {
  double base_latency_ms;       /* NAN: not measured */
  double capacity_iops;         /* 0: unknown */
  double latency_ms;            /* last measured, NAN if none */
  const char *state;            /* last seen; static string or NULL */
  guint64 valid_bytes;
  double copy_bps;
  double copy_rate0;            /* bytes/s onto it from an idle source: measured
                                   while it warmed, or the prior; NAN */
} ShdTierProfile;

/* Where a tier is in its lifecycle (from the node's child states). */
typedef enum {
  SHD_PHASE_ABSENT,             /* not in the node (released, or never added) */
  SHD_PHASE_WARMING,            /* in the node, copying (syncing or stale) */
  SHD_PHASE_READY,              /* synced shadow */
  SHD_PHASE_ACTIVE,             /* serving the guest */
  SHD_PHASE_DEGRADED,
} ShdTierPhase;

/* A tier's lifecycle as the policy saw it, for status and the simulator. */
typedef struct {
  ShdTierPhase phase;
  double warm_start_t;          /* the last warming began (policy time); NAN */
  double ready_t;               /* ... and ended; NAN */
  double active_t;              /* it last became active; NAN */
  double released_t;            /* it was last released; NAN */
  double wanted_t;              /* a decision last wanted it */
  guint warms, releases;
} ShdTierLife;

typedef struct _ShdPolicy ShdPolicy;

ShdPolicy *shd_policy_new (const ShdPolicyConfig *cfg);
void shd_policy_free (ShdPolicy *p);

/* One interval.  The returned decision is also kept as the last one. */
const ShdDecision *shd_policy_step (ShdPolicy *p, const ShdPolicyInput *in);

/* Adding the tier's child failed: do not want the tier before `until`. */
void shd_policy_mark_unavailable (ShdPolicy *p, int tier, double until);

/* Feeds past load (oldest first), e.g. from the history after a restart,
 * to the forecaster and the spike detector without deciding anything. */
void shd_policy_warm (ShdPolicy *p, const double *load, gsize n);
/* Feeds a past seasonal bucket (floor(wall / bucket), its demand), oldest
 * first: from the history after a restart, or imported. */
void shd_policy_feed_bucket (ShdPolicy *p, gint64 index, double value);
/* Forgets the seasonal buckets learned, to feed them again in order
 * (an import older than what was learned); see shd_outlook_forget(). */
void shd_policy_forget_buckets (ShdPolicy *p);
/* The seasonal scale; NULL with forecasting off. */
const ShdOutlook *shd_policy_outlook (const ShdPolicy *p);
const ShdTierLife *shd_policy_tier_life (const ShdPolicy *p, int tier);
/* Allocation, GiB-hours, cost and violation seconds so far. */
const ShdCost *shd_policy_cost (const ShdPolicy *p);
guint shd_policy_release_count (const ShdPolicy *p);
/* The caller acted on a RELEASE and it failed (the driver refused, say):
 * wait before trying again. */
void shd_policy_release_failed (ShdPolicy *p, int tier, const char *why);

/* The caller acted on a SWITCH and it failed: forget it (dwell still
 * counts from the attempt, which backs off retries). */
void shd_policy_switch_failed (ShdPolicy *p, const char *why);
/* Operator commands.  A manual switch is returned by the next step
 * (subject to the target being synced, not to dwell or the cap); after it
 * the automatic policy holds for min-dwell. */
void shd_policy_request_switch (ShdPolicy *p, int tier);
void shd_policy_set_paused (ShdPolicy *p, gboolean paused);
gboolean shd_policy_paused (const ShdPolicy *p);

int shd_policy_active (const ShdPolicy *p);       /* tier index, -1 unknown */
/* The tier's name; NULL for -1 (none). */
const char *shd_policy_tier_name (const ShdPolicy *p, int tier);
int shd_policy_tier_by_name (const ShdPolicy *p, const char *tier);
int shd_policy_tier_by_child (const ShdPolicy *p, const char *child);
const ShdPolicyConfig *shd_policy_config (const ShdPolicy *p);
const ShdTierProfile *shd_policy_profile (const ShdPolicy *p, int tier);
const ShdDecision *shd_policy_last (const ShdPolicy *p);
guint shd_policy_switch_count (const ShdPolicy *p);
/* Point and interval forecast h steps ahead of the last sample. */
gboolean shd_policy_forecast (const ShdPolicy *p, guint h, double *point,
                              double *lo, double *hi);
guint shd_policy_horizon_steps (const ShdPolicy *p);
const char *shd_policy_model (const ShdPolicy *p);
/* The IOPS a tier carries within the SLO (INFINITY when unbounded as far
 * as known); exposed for tests and status. */
double shd_policy_tier_limit (const ShdPolicy *p, int tier);

/* Names as the JSON, the log and the history spell them: "none",
 * "switch-up", "low-load" ...; NULL for SHD_TRIGGER_NONE. */
const char *shd_action_name (ShdAction a);
const char *shd_decision_kind_name (ShdDecisionKind k);
const char *shd_trigger_name (ShdTrigger t);
const char *shd_tier_phase_name (ShdTierPhase ph);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdPolicy, shd_policy_free)

G_END_DECLS
