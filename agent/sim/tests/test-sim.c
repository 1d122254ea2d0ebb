/* The policy simulation on synthetic multi-day series sampled every
 * second: a compressed day (by configuration only: seasons, bucket and
 * release-after say how long a day is), a real day, and the oracle on a
 * series small enough to check by hand. */
#include "sim.h"

#include <math.h>
#include <string.h>

static double
gauss (GRand *r)
{
  double u1 = MAX (g_rand_double (r), 1e-300), u2 = g_rand_double (r);

  return sqrt (-2 * log (u1)) * cos (2 * G_PI * u2);
}

#define CHEAP_IOPS 150
#define FAST_IOPS 5000

/* Two tiers as the demo's, a disk whose copy takes copy_s at full speed. */
static void
config_init (ShdSimConfig *c, double copy_s)
{
  memset (c, 0, sizeof *c);
  c->interval_s = 1;
  c->size_bytes = 1024.0 * 1024 * 1024;
  c->policy.slo_latency_ms = 20;
  shd_policy_knobs_init (&c->policy.knobs);
  c->policy.n_tiers = 2;
  c->policy.tiers[0] = (ShdPolicyTier) { .tier = "cheap", .child = "tier-a",
                                         .cost_gib_month = 0.02, .prior_max_iops = CHEAP_IOPS,
                                         .prior_latency_ms = 2,
                                         .prior_copy_bps = c->size_bytes / copy_s };
  c->policy.tiers[1] = (ShdPolicyTier) { .tier = "fast", .child = "tier-b",
                                         .cost_gib_month = 0.12, .prior_max_iops = FAST_IOPS,
                                         .prior_latency_ms = 0.5,
                                         .prior_copy_bps = c->size_bytes / copy_s };
  c->tiers[0] = (ShdSimTier) { CHEAP_IOPS, 2, c->size_bytes / copy_s };
  c->tiers[1] = (ShdSimTier) { FAST_IOPS, 0.5, c->size_bytes / copy_s };
}

/* days of `day` seconds at one sample a second: a quiet 30 IOPS with
 * noise, and every day a spike to 600 IOPS from spike_at for spike_len */
static double *
daily_series (guint days, guint day, guint spike_at, guint spike_len, guint32 seed)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  double *y = g_new (double, (gsize) days * day);

  for (gsize t = 0; t < (gsize) days * day; t++) {
    guint ph = t % day;

    y[t] = MAX (0, 30 + 5 * gauss (r));
    if (ph >= spike_at && ph < spike_at + spike_len)
      y[t] = 600 + 30 * gauss (r);
  }
  return y;
}

static const ShdSimOutcome *
outcome (const ShdSimResult *r, ShdSimPolicy p)
{
  return &r->policies[p];
}

static void
log_outcomes (const ShdSimResult *r)
{
  for (guint p = 0; p < SHD_SIM_N_POLICIES; p++) {
    const ShdSimOutcome *o = outcome (r, p);

    g_test_message ("%-12s violation %6.0f s, cost %.6f, switches %u, prewarms %u, releases %u",
                    o->name, o->violation_s, o->cost, o->switches, o->prewarms, o->releases);
  }
}

/* A compressed day of 600 s, buckets of 5 s, release after 60 s, up to
 * 100 switches an hour (an hour is six days here): once the season held
 * up out of sample (after two days and a half), the fast tier is warmed
 * and switched to before every spike, and released after it. */
