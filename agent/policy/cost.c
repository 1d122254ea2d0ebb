/* What a disk costs; see cost.h. */
#include "cost.h"

#include <math.h>

void
shd_cost_init (ShdCost *c, guint n_tiers, double max_step_s)
{
  g_return_if_fail (n_tiers <= SHD_COST_MAX_TIERS);
  *c = (ShdCost) { .n_tiers = n_tiers, .last_t = NAN, .max_step_s = max_step_s };
  for (guint i = 0; i < SHD_COST_MAX_TIERS; i++)
    c->allocated[i] = NAN;
}

void
shd_cost_step (ShdCost *c, double t, const double *allocated, gboolean violation)
{
  double dt = isfinite (c->last_t) ? t - c->last_t : 0;

  if (dt > 0 && dt <= c->max_step_s) {
    for (guint i = 0; i < c->n_tiers; i++) {
      double end = allocated && isfinite (allocated[i]) ? MAX (allocated[i], 0) : c->allocated[i];

      /* the mean of the interval's ends: a copy grows (or an image is
       * emptied) during it, not at one of them */
      if (isfinite (c->allocated[i]))
        c->byte_seconds[i] += (c->allocated[i] + (isfinite (end) ? end : c->allocated[i])) / 2 * dt;
    }
    c->seconds += dt;
    if (violation)
      c->violation_s += dt;
  }
  if (!isfinite (c->last_t) || t > c->last_t)
    c->last_t = t;
  for (guint i = 0; allocated && i < c->n_tiers; i++)
    if (isfinite (allocated[i]))
      c->allocated[i] = MAX (allocated[i], 0);
}

double
shd_cost_gib_hours (const ShdCost *c, guint tier)
{
  g_return_val_if_fail (tier < c->n_tiers, NAN);
  return c->byte_seconds[tier] / (1024.0 * 1024 * 1024) / 3600;
}

double
shd_cost_amount (const ShdCost *c, guint tier, double cost_gib_month)
{
  return shd_cost_gib_hours (c, tier) * cost_gib_month / SHD_HOURS_PER_MONTH;
}
