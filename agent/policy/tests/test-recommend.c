/* Recommending a permanent move: the share, the minimum history, a disk
 * already moved, a single tier. */
#include "recommend.h"

#include <math.h>
#include <string.h>

static void
config (ShdPolicyConfig *cfg, guint n)
{
  static char *names[] = { "cheap", "fast", "fastest" };

  memset (cfg, 0, sizeof *cfg);
  cfg->n_tiers = n;
  for (guint i = 0; i < n; i++) {
    cfg->tiers[i].tier = names[i];
    cfg->tiers[i].cost_gib_month = 0.02 * (i + 1);
  }
}

static void
test_share (void)
{
  ShdPolicyConfig cfg;
  ShdRecommendation r;
  double week = 7 * 86400;
  double mostly_fast[] = { 0.05 * week, 0.95 * week };
  double split[] = { 0.2 * week, 0.8 * week };
  double short_history[] = { 0, 3600 };

  config (&cfg, 2);
  shd_recommend (&cfg, mostly_fast, 2, -1, &r);
  g_assert_true (r.recommended);
  g_assert_cmpint (r.tier, ==, 1);
  g_assert_cmpfloat_with_epsilon (r.share, 0.95, 1e-9);
  g_assert_cmpfloat_with_epsilon (r.others_cost_month, 0.02, 1e-9);
  g_assert_cmpstr (r.reason, ==, "on fast 95% of the last 7.0 days: a move there for good "
                   "would stop paying for the other copies, 0.0200 per GiB-month");

  shd_recommend (&cfg, split, 2, -1, &r);
  g_assert_false (r.recommended);
  g_assert_cmpint (r.tier, ==, 1);
  g_assert_nonnull (strstr (r.reason, "on fast 80%"));

  shd_recommend (&cfg, short_history, 2, -1, &r);
  g_assert_false (r.recommended);
  g_assert_cmpstr (r.reason, ==, "1.0 h measured: a recommendation needs 24 h");

  /* moved for good: no other copy is left to pay for */
  shd_recommend (&cfg, mostly_fast, 2, 1, &r);
  g_assert_false (r.recommended);
  g_assert_cmpstr (r.reason, ==, "moved to fast for good");
  g_assert_cmpfloat (r.others_cost_month, ==, 0);

  /* moved to the tier that served least of the window: named for it */
  shd_recommend (&cfg, mostly_fast, 2, 0, &r);
  g_assert_false (r.recommended);
  g_assert_cmpint (r.tier, ==, 0);
  g_assert_cmpfloat_with_epsilon (r.share, 0.05, 1e-9);
  g_assert_cmpstr (r.reason, ==, "moved to cheap for good");
  g_assert_cmpfloat (r.others_cost_month, ==, 0);

  /* moved to a tier with no time in the window */
  shd_recommend (&cfg, short_history, 2, 0, &r);
  g_assert_cmpint (r.tier, ==, 0);
  g_assert_cmpstr (r.reason, ==, "moved to cheap for good");

  config (&cfg, 1);
  shd_recommend (&cfg, mostly_fast, 1, -1, &r);
  g_assert_false (r.recommended);
  g_assert_cmpstr (r.reason, ==, "one tier only");
}

static void
test_no_data (void)
{
  ShdPolicyConfig cfg;
  ShdRecommendation r;
  double none[] = { 0, 0, 0 };
  double unknown[] = { NAN, -1, NAN };

  config (&cfg, 3);
  shd_recommend (&cfg, none, 3, -1, &r);
  g_assert_false (r.recommended);
  g_assert_cmpint (r.tier, ==, 0);
  g_assert_cmpstr (r.reason, ==, "no history yet");
  shd_recommend (&cfg, unknown, 3, -1, &r);
  g_assert_false (r.recommended);
  g_assert_cmpint (r.tier, ==, -1);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/recommend/share", test_share);
  g_test_add_func ("/recommend/no-data", test_no_data);
  return g_test_run ();
}