static void
test_compressed_day (void)
{
  const guint days = 10, day = 600, at = 400, len = 60;
  g_autofree double *y = daily_series (days, day, at, len, 1);
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdSimResult) r = NULL;
  const ShdSimOutcome *st, *re;
  ShdSimConfig c;
  guint ahead = 0;

  config_init (&c, 20);
  c.policy.knobs.bucket_s = 5;
  c.policy.knobs.seasons_s[0] = day;
  c.policy.knobs.seasons_s[1] = 0;
  c.policy.knobs.lookahead_s = 120;
  c.policy.knobs.prewarm_margin_s = 5;
  c.policy.knobs.switch_lead_s = 2;
  c.policy.knobs.release_after_s = 60;
  c.policy.knobs.min_dwell_s = 10;
  c.policy.knobs.switch_back_after_s = 15;
  c.policy.knobs.max_switches_per_hour = 100;
  r = shd_sim_run (y, (gsize) days * day, &c, &error);
  g_assert_no_error (error);
  log_outcomes (r);
  st = outcome (r, SHD_SIM_SHADOWTIER);
  re = outcome (r, SHD_SIM_REACTIVE);
  g_assert_cmpuint (st->spikes->len, ==, days);
  for (guint s = 0; s < st->spikes->len; s++) {
    const ShdSimSpike *sp = &g_array_index (st->spikes, ShdSimSpike, s);

    g_test_message ("day %u: onset %.0f, warm %.0f-%.0f, switch %.0f, lead %.0f s", s + 1,
                    sp->onset_s, sp->prewarm_start_s, sp->prewarm_done_s, sp->switch_s,
                    sp->lead_s);
    if (s < 3)
      continue;
    /* ahead: warmed before the onset, switched before it */
    g_assert_cmpfloat (sp->lead_s, >=, 0);
    g_assert_cmpfloat (sp->prewarm_done_s, <=, sp->switch_s);
    g_assert_cmpfloat (sp->prewarm_start_s, <, sp->onset_s);
    ahead++;
  }
  g_assert_cmpuint (ahead, ==, days - 3);
  /* released after each spike it warmed for */
  g_assert_cmpuint (st->releases, >=, days - 1);
  g_assert_cmpuint (st->prewarms, >=, days - 1);
  /* honest cost: under always-fast; violations far under reactive's */
  g_assert_cmpfloat (st->cost, <, outcome (r, SHD_SIM_ALWAYS_FAST)->cost);
  g_assert_cmpfloat (st->violation_s, <=, re->violation_s / 2);
  g_assert_cmpfloat (outcome (r, SHD_SIM_ORACLE)->violation_s, ==, 0);
  g_assert_cmpfloat (outcome (r, SHD_SIM_ORACLE)->cost, <=, st->cost);
  g_assert_cmpfloat (outcome (r, SHD_SIM_ALWAYS_CHEAP)->violation_s, ==, days * len);
}

/* Three past days as history (learned, not counted): every counted spike
 * is met ahead, from the first. */
static void
test_history_rows (void)
{
  const guint days = 6, day = 600, at = 400, len = 60;
  g_autofree double *y = daily_series (days, day, at, len, 3);
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdSimResult) r = NULL;
  const ShdSimOutcome *st;
  ShdSimConfig c;

  config_init (&c, 20);
  c.policy.knobs.bucket_s = 5;
  c.policy.knobs.seasons_s[0] = day;
  c.policy.knobs.seasons_s[1] = 0;
  c.policy.knobs.lookahead_s = 120;
  c.policy.knobs.prewarm_margin_s = 5;
  c.policy.knobs.switch_lead_s = 2;
  c.policy.knobs.release_after_s = 60;
  c.policy.knobs.min_dwell_s = 10;
  c.policy.knobs.switch_back_after_s = 15;
  c.policy.knobs.max_switches_per_hour = 100;
  c.history_rows = 3 * day;
  r = shd_sim_run (y, (gsize) days * day, &c, &error);
  g_assert_no_error (error);
  log_outcomes (r);
  g_assert_cmpuint (r->rows, ==, 3 * day);
  st = outcome (r, SHD_SIM_SHADOWTIER);
  g_assert_cmpuint (st->spikes->len, ==, 3);
  for (guint s = 0; s < st->spikes->len; s++) {
    const ShdSimSpike *sp = &g_array_index (st->spikes, ShdSimSpike, s);

    g_assert_cmpfloat (sp->onset_s, ==, (3 + s) * day + at);
    g_assert_cmpfloat (sp->lead_s, >=, 0);
  }
  g_assert_cmpfloat (st->violation_s, ==, 0);
  g_assert_cmpfloat (outcome (r, SHD_SIM_ALWAYS_CHEAP)->violation_s, ==, 3 * len);
}

