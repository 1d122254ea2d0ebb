/* The tiering policy against a simulated disk: two tiers modelled as
 * queues, an offered load from synthetic series, and the policy's own
 * decisions moving the disk between them. */
#include "policy.h"

#include <math.h>
#include <string.h>

#define SLO 5.0

typedef struct {
  double cap;                   /* IOPS */
  double base;                  /* ms at light load */
} SimTier;

static const SimTier cheap = { 200, 2.0 }, fast = { 5000, 0.2 };

typedef struct {
  ShdPolicyConfig cfg;
  ShdPolicy *p;
  int active;                   /* tier index the simulated node serves from */
  const char *state[2];         /* of tier-a, tier-b */
  guint64 valid_b;
  double copy_bps;
  double t;
  guint switches;
  double switch_t[256];
  int switch_to[256];
  guint violations;             /* intervals over the SLO */
  double shadow_lat;            /* > 0: the shadow reports this latency */
  gboolean reopen_in_flight;    /* the node has not answered a reopen yet */
  GRand *rand;
} Sim;

static void
sim_init (Sim *s, guint32 seed)
{
  memset (s, 0, sizeof *s);
  s->cfg.interval_s = 1;
  s->cfg.slo_latency_ms = SLO;
  shd_policy_knobs_init (&s->cfg.knobs);
  s->cfg.knobs.min_dwell_s = 10;
  s->cfg.knobs.switch_back_after_s = 20;
  s->cfg.n_tiers = 2;
  s->cfg.tiers[0] = (ShdPolicyTier) { .tier = "cheap", .child = "tier-a",
                                      .cost_gib_month = 0.02, .prior_max_iops = 0, .prior_latency_ms = 0 };
  s->cfg.tiers[1] = (ShdPolicyTier) { .tier = "fast", .child = "tier-b",
                                      .cost_gib_month = 0.12, .prior_max_iops = 0, .prior_latency_ms = 0 };
  s->state[0] = "active";
  s->state[1] = "synced";
  s->valid_b = 1 << 30;
  s->rand = g_rand_new_with_seed (seed);
}

static void
sim_start (Sim *s)
{
  s->p = shd_policy_new (&s->cfg);
}

static void
sim_clear (Sim *s)
{
  shd_policy_free (s->p);
  g_rand_free (s->rand);
}

/* The latency of a tier at an offered load: M/M/1 below saturation, a
 * full queue of 32 above it.  Returns the IOPS delivered. */
static double
tier_serve (const SimTier *t, double offered, double *lat)
{
  double rho = offered / t->cap;

  if (rho < 0.97) {
    *lat = t->base / (1 - rho);
    return offered;
  }
  *lat = MAX (t->base / 0.03, 32.0 / t->cap * 1000);
  return t->cap;
}

