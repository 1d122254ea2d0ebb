/* Policy simulation; see sim.h. */
#include "sim.h"
#include "jsonnum.h"

#include <math.h>
#include <string.h>

G_DEFINE_QUARK (shd-sim-error-quark, shd_sim_error)

#define MIN_SHARE (1.0 / 6)     /* of its speed a copy keeps on a busy source */
#define GIB (1024.0 * 1024 * 1024)

static const char *const policy_names[SHD_SIM_N_POLICIES] = {
  [SHD_SIM_SHADOWTIER] = "shadowtier",
  [SHD_SIM_REACTIVE] = "reactive",
  [SHD_SIM_ALWAYS_CHEAP] = "always-cheap",
  [SHD_SIM_ALWAYS_FAST] = "always-fast",
  [SHD_SIM_ORACLE] = "oracle",
};

const char *
shd_sim_policy_name (ShdSimPolicy p)
{
  g_return_val_if_fail ((guint) p < SHD_SIM_N_POLICIES, NULL);
  return policy_names[p];
}

typedef enum { EV_WARM, EV_READY, EV_SWITCH, EV_RELEASE } EventKind;

typedef struct {
  double t;
  EventKind kind;
  int tier;
} Event;

/* ---- the world ---- */

typedef struct {
  const ShdSimConfig *c;
  guint n;                      /* tiers */
  double size;
  double S;                     /* seconds per row */
  int active;
  gboolean present[SHD_POLICY_MAX_TIERS];
  gboolean synced[SHD_POLICY_MAX_TIERS];
  double valid[SHD_POLICY_MAX_TIERS];
  double rate[SHD_POLICY_MAX_TIERS];        /* copy rate in the last row */
  double byte_s[SHD_POLICY_MAX_TIERS];
  GArray *events;
} World;

static double
price_per_byte_s (const ShdSimConfig *c, int tier)
{
  return c->policy.tiers[tier].cost_gib_month / GIB / (SHD_HOURS_PER_MONTH * 3600);
}

/* Tier indexes, cheapest first (the file's order among equals). */
static void
order_by_cost (const ShdSimConfig *c, int *order)
{
  guint n = c->policy.n_tiers;

  for (guint i = 0; i < n; i++)
    order[i] = i;
  for (guint i = 1; i < n; i++)
    for (guint j = i; j > 0 && c->policy.tiers[order[j]].cost_gib_month <
                               c->policy.tiers[order[j - 1]].cost_gib_month; j--) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
}

/* latency at a load: base / (1 - load / C), C such that it is the SLO at
 * max_iops; far over the SLO past C */
static double
tier_latency (const ShdSimConfig *c, int tier, double load, double *served)
{
  const ShdSimTier *t = &c->tiers[tier];
  double slo = c->policy.slo_latency_ms;
  double base = MIN (t->latency_ms, 0.9 * slo);
  double cap = t->max_iops / (1 - base / slo);

  *served = MIN (load, cap);
  if (load >= 0.99 * cap)
    return 10 * slo;
  return base / (1 - load / cap);
}

static void
event (World *w, double t, EventKind kind, int tier)
{
  Event e = { t, kind, tier };

  g_array_append_val (w->events, e);
}

/* One row at a load: copies progress, bytes are paid for. */
static void
world_row (World *w, guint r, double load)
{
  const ShdSimConfig *c = w->c;
  double share = CLAMP (1 - load / MAX (c->tiers[w->active].max_iops, 1e-9), MIN_SHARE, 1);
  double t0 = r * w->S;

  for (guint i = 0; i < w->n; i++) {
    double rate, need, dt;

    w->rate[i] = 0;
    if (!w->present[i])
      continue;
    if (w->synced[i]) {
      w->byte_s[i] += w->size * w->S;
      continue;
    }
    rate = c->tiers[i].copy_bps * share;
    w->rate[i] = rate;
    need = w->size - w->valid[i];
    if (rate > 0 && rate * w->S >= need) {
      dt = need / rate;
      w->byte_s[i] += (w->valid[i] + need / 2) * dt + w->size * (w->S - dt);
      w->valid[i] = w->size;
      w->synced[i] = TRUE;
      event (w, t0 + dt, EV_READY, i);
    } else {
      w->byte_s[i] += (w->valid[i] + rate * w->S / 2) * w->S;
      w->valid[i] += rate * w->S;
    }
  }
}

/* ---- spikes ---- */