/* A real day at one sample a second, the defaults (buckets of 5 minutes,
 * a day and a week as seasons, release after an hour): a spike at 14:00
 * for an hour, three days.  On the third it is met ahead. */
static void
test_real_day (void)
{
  const guint days = 3, day = 86400, at = 14 * 3600, len = 3600;
  g_autofree double *y = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdSimResult) r = NULL;
  const ShdSimSpike *sp;
  ShdSimConfig c;

  if (!g_test_slow () && g_getenv ("SHD_TEST_QUICK")) {
    g_test_skip ("three days at one sample a second: set no SHD_TEST_QUICK");
    return;
  }
  y = daily_series (days, day, at, len, 2);
  config_init (&c, 300);
  r = shd_sim_run (y, (gsize) days * day, &c, &error);
  g_assert_no_error (error);
  log_outcomes (r);
  g_assert_cmpuint (outcome (r, SHD_SIM_SHADOWTIER)->spikes->len, ==, days);
  sp = &g_array_index (outcome (r, SHD_SIM_SHADOWTIER)->spikes, ShdSimSpike, days - 1);
  g_test_message ("day 3: onset %.0f, warm %.0f-%.0f, switch %.0f, lead %.0f s",
                  sp->onset_s, sp->prewarm_start_s, sp->prewarm_done_s, sp->switch_s,
                  sp->lead_s);
  g_assert_cmpfloat (sp->lead_s, >=, 0);
  g_assert_cmpfloat (sp->prewarm_done_s, <=, sp->switch_s);
  /* the copy (300 s at full speed) began early enough, not hours early */
  g_assert_cmpfloat (sp->onset_s - sp->prewarm_start_s, <, 3 * 3600);
  g_assert_cmpfloat (outcome (r, SHD_SIM_SHADOWTIER)->cost, <,
                     outcome (r, SHD_SIM_ALWAYS_FAST)->cost);
  g_assert_cmpfloat (outcome (r, SHD_SIM_SHADOWTIER)->violation_s, <,
                     outcome (r, SHD_SIM_REACTIVE)->violation_s);
}

/* Ten days in rows of 5 minutes, a spike at 14:00 for an hour: once the
 * season is known, the disk goes up and back once a day and the fast
 * copy is released once a day, not again and again while a forecast
 * upper bound widened by the spike hovers over cheap's limit (each
 * warm-up is a copy of the whole disk). */
static void
test_one_warm_a_day (void)
{
  const guint days = 10, day = 288;
  g_autofree double *y = daily_series (days, day, 168, 12, 5);
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdSimResult) r = NULL;
  const ShdSimOutcome *o;
  ShdSimConfig c;

  config_init (&c, 600);
  c.interval_s = 300;
  r = shd_sim_run (y, (gsize) days * day, &c, &error);
  g_assert_no_error (error);
  log_outcomes (r);
  o = outcome (r, SHD_SIM_SHADOWTIER);
  g_test_message ("%u switches, %u releases in %u days", o->switches, o->releases, days);
  /* 60 switches before the switch up went by the expected load */
  g_assert_cmpuint (o->switches, <=, 2 * days);
  /* a warm-up more on two days while the season is young */
  g_assert_cmpuint (o->releases, <=, days + 2);
  g_assert_cmpfloat (o->violation_s, <, outcome (r, SHD_SIM_REACTIVE)->violation_s / 2);
}

/* A week in rows of 30 minutes, over cheap's limit (300 IOPS against 30)
 * on a share @busy of them at random, simulated with the disk allowed to
 * live on fast alone (release-origin) */
static ShdSimResult *
run_random_busy (guint32 seed, double busy)
{
  const guint rows = 336;
  g_autofree double *y = g_new (double, rows);
  g_autoptr (GRand) rnd = g_rand_new_with_seed (seed);
  g_autoptr (GError) error = NULL;
  ShdSimResult *r;
  ShdSimConfig c;

  for (guint i = 0; i < rows; i++)
    y[i] = MAX (0, (g_rand_double (rnd) < busy ? 300 : 30) + 5 * gauss (rnd));
  config_init (&c, 512);
  c.interval_s = 1800;
  c.policy.release_origin = TRUE;
  r = shd_sim_run (y, rows, &c, &error);
  g_assert_no_error (error);
  return r;
}