static const ShdDecision *
sim_step (Sim *s, double offered)
{
  const SimTier *tiers[2] = { &cheap, &fast };
  ShdPolicyInput in;
  const ShdDecision *d;
  double lat, iops;
  int shadow = 1 - s->active;

  shd_policy_input_init (&in);
  offered = MAX (offered, 0);
  iops = tier_serve (tiers[s->active], offered, &lat);
  in.t = s->t;
  in.wall = in.t;
  in.valid = TRUE;
  in.iops = iops;
  in.latency_ms = iops > 0 ? lat : NAN;
  in.active = s->cfg.tiers[s->active].child;
  in.size_bytes = 1 << 30;
  in.n_children = 2;
  for (int i = 0; i < 2; i++) {
    ShdPolicyChild *c = &in.children[i];

    c->child = s->cfg.tiers[i].child;
    c->state = i == s->active ? "active" : s->state[i];
    c->valid = TRUE;
    c->valid_bytes = i == s->active ? (guint64) 1 << 30 : s->valid_b;
    c->copy_bps = s->copy_bps;
    if (i == s->active) {
      c->iops = iops;
      c->latency_ms = in.latency_ms;
    } else {
      /* a shadow sees the writes, a third of the load, at its own pace */
      double l;
      c->iops = tier_serve (tiers[shadow], iops / 3, &l);
      c->latency_ms = c->iops > 0 ? (s->shadow_lat > 0 ? s->shadow_lat : l) : NAN;
    }
  }
  if (iops >= 1 && lat > SLO)
    s->violations++;
  in.reopen_in_flight = s->reopen_in_flight;
  d = shd_policy_step (s->p, &in);
  if (g_getenv ("SIM_TRACE")) g_printerr ("t=%.0f off=%.0f lat=%.2f [%s %.0f] %s\n", s->t, offered, lat, d->model, d->forecast, d->reason);
  if (d->action == SHD_ACTION_SWITCH && !d->dry_run) {
    g_assert_cmpint (d->target, >=, 0);
    /* without a metadata child (instant_switch) only to a synced tier */
    if (!s->cfg.instant_switch)
      g_assert_cmpstr (s->state[d->target], ==, "synced");
    s->active = d->target;
    s->state[1 - d->target] = "synced";
    s->state[d->target] = "active";
    g_assert_cmpuint (s->switches, <, G_N_ELEMENTS (s->switch_t));
    s->switch_t[s->switches] = s->t;
    s->switch_to[s->switches] = d->target;
    s->switches++;
    if (g_test_verbose ())
      g_test_message ("t=%.0f %s", s->t, d->reason);
  }
  s->t += s->cfg.interval_s;
  return d;
}

static double
noise (Sim *s, double mean, double sd)
{
  /* Box-Muller */
  double u1 = g_rand_double_range (s->rand, 1e-12, 1), u2 = g_rand_double (s->rand);

  return mean + sd * sqrt (-2 * log (u1)) * cos (2 * G_PI * u2);
}

/* A step up: the disk moves to the fast tier within a few intervals, and
 * back after the load has been low for switch-back-after. */
static void
test_step (void)
{
  Sim s;
  double step_t, end_t;

  sim_init (&s, 1);
  sim_start (&s);
  for (int i = 0; i < 300; i++)
    sim_step (&s, noise (&s, 30, 5));
  g_assert_cmpuint (s.switches, ==, 0);
  step_t = s.t;
  for (int i = 0; i < 200; i++)
    sim_step (&s, noise (&s, 1000, 50));
  g_assert_cmpuint (s.switches, ==, 1);
  g_assert_cmpint (s.switch_to[0], ==, 1);
  /* within 3 intervals of the step: the forecast trips on the first
   * sample (naive point over the limit) or the SLO after violation-intervals */
  g_assert_cmpfloat (s.switch_t[0] - step_t, <=, 3);
  g_assert_cmpstr (shd_decision_kind_name (shd_policy_last (s.p)->kind), ==, "hold");
  end_t = s.t;
  for (int i = 0; i < 200; i++)
    sim_step (&s, noise (&s, 30, 5));
  g_assert_cmpuint (s.switches, ==, 2);
  g_assert_cmpint (s.switch_to[1], ==, 0);
  /* back after switch-back-after (20 s), plus the time the forecast takes
   * to follow the drop (the model that tracked the high load keeps the
   * need up for a few intervals) */
  g_assert_cmpfloat (s.switch_t[1] - end_t, >=, 20);
  g_assert_cmpfloat (s.switch_t[1] - end_t, <=, 50);
  /* the cheap tier's capacity was learned while it was missing the SLO */
  g_assert_cmpfloat (shd_policy_profile (s.p, 0)->capacity_iops, >, 100);
  g_assert_cmpfloat (shd_policy_profile (s.p, 0)->capacity_iops, <=, 200);
  g_assert_cmpfloat (shd_policy_profile (s.p, 0)->base_latency_ms, >, 1.5);
  g_assert_cmpfloat (shd_policy_profile (s.p, 0)->base_latency_ms, <, 3);

  /* a second step: now the capacity is known, so the first interval's
   * forecast is enough and the SLO is missed at most once */
  s.violations = 0;
  step_t = s.t;
  for (int i = 0; i < 60; i++)
    sim_step (&s, noise (&s, 1000, 50));
  g_assert_cmpuint (s.switches, ==, 3);
  g_assert_cmpfloat (s.switch_t[2] - step_t, <=, 1);
  g_assert_cmpuint (s.violations, <=, 2);
  sim_clear (&s);
}

