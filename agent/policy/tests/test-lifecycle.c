/* A tier's lifecycle in the policy: released when nothing wants it, kept
 * within keep-warm, never while the active child hydrates; an instant
 * switch with a metadata child; warming and switching ahead of a season
 * learned from imported buckets, sampled every second; the reactive agent
 * has no seasonal scale; the cost of both copies counted. */
#include "policy.h"

#include <math.h>
#include <string.h>

#define GIB (1024.0 * 1024 * 1024)

typedef struct {
  ShdPolicyConfig cfg;
  ShdPolicy *p;
  ShdPolicyInput in;
  double t;
} Rig;

/* cheap (200 IOPS, 2 ms) active, fast present and synced; a 1 GiB disk */
static void
rig_init (Rig *r, gboolean forecast)
{
  memset (r, 0, sizeof *r);
  r->cfg.interval_s = 1;
  r->cfg.slo_latency_ms = 10;
  shd_policy_knobs_init (&r->cfg.knobs);
  r->cfg.knobs.forecast = forecast;
  r->cfg.knobs.release_after_s = 30;
  r->cfg.knobs.min_dwell_s = 5;
  r->cfg.add_children = TRUE;
  r->cfg.n_tiers = 2;
  r->cfg.tiers[0] = (ShdPolicyTier) { .tier = "cheap", .child = "tier-a",
                                      .cost_gib_month = 0.02, .prior_max_iops = 200,
                                      .prior_latency_ms = 2, .prior_copy_bps = 100 << 20 };
  r->cfg.tiers[1] = (ShdPolicyTier) { .tier = "fast", .child = "tier-b",
                                      .cost_gib_month = 0.12, .prior_max_iops = 5000,
                                      .prior_latency_ms = 0.5, .prior_copy_bps = 100 << 20 };
  shd_policy_input_init (&r->in);
  r->in.valid = TRUE;
  r->in.active = "tier-a";
  r->in.size_bytes = 1 << 30;
  r->in.n_children = 2;
  r->in.children[0] = (ShdPolicyChild) { "tier-a", "active", TRUE, 0, NAN, 0, 1 << 30 };
  r->in.children[1] = (ShdPolicyChild) { "tier-b", "synced", TRUE, 0, NAN, 0, 1 << 30 };
}

static void
rig_start (Rig *r)
{
  r->p = shd_policy_new (&r->cfg);
}

static void
rig_clear (Rig *r)
{
  shd_policy_free (r->p);
}

/* One second at `iops` on the active child, which answers within 2 ms
 * below 150 IOPS and at 50 ms above. */
static const ShdDecision *
rig_step (Rig *r, double iops)
{
  ShdPolicyChild *act = strcmp (r->in.active, "tier-a") == 0 ? &r->in.children[0]
                                                              : &r->in.children[1];

  r->in.t = r->in.wall = r->t++;
  r->in.iops = act->iops = iops;
  r->in.latency_ms = act->latency_ms = iops > 150 && act == &r->in.children[0] ? 50 : 2;
  /* a child not in the node has nothing allocated */
  for (guint i = 0; i < 2; i++)
    r->in.allocated[i] = i < r->in.n_children && r->in.children[i].state ?
                         (double) r->in.children[i].valid_bytes : 0;
  return shd_policy_step (r->p, &r->in);
}

/* Without a season to go by, an unused shadow is released after
 * release-after; a copy within keep-warm is not. */