/* Busy on about half of the rows: no forecast sees the next one, so the
 * fast copy is held for good while the cheap one is kept besides.  Once
 * the two copies have cost what the fast one alone would have, the disk
 * lives on fast: never dearer than always-fast, and no up and down for
 * that (when the configuration lets the disk's own image go). */
static void
test_busy_half (void)
{
  g_autoptr (ShdSimResult) r = run_random_busy (7, 0.5);
  const ShdSimOutcome *o = outcome (r, SHD_SIM_SHADOWTIER);

  log_outcomes (r);
  g_assert_cmpfloat (o->cost, <=, outcome (r, SHD_SIM_ALWAYS_FAST)->cost);
  g_assert_cmpfloat (o->violation_s, <=, outcome (r, SHD_SIM_REACTIVE)->violation_s);
  g_assert_cmpuint (o->switches, <=, 10);
}

/* Busy on 60 to 90% of the rows: the copies held cost what fast alone
 * would within hours.  The move to fast is decided early enough that the
 * copies besides it, paid until it is done, do not make the disk dearer
 * than always-fast.  Known residue: at 60-70% the shares, an eighth of a
 * day after the buy, may say cheap is the cheaper base again; the disk
 * goes back and is bought again, and ends up to half a percent over
 * always-fast (8 of these 32 series).  Bounded here at 1%. */
static void
test_busy_most (void)
{
  for (guint seed = 1; seed <= 8; seed++)
    for (double p = 0.6; p < 0.95; p += 0.1) {
      g_autoptr (ShdSimResult) r = run_random_busy (seed, p);

      g_test_message ("seed %u, %.0f%% busy: shadowtier %.6f, always-fast %.6f", seed,
                      100 * p, outcome (r, SHD_SIM_SHADOWTIER)->cost,
                      outcome (r, SHD_SIM_ALWAYS_FAST)->cost);
      g_assert_cmpfloat (outcome (r, SHD_SIM_SHADOWTIER)->cost, <=,
                         1.01 * outcome (r, SHD_SIM_ALWAYS_FAST)->cost);
    }
}

/* A week in rows of 30 minutes, ten busy hours a day whose expected load
 * stays under cheap's limit but whose noise crosses it now and then: the
 * seasonal upper bound warms the fast tier for hours every day, and the
 * switch (by the expected load) seldom comes.  The hours the forecast
 * wants the fast copy are counted in its share (from the forecast, not
 * from the copy being there), so the base tier weighs what the lifecycle
 * holds: no base going up and down every eighth of a day, and never
 * dearer than always-fast. */
static void
test_warm_unused (void)
{
  const guint rows = 336;
  g_autofree double *y = g_new (double, rows);
  g_autoptr (GRand) rnd = g_rand_new_with_seed (11);
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdSimResult) r = NULL;
  const ShdSimOutcome *o;
  ShdSimConfig c;

  for (guint i = 0; i < rows; i++)
    y[i] = MAX (0, 40 + (i % 48 >= 16 && i % 48 < 36 ? 80 : 0) + 25 * gauss (rnd));
  config_init (&c, 512);
  c.interval_s = 1800;
  c.policy.release_origin = TRUE;       /* the disk may live on fast alone */
  r = shd_sim_run (y, rows, &c, &error);
  g_assert_no_error (error);
  log_outcomes (r);
  o = outcome (r, SHD_SIM_SHADOWTIER);
  g_assert_cmpfloat (o->cost, <=, outcome (r, SHD_SIM_ALWAYS_FAST)->cost);
  g_assert_cmpfloat (o->violation_s, <=, outcome (r, SHD_SIM_REACTIVE)->violation_s / 2);
  g_assert_cmpuint (o->switches, <=, 10);
}