/* Noise below the cheap tier's limit, with isolated wild values: no
 * switch at all over a long run. */
static void
test_noise (void)
{
  Sim s;

  sim_init (&s, 2);
  s.cfg.tiers[0].prior_max_iops = 200;    /* limit 120 IOPS at 2 ms base */
  sim_start (&s);
  for (int i = 0; i < 20000; i++) {
    double x = noise (&s, 50, 12);

    if (g_rand_int_range (s.rand, 0, 100) == 0)
      x = g_rand_double_range (s.rand, 80, 110);      /* a lone burst */
    sim_step (&s, x);
  }
  g_assert_cmpuint (s.switches, ==, 0);
  g_assert_cmpfloat (shd_policy_tier_limit (s.p, 0), >, 100);
  sim_clear (&s);
}

/* Load flipping between low and high faster than the dwell allows:
 * switches are spaced by min-dwell and capped per hour. */
static void
test_dwell_and_cap (void)
{
  Sim s;
  guint in_hour;

  sim_init (&s, 3);
  s.cfg.knobs.min_dwell_s = 60;
  s.cfg.knobs.switch_back_after_s = 5;
  s.cfg.knobs.max_switches_per_hour = 4;
  sim_start (&s);
  for (int i = 0; i < 60; i++)
    sim_step (&s, noise (&s, 30, 3));
  for (int cycle = 0; cycle < 200; cycle++)
    for (int i = 0; i < 40; i++)
      sim_step (&s, noise (&s, (cycle & 1) ? 30 : 1000, 5));
  g_assert_cmpuint (s.switches, >=, 4);
  for (guint i = 1; i < s.switches; i++)
    g_assert_cmpfloat (s.switch_t[i] - s.switch_t[i - 1], >=, 60);
  for (guint i = 0; i < s.switches; i++) {
    in_hour = 0;
    for (guint j = i; j < s.switches && s.switch_t[j] - s.switch_t[i] < 3600; j++)
      in_hour++;
    g_assert_cmpuint (in_hour, <=, 4);
  }
  g_assert_cmpuint (shd_policy_switch_count (s.p), ==, s.switches);
  sim_clear (&s);
}

/* A daily-like pattern, compressed: the seasonal forecast learns it and
 * the disk moves ahead of the rise, not after. */
static void
test_forecast_ahead (void)
{
  Sim s;
  const int period = 60, high_from = 40, high_to = 52;
  guint ahead = 0, late = 0;

  sim_init (&s, 4);
  s.cfg.knobs.period = period;
  s.cfg.knobs.min_dwell_s = 5;
  s.cfg.knobs.switch_back_after_s = 3;
  s.cfg.knobs.max_switches_per_hour = 1000;
  s.cfg.knobs.horizon_s = 5;
  /* under the gap between two rises: kept for release-after (an hour by
   * default) the fast copy would never go, and the disk would live there */
  s.cfg.knobs.release_after_s = 20;
  s.cfg.tiers[0].prior_max_iops = 200;
  sim_start (&s);
  for (int c = 0; c < 30; c++) {
    guint before = s.switches;

    for (int i = 0; i < period; i++) {
      /* a ramp up to the high plateau, as load builds in the morning */
      double x = i < high_from - 4 ? 30 :
                 i < high_from ? 30 + (i - high_from + 5) * 40 :
                 i < high_to ? 600 : 30;
      double t0 = s.t;

      sim_step (&s, noise (&s, x, 3));
      if (c >= 15 && s.switches > before && s.switch_to[s.switches - 1] == 1 &&
          s.switch_t[s.switches - 1] == t0) {
        /* the load is over the cheap tier's limit (120) from high_from - 2
         * on: deciding after sample high_from - 3 is ahead of it */
        if (i <= high_from - 3)
          ahead++;
        else
          late++;
        before = s.switches;
      }
    }
  }
  g_test_message ("switched up ahead of the rise %u times, late %u", ahead, late);
  g_assert_cmpuint (ahead, >=, 12);
  g_assert_cmpuint (late, <=, 3);
  sim_clear (&s);
}