static void
test_release (void)
{
  Rig r;
  const ShdDecision *d = NULL;
  guint at = 0;

  rig_init (&r, TRUE);
  rig_start (&r);
  for (guint i = 0; i < 60 && at == 0; i++) {
    d = rig_step (&r, 30);
    if (d->action == SHD_ACTION_RELEASE)
      at = i;
  }
  g_assert_cmpuint (at, >=, 30);
  g_assert_cmpint (d->target, ==, 1);
  g_assert_cmpint (d->kind, ==, SHD_DECISION_RELEASE);
  g_assert_cmpstr (shd_trigger_name (d->trigger), ==, "unused");
  g_assert_nonnull (strstr (d->reason, "not wanted for"));
  g_assert_cmpuint (shd_policy_release_count (r.p), ==, 1);
  g_assert_cmpuint (shd_policy_tier_life (r.p, 1)->releases, ==, 1);
  /* the node drops it: absent */
  r.in.n_children = 1;
  d = rig_step (&r, 30);
  g_assert_cmpint (shd_policy_tier_life (r.p, 1)->phase, ==, SHD_PHASE_ABSENT);
  rig_clear (&r);

  rig_init (&r, TRUE);
  r.cfg.tiers[1].keep_warm_bytes = 2 * GIB;
  rig_start (&r);
  for (guint i = 0; i < 90; i++)
    g_assert_cmpint (rig_step (&r, 30)->action, !=, SHD_ACTION_RELEASE);
  rig_clear (&r);
}

/* Never while the active child hydrates: the other holds the only copy
 * of some chunks.  The disk is on fast after an instant switch, the load
 * needs fast, the cheap copy is not wanted (the reactive agent: for
 * release-after) and may go (release-origin): the release waits, and says
 * why, until fast holds it all. */
static void
test_no_release_while_hydrating (void)
{
  Rig r;
  const ShdDecision *d = NULL;
  gboolean said = FALSE;

  rig_init (&r, FALSE);
  r.cfg.knobs.base_window_s = 30;       /* the base follows the load in 30 s */
  r.cfg.release_origin = TRUE;
  r.in.active = "tier-b";
  r.in.children[0].state = "synced";
  r.in.children[1].state = "active";
  r.in.children[1].valid_bytes = 1 << 29;       /* half hydrated */
  rig_start (&r);
  for (guint i = 0; i < 200; i++) {
    d = rig_step (&r, 400);
    g_assert_cmpint (d->action, !=, SHD_ACTION_RELEASE);
    said |= strstr (d->reason, "still hydrates") != NULL;
  }
  g_assert_true (said);
  /* hydrated: the cheap copy goes */
  r.in.children[1].valid_bytes = 1 << 30;
  d = rig_step (&r, 400);
  g_assert_cmpint (d->action, ==, SHD_ACTION_RELEASE);
  g_assert_cmpint (d->target, ==, 0);
  rig_clear (&r);
}

/* With a metadata child, a switch up may go to a child still copying. */
static void
test_instant_switch (void)
{
  Rig r;
  const ShdDecision *d = NULL;

  rig_init (&r, TRUE);
  r.cfg.instant_switch = TRUE;
  r.in.children[1].state = "syncing";
  r.in.children[1].valid_bytes = 1 << 28;
  rig_start (&r);
  for (guint i = 0; i < 30; i++)
    rig_step (&r, 30);
  for (guint i = 0; i < 5 && (d == NULL || d->action != SHD_ACTION_SWITCH); i++)
    d = rig_step (&r, 400);
  g_assert_cmpint (d->action, ==, SHD_ACTION_SWITCH);
  g_assert_cmpint (d->target, ==, 1);
  g_assert_nonnull (strstr (d->reason, "instant switch"));
  rig_clear (&r);

  /* without it: wait-sync */
  rig_init (&r, TRUE);
  r.in.children[1].state = "syncing";
  r.in.children[1].valid_bytes = 1 << 28;
  rig_start (&r);
  for (guint i = 0; i < 30; i++)
    rig_step (&r, 30);
  for (guint i = 0; i < 5; i++)
    d = rig_step (&r, 400);
  g_assert_cmpint (d->kind, ==, SHD_DECISION_WAIT_SYNC);
  rig_clear (&r);
}

/* A compressed day of 120 s (by configuration: seasons, bucket), the
 * past three days imported as buckets; sampled every second.  The fast
 * tier is absent: it is added (pre-warm) before the daily spike and
 * switched to before the load rises, then released after it. */