/* A series that starts over cheap's limit: no policy has a copy on the
 * fast tier for its first row (every one starts on the cheapest tier
 * alone but always-fast, and a copy is made in the row before the one it
 * serves), the oracle neither; it serves the second there. */
static void
test_oracle_start (void)
{
  const double y[] = { 1000, 1000, 10, 10 };
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdSimResult) r = NULL;
  const ShdSimOutcome *o;
  ShdSimConfig c;

  config_init (&c, 360);
  c.interval_s = 3600;
  r = shd_sim_run (y, G_N_ELEMENTS (y), &c, &error);
  g_assert_no_error (error);
  log_outcomes (r);
  o = outcome (r, SHD_SIM_ORACLE);
  g_assert_cmpfloat (o->violation_s, ==, 3600);
  g_assert_cmpuint (o->switches, ==, 2);
  /* the agents start where it does (always-fast does not) */
  g_assert_cmpfloat (outcome (r, SHD_SIM_SHADOWTIER)->violation_s, >=, o->violation_s);
  g_assert_cmpfloat (outcome (r, SHD_SIM_REACTIVE)->violation_s, >=, o->violation_s);
}

/* Six rows of an hour; rows 3 and 4 need the fast tier.  The oracle
 * copies onto it just before row 3 (paying half the disk while the copy
 * runs, a tenth of an hour), serves rows 3 and 4 there and drops it; it
 * also drops the cheap copy for those two hours and copies it back
 * before row 5, which costs less than keeping it. */
static void
test_oracle (void)
{
  const double y[] = { 10, 10, 10, 1000, 1000, 10 };
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdSimResult) r = NULL;
  const ShdSimOutcome *o;
  const ShdSimSpike *sp;
  ShdSimConfig c;
  double gib_h_cheap = 4 + 0.5 * 0.1, gib_h_fast = 2 + 0.5 * 0.1;

  config_init (&c, 360);
  c.interval_s = 3600;
  r = shd_sim_run (y, G_N_ELEMENTS (y), &c, &error);
  g_assert_no_error (error);
  o = outcome (r, SHD_SIM_ORACLE);
  g_assert_cmpfloat (o->violation_s, ==, 0);
  g_assert_cmpuint (o->switches, ==, 2);
  g_assert_cmpuint (o->prewarms, ==, 2);
  g_assert_cmpuint (o->releases, ==, 2);
  g_assert_cmpfloat_with_epsilon (o->gib_hours[0], gib_h_cheap, 1e-9);
  g_assert_cmpfloat_with_epsilon (o->gib_hours[1], gib_h_fast, 1e-9);
  g_assert_cmpfloat_with_epsilon (o->cost, (gib_h_cheap * 0.02 + gib_h_fast * 0.12) / 730,
                                  1e-12);
  g_assert_cmpuint (o->spikes->len, ==, 1);
  sp = &g_array_index (o->spikes, ShdSimSpike, 0);
  g_assert_cmpfloat (sp->onset_s, ==, 3 * 3600);
  g_assert_cmpfloat (sp->switch_s, ==, 3 * 3600);
  g_assert_cmpfloat (sp->lead_s, ==, 0);
  g_assert_cmpfloat (sp->prewarm_start_s, ==, 3 * 3600 - 360);
  /* the fixed baselines */
  g_assert_cmpfloat (outcome (r, SHD_SIM_ALWAYS_CHEAP)->violation_s, ==, 2 * 3600);
  g_assert_cmpfloat_with_epsilon (outcome (r, SHD_SIM_ALWAYS_FAST)->cost, 6 * 0.12 / 730, 1e-12);
  g_assert_cmpfloat (outcome (r, SHD_SIM_ALWAYS_FAST)->violation_s, ==, 0);
}