/* The target child is still syncing: the policy waits and says how long
 * the copy needs; it switches once the child is synced. */
static void
test_wait_sync (void)
{
  Sim s;
  const ShdDecision *d = NULL;

  sim_init (&s, 5);
  s.state[1] = "syncing";
  s.valid_b = 256 << 20;
  s.copy_bps = 64 << 20;
  sim_start (&s);
  for (int i = 0; i < 100; i++)
    sim_step (&s, noise (&s, 30, 3));
  for (int i = 0; i < 10; i++)
    d = sim_step (&s, noise (&s, 1000, 10));
  g_assert_cmpuint (s.switches, ==, 0);
  g_assert_cmpstr (shd_decision_kind_name (d->kind), ==, "wait-sync");
  g_assert_cmpint (d->target, ==, 1);
  g_assert_cmpuint (d->stale_bytes, ==, 768 << 20);
  g_assert_cmpfloat (fabs (d->prewarm_eta_s - 12), <, 0.01);
  g_assert_nonnull (strstr (d->reason, "syncing"));
  s.state[1] = "synced";
  d = sim_step (&s, noise (&s, 1000, 10));
  g_assert_cmpuint (s.switches, ==, 1);
  g_assert_cmpstr (shd_decision_kind_name (d->kind), ==, "switch-up");
  sim_clear (&s);
}

/* Dry run: the same decisions, flagged, with a virtual active tier. */
static void
test_dry_run (void)
{
  Sim s;
  guint dry = 0, kinds_up = 0, kinds_back = 0;

  sim_init (&s, 6);
  s.cfg.dry_run = TRUE;
  sim_start (&s);
  for (int i = 0; i < 400; i++) {
    double x = i >= 100 && i < 200 ? 1000 : 30;
    const ShdDecision *d = sim_step (&s, noise (&s, x, 3));

    if (d->action == SHD_ACTION_SWITCH) {
      g_assert_true (d->dry_run);
      g_assert_true (g_str_has_prefix (d->reason, "dry run: "));
      dry++;
      kinds_up += d->kind == SHD_DECISION_SWITCH_UP;
      kinds_back += d->kind == SHD_DECISION_SWITCH_BACK;
    }
  }
  g_assert_cmpuint (s.switches, ==, 0);       /* never acted */
  g_assert_cmpuint (dry, ==, 2);
  g_assert_cmpuint (kinds_up, ==, 1);
  g_assert_cmpuint (kinds_back, ==, 1);
  g_assert_cmpint (shd_policy_active (s.p), ==, 0);
  sim_clear (&s);
}

/* Paused: would-be switches are reported but nothing changes; a manual
 * request is honoured regardless of dwell. */