static void
test_seasonal_ahead (void)
{
  const guint day = 120, at = 80, len = 10;
  Rig r;
  const ShdDecision *d;
  double warm_t = NAN, switch_t = NAN, release_t = NAN;

  rig_init (&r, TRUE);
  r.cfg.knobs.seasons_s[0] = day;
  r.cfg.knobs.seasons_s[1] = 0;
  r.cfg.knobs.bucket_s = 1;
  r.cfg.knobs.lookahead_s = 60;
  r.cfg.knobs.prewarm_margin_s = 2;
  r.cfg.knobs.switch_lead_s = 2;
  r.cfg.knobs.release_after_s = 10;
  r.cfg.knobs.switch_back_after_s = 3;
  r.cfg.knobs.min_dwell_s = 3;
  r.cfg.knobs.max_switches_per_hour = 100;
  r.in.n_children = 1;                  /* fast is not in the node */
  rig_start (&r);
  /* three past days; then the clock starts at the fourth */
  for (guint b = 0; b < 3 * day; b++)
    shd_policy_feed_bucket (r.p, b, b % day >= at && b % day < at + len ? 1000 : 20);
  g_assert_cmpuint (shd_outlook_period (shd_policy_outlook (r.p)), ==, day);
  r.t = 3 * day;
  for (guint s = 0; s < day; s++) {
    guint ph = s % day;

    d = rig_step (&r, ph >= at && ph < at + len ? 1000 : 20);
    if (d->action == SHD_ACTION_PREWARM && d->target == 1 && !isfinite (warm_t)) {
      warm_t = ph;
      g_assert_cmpstr (shd_trigger_name (d->trigger), ==, "seasonal");
      /* the node adds it; it copies at 100 MiB/s: ten seconds */
      r.in.n_children = 2;
      r.in.children[1] = (ShdPolicyChild) { "tier-b", "syncing", TRUE, 0, NAN, 100 << 20, 0 };
    } else if (r.in.n_children == 2 && r.in.children[1].state &&
               strcmp (r.in.children[1].state, "syncing") == 0) {
      r.in.children[1].valid_bytes = MIN (r.in.children[1].valid_bytes + (100 << 20), 1 << 30);
      if (r.in.children[1].valid_bytes == 1 << 30)
        r.in.children[1].state = "synced";
    }
    if (d->action == SHD_ACTION_SWITCH && d->target == 1) {
      switch_t = ph;
      g_assert_cmpstr (shd_trigger_name (d->trigger), ==, "seasonal");
      r.in.active = "tier-b";
      r.in.children[0].state = "synced";
      r.in.children[1].state = "active";
    } else if (d->action == SHD_ACTION_SWITCH && d->target == 0) {
      r.in.active = "tier-a";
      r.in.children[0].state = "active";
      r.in.children[1].state = "synced";
    }
    if (d->action == SHD_ACTION_RELEASE && d->target == 1 && !isfinite (release_t)) {
      release_t = ph;
      r.in.n_children = 1;
    }
  }
  g_test_message ("warm at %.0f, switch at %.0f, release at %.0f; the load rises at %u",
                  warm_t, switch_t, release_t, at);
  g_assert_cmpfloat (warm_t, <, at - 10);
  g_assert_cmpfloat (switch_t, <, at);
  g_assert_cmpfloat (switch_t, >=, at - 6);
  g_assert_cmpfloat (release_t, >, at + len);
  /* both copies paid for: fast from its warm-up to its release */
  g_assert_cmpfloat (shd_cost_gib_hours (shd_policy_cost (r.p), 1), >, 0);
  g_assert_cmpfloat (shd_cost_gib_hours (shd_policy_cost (r.p), 0), >,
                     0.99 * (day - 1) / 3600.0);
  g_assert_cmpfloat (shd_policy_cost (r.p)->violation_s, ==, 0);
  rig_clear (&r);
}

/* What the node does with fast's child: added and copied at 100 MiB/s
 * for a pre-warm, removed for a release; switches change the active
 * child. */