static void
test_json (void)
{
  const double y[] = { 10, 10, 10, 1000, 1000, 10, 10, 10 };
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdSimResult) r = NULL;
  g_autoptr (JsonNode) node = NULL;
  JsonObject *o, *p0;
  JsonArray *policies, *spikes;
  ShdSimConfig c;

  config_init (&c, 60);
  c.interval_s = 1800;
  r = shd_sim_run (y, G_N_ELEMENTS (y), &c, &error);
  g_assert_no_error (error);
  node = shd_sim_to_json (r);
  o = json_node_get_object (node);
  g_assert_cmpfloat (json_object_get_double_member (o, "interval-s"), ==, 1800);
  g_assert_cmpint (json_object_get_int_member (o, "rows"), ==, G_N_ELEMENTS (y));
  g_assert_cmpuint (json_array_get_length (json_object_get_array_member (o, "tiers")), ==, 2);
  policies = json_object_get_array_member (o, "policies");
  g_assert_cmpuint (json_array_get_length (policies), ==, 5);
  for (guint i = 0; i < 5; i++) {
    p0 = json_array_get_object_element (policies, i);
    g_assert_cmpstr (json_object_get_string_member (p0, "name"), ==, shd_sim_policy_name (i));
    g_assert_true (json_object_has_member (p0, "violation-s"));
    g_assert_true (json_object_has_member (p0, "cost"));
    g_assert_true (json_object_has_member (json_object_get_object_member (p0, "gib-hours"),
                                           "fast"));
    g_assert_true (json_object_has_member (p0, "switches"));
    spikes = json_object_get_array_member (p0, "spikes");
    g_assert_cmpuint (json_array_get_length (spikes), ==, 1);
    for (guint k = 0; k < 5; k++) {
      static const char *const f[] = { "onset-s", "prewarm-start-s", "prewarm-done-s",
                                       "switch-s", "lead-s" };

      g_assert_true (json_object_has_member (json_array_get_object_element (spikes, 0), f[k]));
    }
  }
}

/* Rows of 30 minutes, a busy afternoon (10:00 to 16:00) each day.  The
 * season cannot be tested out of sample before about a day and a half,
 * yet the second day's afternoon is met ahead: until then the day before
 * stands for the season. */
static void
test_second_day (void)
{
  const guint days = 3, day = 48;
  g_autoptr (GRand) rnd = g_rand_new_with_seed (7);
  g_autofree double *y = g_new (double, days * day);
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdSimResult) r = NULL;
  const ShdSimSpike *sp;
  GArray *spikes;
  ShdSimConfig c;

  for (guint t = 0; t < days * day; t++)
    y[t] = t % day >= 20 && t % day < 32 ? 400 + 20 * gauss (rnd) : MAX (0, 50 + 5 * gauss (rnd));
  config_init (&c, 512);
  c.interval_s = 1800;
  r = shd_sim_run (y, days * day, &c, &error);
  g_assert_no_error (error);
  log_outcomes (r);
  spikes = outcome (r, SHD_SIM_SHADOWTIER)->spikes;
  g_assert_cmpuint (spikes->len, ==, days);
  sp = &g_array_index (spikes, ShdSimSpike, 1);
  g_test_message ("day 2: onset %.0f, warm %.0f-%.0f, switch %.0f, lead %.0f s",
                  sp->onset_s, sp->prewarm_start_s, sp->prewarm_done_s, sp->switch_s,
                  sp->lead_s);
  g_assert_cmpfloat (sp->onset_s, <, 1.5 * day * c.interval_s);
  g_assert_cmpfloat (sp->lead_s, >=, 0);
  /* reactive meets it late, as the first day */
  g_assert_cmpfloat (g_array_index (outcome (r, SHD_SIM_REACTIVE)->spikes, ShdSimSpike, 1).lead_s,
                     <, 0);
  g_assert_cmpfloat (outcome (r, SHD_SIM_SHADOWTIER)->violation_s, <,
                     outcome (r, SHD_SIM_REACTIVE)->violation_s);
}

/* Rows of 30 minutes: a spike of three rows, then idle.  The disk goes back
 * to cheap on the first idle row (the spike detector's end is a few
 * seconds' worth of evidence, not five more rows) and the fast copy is
 * released release-after later. */