static void
test_pause_and_manual (void)
{
  Sim s;
  const ShdDecision *d = NULL;

  sim_init (&s, 7);
  s.cfg.knobs.min_dwell_s = 1000;
  sim_start (&s);
  shd_policy_set_paused (s.p, TRUE);
  for (int i = 0; i < 50; i++)
    sim_step (&s, noise (&s, 30, 3));
  for (int i = 0; i < 10; i++)
    d = sim_step (&s, noise (&s, 1000, 3));
  g_assert_cmpuint (s.switches, ==, 0);
  g_assert_true (d->dry_run);
  g_assert_true (g_str_has_prefix (d->reason, "paused: "));
  shd_policy_set_paused (s.p, FALSE);
  d = sim_step (&s, noise (&s, 1000, 3));
  g_assert_cmpuint (s.switches, ==, 1);
  /* dwell is 1000 s, and the policy is paused, but the operator asks */
  shd_policy_set_paused (s.p, TRUE);
  shd_policy_request_switch (s.p, 0);
  d = sim_step (&s, noise (&s, 1000, 3));
  g_assert_cmpstr (shd_decision_kind_name (d->kind), ==, "switch-manual");
  g_assert_false (d->dry_run);
  g_assert_cmpuint (s.switches, ==, 2);
  g_assert_cmpint (s.active, ==, 0);
  shd_policy_set_paused (s.p, FALSE);
  /* and the automatic policy then holds for min-dwell */
  for (int i = 0; i < 20; i++)
    d = sim_step (&s, noise (&s, 1000, 3));
  g_assert_cmpuint (s.switches, ==, 2);
  g_assert_cmpstr (shd_decision_kind_name (d->kind), ==, "blocked");
  g_assert_nonnull (strstr (d->reason, "min-dwell"));
  sim_clear (&s);
}

/* An operator's switch down during a spike, with min-dwell 0: nothing
 * holds it, and the next step switches back up for the service level
 * (what shadowd-sim met when its spike came while it asked for cheap). */
static void
test_manual_without_dwell (void)
{
  Sim s;
  const ShdDecision *d = NULL;

  sim_init (&s, 11);
  s.cfg.knobs.min_dwell_s = 0;
  sim_start (&s);
  for (int i = 0; i < 50; i++)
    sim_step (&s, noise (&s, 30, 3));
  for (int i = 0; i < 10; i++)
    sim_step (&s, noise (&s, 1000, 3));
  g_assert_cmpint (s.active, ==, 1);
  shd_policy_request_switch (s.p, 0);
  d = sim_step (&s, noise (&s, 1000, 3));
  g_assert_cmpstr (shd_decision_kind_name (d->kind), ==, "switch-manual");
  g_assert_cmpint (s.active, ==, 0);
  d = sim_step (&s, noise (&s, 1000, 3));
  g_assert_cmpstr (shd_decision_kind_name (d->kind), ==, "switch-up");
  g_assert_cmpint (s.active, ==, 1);
  sim_clear (&s);
}

/* An operator's switch while a reopen of the node is in flight waits for
 * it, and is decided and counted once, when made. */
static void
test_manual_waits_for_reopen (void)
{
  Sim s;
  const ShdDecision *d;
  guint count;

  sim_init (&s, 12);
  sim_start (&s);
  for (int i = 0; i < 30; i++)
    sim_step (&s, noise (&s, 30, 3));
  count = shd_policy_switch_count (s.p);
  shd_policy_request_switch (s.p, 1);
  s.reopen_in_flight = TRUE;
  for (int i = 0; i < 3; i++) {
    d = sim_step (&s, noise (&s, 30, 3));
    g_assert_cmpstr (shd_decision_kind_name (d->kind), ==, "hold");
    g_assert_cmpint (d->action, ==, SHD_ACTION_NONE);
    g_assert_cmpstr (d->reason, ==,
                     "the operator's switch to fast waits for a reopen of the node in flight");
  }
  g_assert_cmpuint (shd_policy_switch_count (s.p), ==, count);
  s.reopen_in_flight = FALSE;
  d = sim_step (&s, noise (&s, 30, 3));
  g_assert_cmpstr (shd_decision_kind_name (d->kind), ==, "switch-manual");
  g_assert_cmpint (s.active, ==, 1);
  g_assert_cmpuint (shd_policy_switch_count (s.p), ==, count + 1);
  /* done: the request is not made again */
  d = sim_step (&s, noise (&s, 30, 3));
  g_assert_cmpstr (shd_decision_kind_name (d->kind), !=, "switch-manual");
  sim_clear (&s);
}