static void
rig_apply (Rig *r, const ShdDecision *d)
{
  ShdPolicyChild *fast = &r->in.children[1];

  if (r->in.n_children == 2 && g_strcmp0 (fast->state, "syncing") == 0) {
    fast->valid_bytes = MIN (fast->valid_bytes + (100 << 20), 1 << 30);
    if (fast->valid_bytes == 1 << 30)
      fast->state = "synced";
  }
  if (d->dry_run)
    return;
  if (d->action == SHD_ACTION_PREWARM && d->target == 1 && r->in.n_children == 1) {
    r->in.n_children = 2;
    *fast = (ShdPolicyChild) { "tier-b", "syncing", TRUE, 0, NAN, 100 << 20, 0 };
  } else if (d->action == SHD_ACTION_RELEASE && d->target == 1) {
    r->in.n_children = 1;
  } else if (d->action == SHD_ACTION_SWITCH) {
    r->in.active = d->target == 0 ? "tier-a" : "tier-b";
    r->in.children[d->target].state = "active";
    r->in.children[1 - d->target].state = "synced";
  }
}

/* Bursts over cheap's limit every `every` seconds, each `len` long; how
 * many seconds until each tier's copy is first released (0: never). */
static void
bursts (guint every, guint len, guint cycles, gboolean release_origin, double *cheap_gone,
        double *fast_gone, char *why, gsize why_len)
{
  Rig r;

  rig_init (&r, FALSE);
  r.cfg.release_origin = release_origin;
  r.cfg.knobs.base_window_s = 240;      /* 4 x release-after: a burst is no habit */
  r.cfg.knobs.release_after_s = 60;
  r.cfg.knobs.switch_back_after_s = 3;
  r.cfg.knobs.max_switches_per_hour = 1000;
  rig_start (&r);
  *cheap_gone = *fast_gone = 0;
  for (guint i = 0; i < every * cycles && !*cheap_gone; i++) {
    const ShdDecision *d = rig_step (&r, i % every < len ? 400 : 30);

    rig_apply (&r, d);
    if (d->action == SHD_ACTION_RELEASE && d->target == 1 && !*fast_gone)
      *fast_gone = i;
    if (d->action == SHD_ACTION_RELEASE && d->target == 0) {
      *cheap_gone = i;
      g_strlcpy (why, d->reason, why_len);
    }
  }
  rig_clear (&r);
}

/* The base tier, counted honestly: bursts closer together than
 * release-after keep the fast copy for good, so keeping the cheap one
 * besides costs more than living on fast (0.12 against 0.02 + 0.12 per
 * GiB-month): when the configuration lets the disk's own image go
 * (release-origin), the cheap copy goes as soon as the money spent says
 * so, though the load needs fast only a quarter of the time.  Without it
 * the cheap copy, the disk's own image, is never released.  Bursts further
 * apart than release-after: fast is released between them and the disk
 * lives on cheap. */
static void
test_base_tier (void)
{
  double cheap_gone, fast_gone;
  char why[512] = "";

  bursts (40, 10, 100, TRUE, &cheap_gone, &fast_gone, why, sizeof why);
  g_test_message ("every 40 s: cheap released at %.0f s (%s)", cheap_gone, why);
  /* not before twice release-after, but before the shares cover a
   * window: both copies held since the first burst have cost what fast
   * alone would have long before */
  g_assert_cmpfloat (cheap_gone, >=, 120);
  g_assert_cmpfloat (cheap_gone, <, 239);
  g_assert_cmpfloat (fast_gone, ==, 0);
  g_assert_nonnull (strstr (why, "cost as much as living on fast"));

  bursts (40, 10, 100, FALSE, &cheap_gone, &fast_gone, why, sizeof why);
  g_assert_cmpfloat (cheap_gone, ==, 0);
  g_assert_cmpfloat (fast_gone, ==, 0);

  bursts (300, 10, 10, TRUE, &cheap_gone, &fast_gone, why, sizeof why);
  g_test_message ("every 300 s: fast released at %.0f s", fast_gone);
  g_assert_cmpfloat (cheap_gone, ==, 0);
  g_assert_cmpfloat (fast_gone, >, 60);
  g_assert_cmpfloat (fast_gone, <, 300);
}

