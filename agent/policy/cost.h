/* What a disk costs, honestly: every tier that holds a copy is paid for
 * the bytes its image has allocated, all the time, whether it serves the
 * guest or not; and the seconds in which the active tier missed the
 * service level are counted.
 *
 * Allocated bytes are measured (the caller passes what the images have
 * allocated, e.g. QEMU's actual-size of each tier's node) and integrated
 * over time into GiB-hours; cost = GiB-hours x price per GiB-month / 730
 * (the hours of an average month).  Pure: time is what the caller says. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define SHD_COST_MAX_TIERS 8
#define SHD_HOURS_PER_MONTH 730.0

typedef struct {
  guint n_tiers;
  double byte_seconds[SHD_COST_MAX_TIERS];
  double allocated[SHD_COST_MAX_TIERS];     /* bytes, last known; NAN: never measured */
  double violation_s;
  double seconds;               /* time accounted */
  double last_t;                /* NAN: no step yet */
  double max_step_s;            /* a longer gap (the agent was stopped) is not counted */
} ShdCost;

void shd_cost_init (ShdCost *c, guint n_tiers, double max_step_s);
/* One interval ending at t: the tiers' allocated bytes now (NAN: not
 * measured this time, keep the last), and whether the active tier missed
 * the service level during it.  The interval is charged at the mean of
 * the allocations known at its start and at its end: a copy grows, and a
 * released image empties, during it rather than at either end. */
void shd_cost_step (ShdCost *c, double t, const double *allocated, gboolean violation);
double shd_cost_gib_hours (const ShdCost *c, guint tier);
/* GiB-hours x cost_gib_month / 730 */
double shd_cost_amount (const ShdCost *c, guint tier, double cost_gib_month);

G_END_DECLS