/* A failed switch is forgotten: the tier and the count roll back. */
static void
test_switch_failed (void)
{
  Sim s;
  ShdPolicyInput in;
  const ShdDecision *d;

  shd_policy_input_init (&in);
  sim_init (&s, 8);
  s.cfg.knobs.min_dwell_s = 0;
  sim_start (&s);
  for (int i = 0; i < 40; i++)
    sim_step (&s, 30);
  in.t = s.t;
  in.wall = in.t;
  in.valid = TRUE;
  in.iops = 200;
  in.latency_ms = 100;
  in.active = "tier-a";
  in.n_children = 2;
  in.children[0] = (ShdPolicyChild) { "tier-a", "active", TRUE, 200, 100, 0, 1 << 30 };
  in.children[1] = (ShdPolicyChild) { "tier-b", "synced", TRUE, 60, 0.2, 0, 1 << 30 };
  d = shd_policy_step (s.p, &in);
  g_assert_cmpint (d->action, ==, SHD_ACTION_SWITCH);
  g_assert_cmpint (shd_policy_active (s.p), ==, 1);
  g_assert_cmpuint (shd_policy_switch_count (s.p), ==, 1);
  shd_policy_switch_failed (s.p, "test");
  g_assert_cmpint (shd_policy_active (s.p), ==, 0);
  g_assert_cmpuint (shd_policy_switch_count (s.p), ==, 0);
  sim_clear (&s);
}

/* Three tiers: the cheapest that meets the load is chosen, not the
 * fastest; a degraded child is never a target. */
static void
test_three_tiers (void)
{
  ShdPolicyConfig cfg = { 0 };
  ShdPolicyInput in;
  g_autoptr (ShdPolicy) p = NULL;
  const ShdDecision *d = NULL;

  shd_policy_input_init (&in);
  cfg.interval_s = 1;
  cfg.slo_latency_ms = SLO;
  shd_policy_knobs_init (&cfg.knobs);
  cfg.n_tiers = 3;
  cfg.tiers[0] = (ShdPolicyTier) { .tier = "premium", .child = "t-p",
                                      .cost_gib_month = 0.30, .prior_max_iops = 50000, .prior_latency_ms = 0.1 };
  cfg.tiers[1] = (ShdPolicyTier) { .tier = "cheap", .child = "t-c",
                                      .cost_gib_month = 0.02, .prior_max_iops = 200, .prior_latency_ms = 2 };
  cfg.tiers[2] = (ShdPolicyTier) { .tier = "mid", .child = "t-m",
                                      .cost_gib_month = 0.08, .prior_max_iops = 2000, .prior_latency_ms = 1 };
  p = shd_policy_new (&cfg);
  in.valid = TRUE;
  in.active = "t-c";
  in.n_children = 3;
  in.children[0] = (ShdPolicyChild) { "t-p", "synced", TRUE, 0, NAN, 0, 1 << 30 };
  in.children[1] = (ShdPolicyChild) { "t-c", "active", TRUE, 0, NAN, 0, 1 << 30 };
  in.children[2] = (ShdPolicyChild) { "t-m", "synced", TRUE, 0, NAN, 0, 1 << 30 };
  for (int i = 0; i < 60; i++) {
    in.t = i;
    in.wall = in.t;
    in.iops = i < 50 ? 50 : 900;
    in.latency_ms = i < 50 ? 2.5 : 40;
    d = shd_policy_step (p, &in);
    if (d->action == SHD_ACTION_SWITCH)
      break;
  }
  g_assert_cmpint (d->action, ==, SHD_ACTION_SWITCH);
  g_assert_cmpstr (cfg.tiers[d->target].tier, ==, "mid");

  in.active = "t-m";
  in.children[1].state = "synced";
  in.children[2].state = "degraded";
  g_assert_cmpint (shd_policy_tier_by_name (p, "premium"), ==, 0);
  in.t = 1000;
  in.wall = in.t;
  in.iops = 1900;
  in.latency_ms = 30;
  d = shd_policy_step (p, &in);
  g_assert_cmpint (d->target, ==, 0);  /* mid is degraded: premium */
}

/* A tier whose child is not in the node: the policy asks for it to be
 * added (pre-warm), waits for it to sync, then switches; after a failed
 * add it leaves the tier alone for a while. */
