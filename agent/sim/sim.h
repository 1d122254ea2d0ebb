/* Policy simulation (DESIGN.md section 9, shadowctl simulate): one load
 * series replayed through the policy the daemon runs (policy.h, the same
 * code and configuration), against a model of the tiers, and compared
 * with the baselines:
 *
 *   shadowtier     the agent
 *   reactive       the agent with forecasting off (spikes and measured
 *                  violations only)
 *   always-cheap   the disk on the cheapest tier only
 *   always-fast    the disk on the dearest tier only
 *   oracle         the cheapest schedule without violations, knowing the
 *                  whole series, copies included
 *
 * The world (docs/agent-internals.md, "Simulation"): each row lasts
 * interval_s at a constant load (IOPS).  A tier carries up to max_iops
 * within the service level; its latency is base / (1 - load / C), with C
 * such that it reaches the SLO at max_iops.  A copy onto a tier runs at
 * its copy rate times the share the guest leaves it on the source
 * (1 - load / max_iops of the active tier, at least a sixth); a tier
 * holds the bytes copied so far, the whole disk once synced, nothing
 * after it is released (its image given back).  Every tier holding bytes
 * is paid for them all the time.  The agents start on the cheapest tier
 * with the other tiers absent.  Their decisions act at the end of the row
 * they were made on, as the daemon's act at the end of its interval.
 *
 * Pure: no clock, no I/O. */
#pragma once

#include "policy.h"

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define SHD_SIM_ERROR (shd_sim_error_quark ())
GQuark shd_sim_error_quark (void);

typedef enum {
  SHD_SIM_ERROR_INVALID,
} ShdSimError;

typedef struct {
  double max_iops;              /* the load it carries within the SLO */
  double latency_ms;            /* at light load */
  double copy_bps;              /* copying onto it from an idle source */
} ShdSimTier;

typedef struct {
  double interval_s;            /* one row */
  double size_bytes;            /* the disk */
  /* The agent's configuration (tiers with names, children and costs,
   * knobs, SLO); interval_s is overwritten with the row's. */
  ShdPolicyConfig policy;
  ShdSimTier tiers[SHD_POLICY_MAX_TIERS];     /* the world, by the policy's tiers */
  gboolean trace;               /* keep the per-row trace of the agents */
  guint history_rows;           /* the first rows are history: the agents
                                   learn from them (as from imported load),
                                   nothing is counted, every policy starts
                                   on the cheapest tier after them */
} ShdSimConfig;

typedef enum {
  SHD_SIM_SHADOWTIER,
  SHD_SIM_REACTIVE,
  SHD_SIM_ALWAYS_CHEAP,
  SHD_SIM_ALWAYS_FAST,
  SHD_SIM_ORACLE,
  SHD_SIM_N_POLICIES
} ShdSimPolicy;

/* Times in seconds from the start of the series; NAN: none. */
typedef struct {
  double onset_s;               /* the first row over the cheapest tier's max_iops */
  double end_s;                 /* after its last row */
  double peak_iops;
  double prewarm_start_s;       /* the copy onto the tier that served it began */
  double prewarm_done_s;        /* ... and was complete */
  double switch_s;              /* the switch to that tier */
  double lead_s;                /* onset - switch: positive is ahead */
} ShdSimSpike;

typedef struct {
  double t;                     /* end of the row */
  int active;
  double allocated[SHD_POLICY_MAX_TIERS];     /* bytes at the end of the row */
  const char *decision;         /* kind of the decision taken there */
  char *reason;                 /* its reason, owned */
} ShdSimRow;

typedef struct {
  const char *name;
  double violation_s;
  double cost;
  double gib_hours[SHD_POLICY_MAX_TIERS];
  double tier_cost[SHD_POLICY_MAX_TIERS];
  guint switches;
  guint prewarms;
  guint releases;
  GArray *spikes;               /* ShdSimSpike */
  GArray *trace;                /* ShdSimRow, with trace on; else NULL */
} ShdSimOutcome;

typedef struct {
  double interval_s;
  guint rows;                   /* counted (after the history rows) */
  guint n_tiers;
  char *tiers[SHD_POLICY_MAX_TIERS];
  double size_bytes;
  ShdSimOutcome policies[SHD_SIM_N_POLICIES];
} ShdSimResult;

ShdSimResult *shd_sim_run (const double *load_iops, gsize n, const ShdSimConfig *c,
                           GError **error);
void shd_sim_result_free (ShdSimResult *r);
/* The JSON of DESIGN.md section 9 (and more fields). */
JsonNode *shd_sim_to_json (const ShdSimResult *r);
const char *shd_sim_policy_name (ShdSimPolicy p);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdSimResult, shd_sim_result_free)

G_END_DECLS