/* Maximal runs of rows over the cheapest tier's max_iops. */
static GArray *
find_spikes (const double *load, gsize from, gsize n, double limit, double S)
{
  GArray *a = g_array_new (FALSE, FALSE, sizeof (ShdSimSpike));

  for (gsize r = from; r < n; r++) {
    ShdSimSpike s = { .prewarm_start_s = NAN, .prewarm_done_s = NAN, .switch_s = NAN,
                      .lead_s = NAN };

    if (!(load[r] > limit))
      continue;
    s.onset_s = r * S;
    s.peak_iops = load[r];
    while (r + 1 < n && load[r + 1] > limit) {
      r++;                      /* not in MAX (), which evaluates it twice */
      s.peak_iops = MAX (s.peak_iops, load[r]);
    }
    s.end_s = (r + 1) * S;
    g_array_append_val (a, s);
  }
  return a;
}

/* For each spike, from the agent's events: the switch that put the disk
 * on a tier carrying the spike's peak (the one in effect at the onset, or
 * the first after it), and the copy onto that tier that preceded it. */
static void
attribute_spikes (const ShdSimConfig *c, GArray *spikes, GArray *events, int first_active)
{
  for (guint s = 0; s < spikes->len; s++) {
    ShdSimSpike *sp = &g_array_index (spikes, ShdSimSpike, s);
    int active = first_active, tier = -1;
    double since = 0, sw = NAN;

    /* the active tier at the onset, and since when */
    for (guint e = 0; e < events->len; e++) {
      const Event *ev = &g_array_index (events, Event, e);

      if (ev->t > sp->onset_s)
        break;
      if (ev->kind == EV_SWITCH) {
        active = ev->tier;
        since = ev->t;
      }
    }
    if (c->tiers[active].max_iops >= sp->peak_iops && active != first_active) {
      tier = active;
      sw = since;
    } else {
      for (guint e = 0; e < events->len; e++) {
        const Event *ev = &g_array_index (events, Event, e);

        if (ev->t <= sp->onset_s || ev->t >= sp->end_s || ev->kind != EV_SWITCH)
          continue;
        if (c->tiers[ev->tier].max_iops > c->tiers[first_active].max_iops) {
          tier = ev->tier;
          sw = ev->t;
          break;
        }
      }
    }
    if (tier < 0)
      continue;
    sp->switch_s = sw;
    sp->lead_s = sp->onset_s - sw;
    /* the last copy onto it that began before the switch, and its end */
    for (guint e = 0; e < events->len; e++) {
      const Event *ev = &g_array_index (events, Event, e);

      if (ev->t > sw)
        break;
      if (ev->tier != tier)
        continue;
      if (ev->kind == EV_WARM) {
        sp->prewarm_start_s = ev->t;
        sp->prewarm_done_s = NAN;
      } else if (ev->kind == EV_READY) {
        sp->prewarm_done_s = ev->t;
      }
    }
  }
}

/* ---- the agents ---- */

static void
clear_row (gpointer p)
{
  g_free (((ShdSimRow *) p)->reason);
}