static void
test_absent_child (void)
{
  ShdPolicyConfig cfg = { 0 };
  ShdPolicyInput in;
  g_autoptr (ShdPolicy) p = NULL;
  const ShdDecision *d = NULL;
  int i;

  shd_policy_input_init (&in);
  cfg.interval_s = 1;
  cfg.slo_latency_ms = SLO;
  shd_policy_knobs_init (&cfg.knobs);
  cfg.add_children = TRUE;
  cfg.n_tiers = 2;
  cfg.tiers[0] = (ShdPolicyTier) { .tier = "cheap", .child = "tier-a",
                                      .cost_gib_month = 0.02, .prior_max_iops = 200, .prior_latency_ms = 2 };
  cfg.tiers[1] = (ShdPolicyTier) { .tier = "fast", .child = "tier-b",
                                      .cost_gib_month = 0.12, .prior_max_iops = 0, .prior_latency_ms = 0 };
  p = shd_policy_new (&cfg);
  in.valid = TRUE;
  in.active = "tier-a";
  in.size_bytes = 1 << 30;
  in.n_children = 1;
  in.children[0] = (ShdPolicyChild) { "tier-a", "active", TRUE, 0, NAN, 0, 1 << 30 };
  for (i = 0; i < 40; i++) {
    in.t = i;
    in.wall = in.t;
    in.iops = in.children[0].iops = 30;
    in.latency_ms = in.children[0].latency_ms = 2.5;
    d = shd_policy_step (p, &in);
    g_assert_cmpint (d->action, ==, SHD_ACTION_NONE);
  }
  in.t = i++;
  in.wall = in.t;
  in.iops = in.children[0].iops = 200;
  in.latency_ms = in.children[0].latency_ms = 80;
  d = shd_policy_step (p, &in);
  g_assert_cmpint (d->action, ==, SHD_ACTION_PREWARM);
  g_assert_cmpstr (shd_decision_kind_name (d->kind), ==, "prewarm");
  g_assert_cmpint (d->target, ==, 1);
  g_assert_nonnull (strstr (d->reason, "tier-b is not in the node: adding it"));

  /* the child is in, syncing: wait-sync, no action */
  in.n_children = 2;
  in.children[1] = (ShdPolicyChild) { "tier-b", "syncing", TRUE, 40, 0.3, 100 << 20, 512 << 20 };
  in.t = i++;
  in.wall = in.t;
  d = shd_policy_step (p, &in);
  g_assert_cmpstr (shd_decision_kind_name (d->kind), ==, "wait-sync");
  g_assert_cmpint (d->action, ==, SHD_ACTION_NONE);
  g_assert_cmpfloat (fabs (d->prewarm_eta_s - 512.0 / 100), <, 0.01);
  /* synced: switch */
  in.children[1].state = "synced";
  in.t = i++;
  in.wall = in.t;
  d = shd_policy_step (p, &in);
  g_assert_cmpint (d->action, ==, SHD_ACTION_SWITCH);
  g_assert_cmpint (d->target, ==, 1);

  /* a fresh policy, and adding fails: the tier is not wanted for a while */
  g_clear_pointer (&p, shd_policy_free);
  p = shd_policy_new (&cfg);
  in.n_children = 1;
  for (i = 0; i < 40; i++) {
    in.t = i;
    in.wall = in.t;
    in.iops = in.children[0].iops = 30;
    in.latency_ms = in.children[0].latency_ms = 2.5;
    shd_policy_step (p, &in);
  }
  shd_policy_mark_unavailable (p, 1, 100);
  in.iops = in.children[0].iops = 200;
  in.latency_ms = in.children[0].latency_ms = 80;
  for (; i < 99; i++) {
    in.t = i;
    in.wall = in.t;
    d = shd_policy_step (p, &in);
    g_assert_cmpint (d->action, ==, SHD_ACTION_NONE);
  }
  in.t = 100;
  in.wall = in.t;
  d = shd_policy_step (p, &in);
  g_assert_cmpint (d->action, ==, SHD_ACTION_PREWARM);

  /* and with add-children off, an absent tier is never a target */
  cfg.add_children = FALSE;
  g_clear_pointer (&p, shd_policy_free);
  p = shd_policy_new (&cfg);
  for (i = 0; i < 60; i++) {
    in.t = i;
    in.wall = in.t;
    d = shd_policy_step (p, &in);
    g_assert_cmpint (d->action, ==, SHD_ACTION_NONE);
  }
}

