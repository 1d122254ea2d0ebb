/* Recommending a permanent move; see recommend.h. */
#include "recommend.h"

#include <math.h>

void
shd_recommend (const ShdPolicyConfig *cfg, const double *seconds, guint n,
               int moved_to, ShdRecommendation *out)
{
  double total = 0, best = -1;

  *out = (ShdRecommendation) { .tier = -1 };
  n = MIN (n, cfg->n_tiers);
  for (guint i = 0; i < n; i++) {
    if (!(seconds[i] >= 0))
      continue;
    total += seconds[i];
    if (seconds[i] > best) {
      best = seconds[i];
      out->tier = (int) i;
    }
  }
  out->measured_s = total;
  /* named for the tier it moved to: the window still holds the time on
   * the tiers it left */
  if (moved_to >= 0 && moved_to < (int) cfg->n_tiers) {
    out->tier = moved_to;
    if (total > 0 && moved_to < (int) n && seconds[moved_to] >= 0)
      out->share = seconds[moved_to] / total;
    g_snprintf (out->reason, sizeof out->reason, "moved to %s for good",
                cfg->tiers[moved_to].tier);
    return;
  }
  if (out->tier < 0 || total <= 0) {
    g_snprintf (out->reason, sizeof out->reason, "no history yet");
    return;
  }
  out->share = best / total;
  for (guint i = 0; i < cfg->n_tiers; i++)
    if ((int) i != out->tier)
      out->others_cost_month += cfg->tiers[i].cost_gib_month;
  if (cfg->n_tiers < 2) {
    g_snprintf (out->reason, sizeof out->reason, "one tier only");
    return;
  }
  if (total < SHD_RECOMMEND_MIN_S) {
    g_snprintf (out->reason, sizeof out->reason,
                "%.1f h measured: a recommendation needs %.0f h", total / 3600,
                SHD_RECOMMEND_MIN_S / 3600);
    return;
  }
  out->recommended = out->share >= SHD_RECOMMEND_SHARE;
  g_snprintf (out->reason, sizeof out->reason,
              "on %s %.0f%% of the last %.1f days%s%.4f per GiB-month", cfg->tiers[out->tier].tier,
              100 * out->share, total / 86400,
              out->recommended ? ": a move there for good would stop paying for the other "
                                 "copies, " : " (a move for good takes 90%); the other copies cost ",
              out->others_cost_month);
}