/* The disk's own image is never given back unless the configuration
 * says so: the disk lives on fast (the load needs it all the time) with
 * the cheap copy synced beside it, for ten minutes.  Cheap, the origin by
 * default, stays; named as the origin, fast is the own image and the cheap
 * copy goes; with release-origin, cheap goes too. */
static double
origin_run (const char *origin, gboolean release_origin)
{
  Rig r;
  double gone = 0;

  rig_init (&r, FALSE);
  r.cfg.knobs.base_window_s = 30;
  r.cfg.origin = (char *) origin;
  r.cfg.release_origin = release_origin;
  r.in.active = "tier-b";
  r.in.children[0].state = "synced";
  r.in.children[1].state = "active";
  rig_start (&r);
  for (guint i = 0; i < 600 && !gone; i++) {
    const ShdDecision *d = rig_step (&r, 400);

    g_assert_false (d->action == SHD_ACTION_RELEASE && d->target == 1);
    if (d->action == SHD_ACTION_RELEASE && d->target == 0)
      gone = i;
  }
  rig_clear (&r);
  return gone;
}

static void
test_origin (void)
{
  g_assert_cmpfloat (origin_run (NULL, FALSE), ==, 0);
  g_assert_cmpfloat (origin_run ("cheap", FALSE), ==, 0);
  g_assert_cmpfloat (origin_run ("fast", FALSE), >, 0);
  g_assert_cmpfloat (origin_run (NULL, TRUE), >, 0);
}

/* A copy that grows from nothing to 10 GiB in ten seconds is paid as it
 * grows (50 GiB-seconds), not from the next interval on; an image
 * emptied in the next ten seconds likewise; a gap is not charged. */
static void
test_cost_mean (void)
{
  ShdCost c;
  double a[1];

  shd_cost_init (&c, 1, 60);
  a[0] = 0;
  shd_cost_step (&c, 0, a, FALSE);
  a[0] = 10 * GIB;
  shd_cost_step (&c, 10, a, FALSE);
  g_assert_cmpfloat_with_epsilon (c.byte_seconds[0] / GIB, 50, 1e-9);
  a[0] = NAN;                   /* not measured: the last known */
  shd_cost_step (&c, 20, a, FALSE);
  g_assert_cmpfloat_with_epsilon (c.byte_seconds[0] / GIB, 150, 1e-9);
  a[0] = 0;
  shd_cost_step (&c, 30, a, TRUE);
  g_assert_cmpfloat_with_epsilon (c.byte_seconds[0] / GIB, 200, 1e-9);
  g_assert_cmpfloat (c.violation_s, ==, 10);
  a[0] = 10 * GIB;
  shd_cost_step (&c, 200, a, FALSE);        /* a stop: not charged */
  g_assert_cmpfloat_with_epsilon (c.byte_seconds[0] / GIB, 200, 1e-9);
  g_assert_cmpfloat (c.seconds, ==, 30);
}

/* Forecasting off: no seasonal scale, the same lifecycle on spikes. */
static void
test_reactive (void)
{
  Rig r;

  rig_init (&r, FALSE);
  rig_start (&r);
  g_assert_null (shd_policy_outlook (r.p));
  shd_policy_feed_bucket (r.p, 1, 1000);        /* ignored */
  for (guint i = 0; i < 40; i++)
    g_assert_cmpint (rig_step (&r, 30)->trigger, !=, SHD_TRIGGER_SEASONAL);
  rig_clear (&r);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/lifecycle/release", test_release);
  g_test_add_func ("/lifecycle/no-release-while-hydrating", test_no_release_while_hydrating);
  g_test_add_func ("/lifecycle/instant-switch", test_instant_switch);
  g_test_add_func ("/lifecycle/seasonal-ahead", test_seasonal_ahead);
  g_test_add_func ("/lifecycle/reactive", test_reactive);
  g_test_add_func ("/lifecycle/base-tier", test_base_tier);
  g_test_add_func ("/lifecycle/origin", test_origin);
  g_test_add_func ("/lifecycle/cost-mean", test_cost_mean);
  return g_test_run ();
}