/* Slow requests at light load (a copy that just ended, a hiccup) are not
 * a capacity: no switch on one such interval, and the tier's limit stays
 * unknown. */
static void
test_light_load_hiccup (void)
{
  Sim s;
  const ShdDecision *d;

  sim_init (&s, 9);
  sim_start (&s);
  for (int i = 0; i < 60; i++)
    sim_step (&s, noise (&s, 10, 2));
  {
    ShdPolicyInput in;

    shd_policy_input_init (&in);
    in.t = s.t++;

    in.wall = in.t;
    in.valid = TRUE;
    in.iops = 9;
    in.latency_ms = 14;
    in.active = "tier-a";
    in.n_children = 2;
    in.children[0] = (ShdPolicyChild) { "tier-a", "active", TRUE, 9, 14, 0, 1 << 30 };
    in.children[1] = (ShdPolicyChild) { "tier-b", "synced", TRUE, 2, 0.2, 0, 1 << 30 };
    d = shd_policy_step (s.p, &in);
    g_assert_cmpint (d->action, ==, SHD_ACTION_NONE);
  }
  g_assert_cmpfloat (shd_policy_profile (s.p, 0)->capacity_iops, ==, 0);
  for (int i = 0; i < 30; i++)
    sim_step (&s, noise (&s, 10, 2));
  g_assert_cmpuint (s.switches, ==, 0);
  sim_clear (&s);
}

/* Mirrored writes queueing on the cheap shadow (4.5 ms, just within the
 * SLO) are not the cheap tier's light-load latency: the disk still goes
 * back once the load is gone. */
static void
test_slow_shadow_writes (void)
{
  Sim s;
  double end_t;

  sim_init (&s, 10);
  sim_start (&s);
  for (int i = 0; i < 60; i++)
    sim_step (&s, noise (&s, 20, 2));
  for (int i = 0; i < 30; i++)
    sim_step (&s, noise (&s, 1000, 20));
  g_assert_cmpuint (s.switches, ==, 1);
  s.shadow_lat = 4.5;
  end_t = s.t;
  for (int i = 0; i < 120; i++)
    sim_step (&s, noise (&s, 20, 2));
  g_assert_cmpuint (s.switches, ==, 2);
  g_assert_cmpfloat (s.switch_t[1] - end_t, <=, 50);
  g_assert_cmpfloat (shd_policy_profile (s.p, 0)->base_latency_ms, <, 3);
  sim_clear (&s);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/policy/step", test_step);
  g_test_add_func ("/policy/noise", test_noise);
  g_test_add_func ("/policy/dwell-and-cap", test_dwell_and_cap);
  g_test_add_func ("/policy/forecast-ahead", test_forecast_ahead);
  g_test_add_func ("/policy/wait-sync", test_wait_sync);
  g_test_add_func ("/policy/dry-run", test_dry_run);
  g_test_add_func ("/policy/pause-and-manual", test_pause_and_manual);
  g_test_add_func ("/policy/manual-without-dwell", test_manual_without_dwell);
  g_test_add_func ("/policy/manual-waits-for-reopen", test_manual_waits_for_reopen);
  g_test_add_func ("/policy/switch-failed", test_switch_failed);
  g_test_add_func ("/policy/three-tiers", test_three_tiers);
  g_test_add_func ("/policy/absent-child", test_absent_child);
  g_test_add_func ("/policy/light-load-hiccup", test_light_load_hiccup);
  g_test_add_func ("/policy/slow-shadow-writes", test_slow_shadow_writes);
  return g_test_run ();
}