static gint
cmp_double (gconstpointer a, gconstpointer b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

/* The seasonal scale's bucket, or the row when forecasting is off. */
static double
shd_outlook_bucket_s_or (ShdPolicy *p, double dflt)
{
  const ShdOutlook *o = shd_policy_outlook (p);

  return o ? shd_outlook_bucket_s (o) : dflt;
}

static void
run_agent (const double *load, gsize n, const ShdSimConfig *c, gboolean forecast,
           ShdSimOutcome *out, int cheapest)
{
  ShdPolicyConfig pc = c->policy;
  g_autoptr (ShdPolicy) p = NULL;
  World w = { .c = c, .n = c->policy.n_tiers, .size = c->size_bytes, .S = c->interval_s };
  double viol = 0;

  pc.interval_s = c->interval_s;
  pc.knobs.forecast = forecast;
  pc.size_bytes = (guint64) c->size_bytes;
  pc.add_children = TRUE;
  pc.dry_run = FALSE;
  p = shd_policy_new (&pc);
  /* the history: learned as shadowd learns imported load, as buckets of
   * the seasonal scale (and the short-term forecaster warmed), and the
   * clock starts after it */
  if (c->history_rows) {
    g_autofree double *h = g_new (double, c->history_rows);
    double bucket = shd_outlook_bucket_s_or (p, c->interval_s);
    g_autoptr (GArray) in_bucket = g_array_new (FALSE, FALSE, sizeof (double));
    gint64 cur = 0;

    for (guint r = 0; r <= c->history_rows; r++) {
      gint64 b = r < c->history_rows ? (gint64) floor (r * c->interval_s / bucket) : -1;

      /* a bucket's value: the 90th percentile of its rows, as shadowd's */
      if (b != cur && in_bucket->len > 0) {
        double *v = (double *) in_bucket->data, rank;
        guint k;

        g_array_sort (in_bucket, cmp_double);
        rank = 0.9 * (in_bucket->len - 1);
        k = (guint) floor (rank);
        shd_policy_feed_bucket (p, cur, k + 1 < in_bucket->len ?
                                v[k] + (rank - k) * (v[k + 1] - v[k]) : v[k]);
        g_array_set_size (in_bucket, 0);
      }
      if (b < 0)
        break;
      cur = b;
      h[r] = MAX (load[r], 0);
      g_array_append_val (in_bucket, h[r]);
    }
    shd_policy_warm (p, h, c->history_rows);
  }
  w.events = g_array_new (FALSE, FALSE, sizeof (Event));
  w.active = cheapest;
  w.present[cheapest] = w.synced[cheapest] = TRUE;
  w.valid[cheapest] = w.size;
  if (c->trace) {
    out->trace = g_array_new (FALSE, FALSE, sizeof (ShdSimRow));
    g_array_set_clear_func (out->trace, clear_row);
  }

  for (gsize r = c->history_rows; r < n; r++) {
    double L = MAX (load[r], 0), served, lat;
    ShdPolicyInput in;
    const ShdDecision *d;

    world_row (&w, r, L);
    if (L > c->tiers[w.active].max_iops)
      viol += w.S;
    lat = tier_latency (c, w.active, L, &served);

    shd_policy_input_init (&in);
    in.t = in.wall = (r + 1) * w.S;
    in.valid = TRUE;
    in.iops = served;
    in.bps = served * 4096;
    in.latency_ms = served >= 1 ? lat : NAN;
    in.active = c->policy.tiers[w.active].child;
    in.size_bytes = (guint64) w.size;
    for (guint i = 0; i < w.n; i++) {
      ShdPolicyChild *ch;

      in.allocated[i] = w.present[i] ? w.valid[i] : 0;
      if (!w.present[i])
        continue;
      ch = &in.children[in.n_children++];
      ch->child = c->policy.tiers[i].child;
      ch->state = (int) i == w.active ? "active" : w.synced[i] ? "synced" : "syncing";
      ch->valid = TRUE;
      ch->valid_bytes = (guint64) w.valid[i];
      ch->copy_bps = w.rate[i];
      ch->iops = (int) i == w.active ? served : 0;
      ch->latency_ms = (int) i == w.active ? in.latency_ms : NAN;
    }
    d = shd_policy_step (p, &in);
    switch (d->action) {
    case SHD_ACTION_SWITCH:
      if (d->target >= 0 && w.present[d->target] &&
          (w.synced[d->target] || pc.instant_switch)) {
        w.active = d->target;
        out->switches++;
        event (&w, in.t, EV_SWITCH, d->target);
      }
      break;
    case SHD_ACTION_PREWARM:
      if (d->target >= 0 && !w.present[d->target]) {
        w.present[d->target] = TRUE;
        w.synced[d->target] = FALSE;
        w.valid[d->target] = 0;
        out->prewarms++;
        event (&w, in.t, EV_WARM, d->target);
      }
      break;
    case SHD_ACTION_RELEASE:
      if (d->target >= 0 && d->target != w.active && w.present[d->target]) {
        w.present[d->target] = w.synced[d->target] = FALSE;
        w.valid[d->target] = 0;
        out->releases++;
        event (&w, in.t, EV_RELEASE, d->target);
      }
      break;
    case SHD_ACTION_NONE:
      break;
    }
    if (out->trace) {
      ShdSimRow row = { .t = in.t, .active = w.active,
                        .decision = shd_decision_kind_name (d->kind),
                        .reason = g_strdup (d->reason) };

      for (guint i = 0; i < w.n; i++)
        row.allocated[i] = w.present[i] ? w.valid[i] : 0;
      g_array_append_val (out->trace, row);
    }
  }
  out->violation_s = viol;
  for (guint i = 0; i < w.n; i++) {
    out->gib_hours[i] = w.byte_s[i] / GIB / 3600;
    out->tier_cost[i] = w.byte_s[i] * price_per_byte_s (c, i);
    out->cost += out->tier_cost[i];
  }
  attribute_spikes (c, out->spikes, w.events, cheapest);
  g_array_unref (w.events);
}

/* ---- one tier only ---- */

static void
run_fixed (const double *load, gsize n, const ShdSimConfig *c, int tier, ShdSimOutcome *out)
{
  gsize rows = n - c->history_rows;

  for (gsize r = c->history_rows; r < n; r++)
    if (load[r] > c->tiers[tier].max_iops)
      out->violation_s += c->interval_s;
  out->gib_hours[tier] = c->size_bytes * rows * c->interval_s / GIB / 3600;
  out->tier_cost[tier] = c->size_bytes * rows * c->interval_s * price_per_byte_s (c, tier);
  out->cost = out->tier_cost[tier];
}

/* ---- the oracle ----
 *
 * Dynamic programming over rows.  A state is the set of tiers holding a
 * full copy during a row and the active one among them.  Between rows the
 * set may grow (each new copy takes size / copy rate before the row, paid
 * while it grows: half the disk over that time) and shrink (a release is
 * free); before the first row it is the cheapest tier alone, as the
 * agents' (there was no row before it to copy in).  A row costs every copy in the set for the whole row.  The
 * objective is violations first, then cost. */

#define MAX_STATES (SHD_POLICY_MAX_TIERS << SHD_POLICY_MAX_TIERS)

typedef struct {
  double viol;
  double cost;
  int prev;                     /* state index of the previous row; -1 */
} Cell;

static void
run_oracle (const double *all, gsize n_all, const ShdSimConfig *c, ShdSimOutcome *out,
            int cheapest)
{
  const double *load = all + c->history_rows;
  gsize n = n_all - c->history_rows;
  double t_off = c->history_rows * c->interval_s;
  guint nt = c->policy.n_tiers, ns = nt << nt;
  double S = c->interval_s, size = c->size_bytes;
  g_autofree Cell *dp = g_new (Cell, (n + 1) * (gsize) ns);
  double row_cost[MAX_STATES], copy_cost[SHD_POLICY_MAX_TIERS];
  int best = -1;

  /* state = set << 3 | active would limit tiers; index = set * nt + active */
  for (guint i = 0; i < nt; i++)
    copy_cost[i] = c->tiers[i].copy_bps > 0 ?
                   size / 2 * (size / c->tiers[i].copy_bps) * price_per_byte_s (c, i) : 0;
  for (guint st = 0; st < ns; st++) {
    guint set = st / nt;

    row_cost[st] = 0;
    for (guint i = 0; i < nt; i++)
      if (set & (1u << i))
        row_cost[st] += size * S * price_per_byte_s (c, i);
  }
  for (guint st = 0; st < ns; st++)
    dp[st] = (Cell) { INFINITY, INFINITY, -1 };
  /* before the first row: the cheapest tier alone */
  dp[(1u << cheapest) * nt + cheapest] = (Cell) { 0, 0, -1 };

  for (gsize r = 0; r < n; r++) {
    Cell *from = dp + r * ns, *to = dp + (r + 1) * ns;

    for (guint st = 0; st < ns; st++)
      to[st] = (Cell) { INFINITY, INFINITY, -1 };
    for (guint st = 0; st < ns; st++) {
      guint set = st / nt, a = st % nt;
      double v;

      if (!(set & (1u << a)))
        continue;
      v = load[r] > c->tiers[a].max_iops ? S : 0;
      for (guint ps = 0; ps < ns; ps++) {
        guint pset = ps / nt;
        double cost;

        if (!isfinite (from[ps].cost))
          continue;
        /* a copy is made during the row before the one it serves: none
         * is ready for the first row, whatever the future holds */
        if (r == 0 && set != pset)
          continue;
        cost = from[ps].cost + row_cost[st];
        for (guint i = 0; i < nt; i++)
          if ((set & (1u << i)) && !(pset & (1u << i)))
            cost += copy_cost[i];
        if (from[ps].viol + v < to[st].viol ||
            (from[ps].viol + v == to[st].viol && cost < to[st].cost))
          to[st] = (Cell) { from[ps].viol + v, cost, (int) ps };
      }
    }
  }
  for (guint st = 0; st < ns; st++) {
    const Cell *cell = dp + n * ns + st;

    if (isfinite (cell->cost) && (best < 0 || cell->viol < dp[n * ns + best].viol ||
                                  (cell->viol == dp[n * ns + best].viol &&
                                   cell->cost < dp[n * ns + best].cost)))
      best = st;
  }
  if (best < 0)
    return;
  out->violation_s = dp[n * ns + best].viol;
  out->cost = dp[n * ns + best].cost;
  /* the schedule, for the tiers' GiB-hours and costs, switches and spikes */
  {
    g_autofree int *path = g_new (int, n + 1);
    g_autoptr (GArray) events = g_array_new (FALSE, FALSE, sizeof (Event));
    int st = best;

    for (gsize r = n + 1; r-- > 0;) {
      path[r] = st;
      st = dp[r * ns + st].prev;
    }
    path[0] = (1u << cheapest) * nt + cheapest;
    for (gsize r = 1; r <= n; r++) {
      guint set = path[r] / nt, pset = path[r - 1] / nt, a = path[r] % nt;
      double t = t_off + (r - 1) * S;

      for (guint i = 0; i < nt; i++) {
        if (set & (1u << i)) {
          out->gib_hours[i] += size * S / GIB / 3600;
          out->tier_cost[i] += size * S * price_per_byte_s (c, i);
        }
        if ((set & (1u << i)) && !(pset & (1u << i))) {
          Event w = { t - size / MAX (c->tiers[i].copy_bps, 1e-9), EV_WARM, i };
          Event rd = { t, EV_READY, i };

          out->gib_hours[i] += size / 2 * (size / MAX (c->tiers[i].copy_bps, 1e-9)) / GIB / 3600;
          out->tier_cost[i] += copy_cost[i];
          out->prewarms++;
          g_array_append_val (events, w);
          g_array_append_val (events, rd);
        }
        if (!(set & (1u << i)) && (pset & (1u << i)))
          out->releases++;
      }
      if (a != (guint) (path[r - 1] % nt)) {
        Event e = { t, EV_SWITCH, (int) a };

        out->switches++;
        g_array_append_val (events, e);
      }
    }
    attribute_spikes (c, out->spikes, events, cheapest);
  }
}

ShdSimResult *
shd_sim_run (const double *load, gsize n, const ShdSimConfig *c, GError **error)
{
  g_autoptr (ShdSimResult) r = NULL;
  int order[SHD_POLICY_MAX_TIERS];
  guint nt = c->policy.n_tiers;

  if (n <= c->history_rows || !(c->interval_s > 0) || !(c->size_bytes > 0) || nt < 1 ||
      nt > SHD_POLICY_MAX_TIERS) {
    g_set_error (error, SHD_SIM_ERROR, SHD_SIM_ERROR_INVALID,
                 "a simulation needs rows, an interval, the disk's size and 1 to %d tiers",
                 SHD_POLICY_MAX_TIERS);
    return NULL;
  }
  for (guint i = 0; i < nt; i++)
    if (!(c->tiers[i].max_iops > 0) || !(c->tiers[i].copy_bps > 0)) {
      g_set_error (error, SHD_SIM_ERROR, SHD_SIM_ERROR_INVALID,
                   "tier %s needs max-iops and copy-mib-s", c->policy.tiers[i].tier);
      return NULL;
    }
  for (gsize i = 0; i < n; i++)
    if (!isfinite (load[i])) {
      g_set_error (error, SHD_SIM_ERROR, SHD_SIM_ERROR_INVALID, "row %zu is not a number", i);
      return NULL;
    }
  order_by_cost (c, order);
  r = g_new0 (ShdSimResult, 1);
  r->interval_s = c->interval_s;
  r->rows = n - c->history_rows;
  r->n_tiers = nt;
  r->size_bytes = c->size_bytes;
  for (guint i = 0; i < nt; i++)
    r->tiers[i] = g_strdup (c->policy.tiers[i].tier);
  for (guint p = 0; p < SHD_SIM_N_POLICIES; p++) {
    r->policies[p].name = policy_names[p];
    r->policies[p].spikes = find_spikes (load, c->history_rows, n, c->tiers[order[0]].max_iops,
                                         c->interval_s);
  }
  run_agent (load, n, c, TRUE, &r->policies[SHD_SIM_SHADOWTIER], order[0]);
  run_agent (load, n, c, FALSE, &r->policies[SHD_SIM_REACTIVE], order[0]);
  run_fixed (load, n, c, order[0], &r->policies[SHD_SIM_ALWAYS_CHEAP]);
  run_fixed (load, n, c, order[nt - 1], &r->policies[SHD_SIM_ALWAYS_FAST]);
  run_oracle (load, n, c, &r->policies[SHD_SIM_ORACLE], order[0]);
  return g_steal_pointer (&r);
}

void
shd_sim_result_free (ShdSimResult *r)
{
  if (r == NULL)
    return;
  for (guint i = 0; i < r->n_tiers; i++)
    g_free (r->tiers[i]);
  for (guint p = 0; p < SHD_SIM_N_POLICIES; p++) {
    g_clear_pointer (&r->policies[p].spikes, g_array_unref);
    g_clear_pointer (&r->policies[p].trace, g_array_unref);
  }
  g_free (r);
}

JsonNode *
shd_sim_to_json (const ShdSimResult *r)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  shd_json_builder_add_num (b, "interval-s", r->interval_s);
  json_builder_set_member_name (b, "rows");
  json_builder_add_int_value (b, r->rows);
  json_builder_set_member_name (b, "tiers");
  json_builder_begin_array (b);
  for (guint i = 0; i < r->n_tiers; i++)
    json_builder_add_string_value (b, r->tiers[i]);
  json_builder_end_array (b);
  shd_json_builder_add_num (b, "size-gib", r->size_bytes / GIB);
  json_builder_set_member_name (b, "policies");
  json_builder_begin_array (b);
  for (guint p = 0; p < SHD_SIM_N_POLICIES; p++) {
    const ShdSimOutcome *o = &r->policies[p];

    json_builder_begin_object (b);
    json_builder_set_member_name (b, "name");
    json_builder_add_string_value (b, o->name);
    shd_json_builder_add_num (b, "violation-s", o->violation_s);
    shd_json_builder_add_num (b, "cost", o->cost);
    json_builder_set_member_name (b, "gib-hours");
    json_builder_begin_object (b);
    for (guint i = 0; i < r->n_tiers; i++)
      shd_json_builder_add_num (b, r->tiers[i], o->gib_hours[i]);
    json_builder_end_object (b);
    json_builder_set_member_name (b, "cost-by-tier");
    json_builder_begin_object (b);
    for (guint i = 0; i < r->n_tiers; i++)
      shd_json_builder_add_num (b, r->tiers[i], o->tier_cost[i]);
    json_builder_end_object (b);
    json_builder_set_member_name (b, "switches");
    json_builder_add_int_value (b, o->switches);
    json_builder_set_member_name (b, "prewarms");
    json_builder_add_int_value (b, o->prewarms);
    json_builder_set_member_name (b, "releases");
    json_builder_add_int_value (b, o->releases);
    json_builder_set_member_name (b, "spikes");
    json_builder_begin_array (b);
    for (guint s = 0; s < o->spikes->len; s++) {
      const ShdSimSpike *sp = &g_array_index (o->spikes, ShdSimSpike, s);

      json_builder_begin_object (b);
      shd_json_builder_add_num (b, "onset-s", sp->onset_s);
      shd_json_builder_add_num (b, "end-s", sp->end_s);
      shd_json_builder_add_num (b, "peak-iops", sp->peak_iops);
      shd_json_builder_add_num (b, "prewarm-start-s", sp->prewarm_start_s);
      shd_json_builder_add_num (b, "prewarm-done-s", sp->prewarm_done_s);
      shd_json_builder_add_num (b, "switch-s", sp->switch_s);
      shd_json_builder_add_num (b, "lead-s", sp->lead_s);
      json_builder_end_object (b);
    }
    json_builder_end_array (b);
    if (o->trace) {
      json_builder_set_member_name (b, "trace");
      json_builder_begin_array (b);
      for (guint i = 0; i < o->trace->len; i++) {
        const ShdSimRow *row = &g_array_index (o->trace, ShdSimRow, i);

        json_builder_begin_object (b);
        shd_json_builder_add_num (b, "t", row->t);
        json_builder_set_member_name (b, "active");
        json_builder_add_string_value (b, r->tiers[row->active]);
        json_builder_set_member_name (b, "decision");
        json_builder_add_string_value (b, row->decision);
        json_builder_set_member_name (b, "reason");
        json_builder_add_string_value (b, row->reason);
        json_builder_set_member_name (b, "allocated-bytes");
        json_builder_begin_object (b);
        for (guint t = 0; t < r->n_tiers; t++)
          shd_json_builder_add_num (b, r->tiers[t], row->allocated[t]);
        json_builder_end_object (b);
        json_builder_end_object (b);
      }
      json_builder_end_array (b);
    }
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  return json_builder_get_root (b);
}