static void
test_long_rows_spike_end (void)
{
  double y[40];
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdSimResult) r = NULL;
  const ShdSimOutcome *o;
  guint fast_rows = 0, held_rows = 0;
  ShdSimConfig c;

  for (guint t = 0; t < G_N_ELEMENTS (y); t++)
    y[t] = t >= 10 && t < 13 ? 500 : 20;
  config_init (&c, 60);
  c.interval_s = 1800;
  c.trace = TRUE;
  r = shd_sim_run (y, G_N_ELEMENTS (y), &c, &error);
  g_assert_no_error (error);
  log_outcomes (r);
  o = outcome (r, SHD_SIM_SHADOWTIER);
  for (guint t = 13; t < o->trace->len; t++) {
    const ShdSimRow *row = &g_array_index (o->trace, ShdSimRow, t);

    fast_rows += row->active == 1;
    held_rows += row->allocated[1] > 0;
  }
  g_test_message ("after the spike: %u rows on fast, %u rows with its copy", fast_rows, held_rows);
  g_assert_cmpuint (fast_rows, <=, 1);
  g_assert_cmpuint (held_rows, <=, 1 + 3600 / 1800 + 1);
}

/* Spikes as the report gives them: a run of rows over the cheap tier's
 * limit, its peak and its end, also when it ends at the last row */
static void
test_spikes (void)
{
  const double y[] = { 30, 500, 700, 600, 30, 30, 800, 900 };
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdSimResult) r = NULL;
  GArray *sp;
  ShdSimConfig c;

  config_init (&c, 512);
  r = shd_sim_run (y, G_N_ELEMENTS (y), &c, &error);
  g_assert_no_error (error);
  sp = outcome (r, SHD_SIM_SHADOWTIER)->spikes;
  g_assert_cmpuint (sp->len, ==, 2);
  g_assert_cmpfloat (g_array_index (sp, ShdSimSpike, 0).onset_s, ==, 1);
  g_assert_cmpfloat (g_array_index (sp, ShdSimSpike, 0).end_s, ==, 4);
  g_assert_cmpfloat (g_array_index (sp, ShdSimSpike, 0).peak_iops, ==, 700);
  g_assert_cmpfloat (g_array_index (sp, ShdSimSpike, 1).onset_s, ==, 6);
  g_assert_cmpfloat (g_array_index (sp, ShdSimSpike, 1).end_s, ==, 8);
  g_assert_cmpfloat (g_array_index (sp, ShdSimSpike, 1).peak_iops, ==, 900);
}

static void
test_errors (void)
{
  const double y[] = { 1, NAN };
  g_autoptr (GError) error = NULL;
  ShdSimConfig c;
  ShdSimResult *r;

  config_init (&c, 60);
  r = shd_sim_run (y, 2, &c, &error);
  g_assert_null (r);
  g_assert_error (error, SHD_SIM_ERROR, SHD_SIM_ERROR_INVALID);
  g_clear_error (&error);
  c.tiers[1].max_iops = 0;
  r = shd_sim_run (y, 1, &c, &error);
  g_assert_null (r);
  g_assert_error (error, SHD_SIM_ERROR, SHD_SIM_ERROR_INVALID);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/sim/compressed-day", test_compressed_day);
  g_test_add_func ("/sim/history-rows", test_history_rows);
  g_test_add_func ("/sim/real-day", test_real_day);
  g_test_add_func ("/sim/one-warm-a-day", test_one_warm_a_day);
  g_test_add_func ("/sim/busy-half", test_busy_half);
  g_test_add_func ("/sim/warm-unused", test_warm_unused);
  g_test_add_func ("/sim/busy-most", test_busy_most);
  g_test_add_func ("/sim/oracle", test_oracle);
  g_test_add_func ("/sim/oracle-start", test_oracle_start);
  g_test_add_func ("/sim/json", test_json);
  g_test_add_func ("/sim/spikes", test_spikes);
  g_test_add_func ("/sim/second-day", test_second_day);
  g_test_add_func ("/sim/long-rows-spike-end", test_long_rows_spike_end);
  g_test_add_func ("/sim/errors", test_errors);
  return g_test_run ();
}
