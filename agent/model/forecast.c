/* The model selector; see forecast.h.
 *
 * Every model of the pool forecasts `horizon` steps ahead after each value
 * and is charged the absolute error when that value comes; a model that
 * could not forecast at that origin is charged naive's error, so every
 * score covers the same origins.  Two exponentially weighted means of
 * these errors are kept per model: a long one (score_window) that ranks the
 * models, and a recent one (short_window) that vetoes a model doing worse
 * than naive right now.  A model replaces naive only when its long score
 * is `margin` below naive's and its recent one not above naive's: on
 * the development traces a plain rolling window picked whatever had been
 * lucky lately and lost to naive by up to 24%. */
#include "forecast.h"
#include "model-private.h"
#include "season.h"
#include "spike.h"

#include <math.h>
#include <string.h>

#define MIN_SCORED 16           /* errors before a model may be chosen */
#define SKILL_CALENDAR 0.97     /* a calendar season must beat no season by 3% */
#define SKILL_FOUND 0.80       /* a season found in the data, by 20% */
#define SKILL_DROP 1.10         /* a season in use is dropped above this: clearly worse */
/* History kept beyond the profile's cycles: a season's test scores the
 * last two thirds of it, four cycles with the profile's three, so one odd
 * day (a spike that did not come) is outvoted rather than decisive */
#define EXTRA_CYCLES 3

static const char *const kind_names[SHD_N_MODELS] = {
  [SHD_MODEL_NAIVE] = "naive",
  [SHD_MODEL_SNAIVE] = "snaive",
  [SHD_MODEL_EWMA] = "ewma",
  [SHD_MODEL_HOLT] = "holt",
  [SHD_MODEL_HW] = "hw",
  [SHD_MODEL_AR] = "ar",
  [SHD_MODEL_LEVEL] = "level",
  [SHD_MODEL_PROFILE] = "profile",
  [SHD_MODEL_MEDIAN] = "median",
};

/* The models the median combines: the non-seasonal trio, and the seasonal
 * pair when a season is in use. */
static const ShdModelKind median_members[] = {
  SHD_MODEL_NAIVE, SHD_MODEL_EWMA, SHD_MODEL_LEVEL, SHD_MODEL_PROFILE, SHD_MODEL_HW,
};

const char *
shd_model_kind_name (ShdModelKind k)
{
  g_return_val_if_fail (k < SHD_N_MODELS, NULL);
  return kind_names[k];
}

void
shd_forecast_config_init (ShdForecastConfig *c)
{
  *c = (ShdForecastConfig) {
    .period = 0,
    .min_period = 4,
    .max_period = 96,
    .min_acf = 0.3,
    .max_season = 4096,
    .horizon = 1,
    .score_window = 100,
    .short_window = 10,
    .margin = 0.03,
    .full_skill = 0.3,
    .level = 0.95,
    .pool = (1u << SHD_MODEL_NAIVE) | (1u << SHD_MODEL_EWMA) | (1u << SHD_MODEL_HW) |
            (1u << SHD_MODEL_LEVEL) | (1u << SHD_MODEL_PROFILE) | (1u << SHD_MODEL_MEDIAN),
    .tune = TRUE,
    .ewma_alpha = 0.3,
    .holt_alpha = 0.3, .holt_beta = 0.05, .holt_phi = 0.9,
    .hw_alpha = 0.2, .hw_beta = 0.01, .hw_gamma = 0.3, .hw_phi = 0.9,
    .ar_order = 4, .ar_window = 96,
    .profile_cycles = 3, .level_window = 24, .profile_fit = 96,
  };
}

void
shd_forecast_config_set_calendar (ShdForecastConfig *c, double interval_s,
                                  const double *seasons_s)
{
  guint n = 0;

  g_return_if_fail (interval_s > 0);
  memset (c->calendar, 0, sizeof c->calendar);
  for (guint i = 0; seasons_s && seasons_s[i] > 0 && n < SHD_MAX_SEASONS - 1; i++) {
    double p = round (seasons_s[i] / interval_s);

    if (p >= 4 && p <= c->max_season)
      c->calendar[n++] = (guint) p;
  }
}

typedef struct {
  ShdModel *model;              /* NULL: not running, or the median */
  ShdRing pending;              /* forecasts horizon steps ahead, oldest first; NAN: none */
  double L, Ln;                 /* decayed sums of absolute errors, long memory */
  double S, Sn;                 /* the same, recent */
  guint64 scored;
} Slot;

struct _ShdForecaster {
  ShdForecastConfig c;
  double dl, ds;                /* decays of the long and the recent scores */
  Slot slot[SHD_N_MODELS];
  double scale, scale_n;        /* decayed mean |y_t - y_{t-1}|: naive's in-sample error */
  ShdRing history;              /* recent values: season tests and catching up */
  guint cand[SHD_MAX_SEASONS];  /* candidate seasons, 0-terminated */
  guint seasons[SHD_MAX_SEASONS]; /* in use, shortest first */
  guint n_seasons;
  guint64 n;
  double last;
  ShdModelKind best;
  double weight;                /* of the best model against naive, in (0, 1] */
  /* the selector's own forecasts horizon steps ahead and their errors on
   * log(1 + y): the interval is their quantile at the level */
  ShdRing own_pending;
  ShdRing own_err;
  double own_q;                 /* the quantile; NAN: compute again */
  double *scratch;
};

static void
slot_start (ShdForecaster *f, ShdModelKind k, ShdModel *m)
{
  Slot *s = &f->slot[k];

  s->model = m;
  if (s->pending.v == NULL) {
    shd_ring_init (&s->pending, f->c.horizon);
    for (guint i = 0; i < f->c.horizon; i++)
      shd_ring_push (&s->pending, NAN);
  }
}

static void
slot_stop (Slot *s)
{
  g_clear_pointer (&s->model, shd_model_free);
}

static gboolean
running (const ShdForecaster *f, ShdModelKind k)
{
  return k == SHD_MODEL_MEDIAN || f->slot[k].model != NULL;
}

gboolean
shd_forecaster_point (const ShdForecaster *f, ShdModelKind k, guint h, double *out)
{
  double v[G_N_ELEMENTS (median_members)];
  guint n = 0;

  g_return_val_if_fail (k < SHD_N_MODELS && h >= 1, FALSE);
  if (k != SHD_MODEL_MEDIAN)
    return f->slot[k].model && shd_model_point (f->slot[k].model, h, out);
  for (guint i = 0; i < G_N_ELEMENTS (median_members); i++)
    if (f->slot[median_members[i]].model &&
        shd_model_point (f->slot[median_members[i]].model, h, &v[n]))
      n++;
  if (n == 0)
    return FALSE;
  *out = shd_median_inplace (v, n);
  return TRUE;
}

/* The seasonal models on the seasons in use: the profile on the longest
 * (a week's profile also holds the day), Holt-Winters and seasonal naive
 * on the shortest (Holt-Winters learns a long season slowly).  They catch
 * up on the history so they start warm. */
static void
start_seasonal_models (ShdForecaster *f)
{
  const ShdForecastConfig *c = &f->c;
  guint shortest, longest;
  g_autofree double *buf = NULL;
  ShdModelKind kinds[] = { SHD_MODEL_SNAIVE, SHD_MODEL_HW, SHD_MODEL_PROFILE };

  for (guint i = 0; i < G_N_ELEMENTS (kinds); i++)
    slot_stop (&f->slot[kinds[i]]);
  if (f->n_seasons == 0)
    return;
  shortest = f->seasons[0];
  longest = f->seasons[f->n_seasons - 1];
  slot_start (f, SHD_MODEL_SNAIVE, shd_model_new_snaive (shortest));
  slot_start (f, SHD_MODEL_HW, c->tune ? shd_model_new_hw_tuned (shortest, c->hw_phi)
                               : shd_model_new_hw (shortest, c->hw_alpha, c->hw_beta,
                                                   c->hw_gamma, c->hw_phi));
  slot_start (f, SHD_MODEL_PROFILE, shd_model_new_profile (longest, c->profile_cycles,
                                                           c->level_window, c->profile_fit));
  buf = g_new (double, MAX (f->history.len, 1u));
  shd_ring_copy (&f->history, buf);
  for (guint i = 0; i < f->history.len; i++)
    for (guint j = 0; j < G_N_ELEMENTS (kinds); j++)
      shd_model_update (f->slot[kinds[j]].model, buf[i]);
}

ShdForecaster *
shd_forecaster_new (const ShdForecastConfig *c)
{
  ShdForecaster *f;
  guint hist = 0;

  g_return_val_if_fail (c->horizon >= 1, NULL);
  g_return_val_if_fail (c->score_window >= 4 && c->short_window >= 1, NULL);
  g_return_val_if_fail (c->level > 0 && c->level < 1, NULL);
  g_return_val_if_fail (c->period != 1, NULL);
  f = g_new0 (ShdForecaster, 1);
  f->c = *c;
  f->dl = 1 - 1.0 / c->score_window;
  f->ds = 1 - 1.0 / c->short_window;
  f->best = SHD_MODEL_NAIVE;
  f->scratch = g_new (double, MAX ((guint) G_N_ELEMENTS (median_members), c->score_window));
  shd_ring_init (&f->own_pending, c->horizon);
  for (guint i = 0; i < c->horizon; i++)
    shd_ring_push (&f->own_pending, NAN);
  shd_ring_init (&f->own_err, c->score_window);
  f->own_q = NAN;
  slot_start (f, SHD_MODEL_NAIVE, shd_model_new_naive ());
  slot_start (f, SHD_MODEL_EWMA, c->tune ? shd_model_new_ewma_tuned ()
                                         : shd_model_new_ewma (c->ewma_alpha));
  slot_start (f, SHD_MODEL_HOLT, c->tune ? shd_model_new_holt_tuned (c->holt_phi)
                                         : shd_model_new_holt (c->holt_alpha, c->holt_beta,
                                                               c->holt_phi));
  slot_start (f, SHD_MODEL_AR, shd_model_new_ar (c->ar_order, c->ar_window));
  slot_start (f, SHD_MODEL_LEVEL, shd_model_new_profile (0, c->profile_cycles,
                                                         c->level_window, c->profile_fit));
  slot_start (f, SHD_MODEL_MEDIAN, NULL);
  for (guint k = 0; k < SHD_N_MODELS; k++)
    if (f->slot[k].model == NULL && k != SHD_MODEL_SNAIVE && k != SHD_MODEL_HW &&
        k != SHD_MODEL_PROFILE && k != SHD_MODEL_MEDIAN)
      g_error ("invalid forecaster configuration for %s", kind_names[k]);
  /* the seasonal slots score from the start (as naive until they run) */
  slot_start (f, SHD_MODEL_SNAIVE, NULL);
  slot_start (f, SHD_MODEL_HW, NULL);
  slot_start (f, SHD_MODEL_PROFILE, NULL);

  /* candidates, and enough history to test the longest and catch up */
  if (c->period >= 2) {
    f->seasons[0] = c->period;
    f->n_seasons = 1;
    hist = c->period * (c->profile_cycles + EXTRA_CYCLES);
  } else if (c->calendar[0]) {
    for (guint i = 0; i < SHD_MAX_SEASONS && c->calendar[i]; i++) {
      f->cand[i] = c->calendar[i];
      hist = MAX (hist, c->calendar[i] * (c->profile_cycles + EXTRA_CYCLES));
    }
  } else {
    hist = 4 * MAX (c->max_period, 4u);
  }
  hist = MIN (MAX (hist, 64u), (c->profile_cycles + EXTRA_CYCLES) * MAX (c->max_season, 64u));
  shd_ring_init (&f->history, hist);
  start_seasonal_models (f);
  return f;
}

void
shd_forecaster_free (ShdForecaster *f)
{
  if (f == NULL)
    return;
  for (guint k = 0; k < SHD_N_MODELS; k++) {
    slot_stop (&f->slot[k]);
    shd_ring_clear (&f->slot[k].pending);
  }
  shd_ring_clear (&f->history);
  shd_ring_clear (&f->own_pending);
  shd_ring_clear (&f->own_err);
  g_free (f->scratch);
  g_free (f);
}

double
shd_forecaster_mase (const ShdForecaster *f, ShdModelKind k)
{
  const Slot *s;
  double scale;

  g_return_val_if_fail (k < SHD_N_MODELS, NAN);
  s = &f->slot[k];
  if (s->scored < MIN_SCORED || !(s->Ln > 0) || !(f->scale_n > 0))
    return NAN;
  scale = f->scale / f->scale_n;
  if (!(scale > 0))
    return NAN;
  return s->L / s->Ln / scale;
}

static void
choose_best (ShdForecaster *f)
{
  const Slot *nv = &f->slot[SHD_MODEL_NAIVE];
  double bound, naive_recent;
  ShdModelKind best = SHD_MODEL_NAIVE;

  if (nv->scored < MIN_SCORED || !(nv->Ln > 0)) {
    f->best = SHD_MODEL_NAIVE;
    return;
  }
  bound = nv->L / nv->Ln * (1 - f->c.margin);
  naive_recent = nv->S / nv->Sn;
  for (guint k = 0; k < SHD_N_MODELS; k++) {
    const Slot *s = &f->slot[k];
    double l;

    if (k == SHD_MODEL_NAIVE || !(f->c.pool & (1u << k)) || !running (f, k) ||
        s->scored < MIN_SCORED)
      continue;
    l = s->L / s->Ln;
    /* better over the long run, and not worse than naive lately */
    if (l < bound && s->S / s->Sn <= naive_recent) {
      bound = l;
      best = k;
    }
  }
  f->best = best;
  /* shrinkage towards naive: a model earns the whole forecast with an
   * advantage of full_skill or more, a share of it below */
  f->weight = 1;
  if (best != SHD_MODEL_NAIVE && f->c.full_skill > 0)
    f->weight = CLAMP ((1 - bound / (nv->L / nv->Ln)) / f->c.full_skill, 0, 1);
}

/* Which candidate seasons hold up out of sample; the seasonal models are
 * restarted when the answer changes.  Runs every quarter of the shortest
 * candidate (at least 8 values). */
static void
maybe_update_seasons (ShdForecaster *f)
{
  const ShdForecastConfig *c = &f->c;
  guint cand[SHD_MAX_SEASONS] = { 0 }, nc = 0, every, accepted[SHD_MAX_SEASONS], na = 0;
  gboolean calendar = c->calendar[0] != 0;
  g_autofree double *buf = NULL;

  if (c->period >= 2)
    return;
  every = calendar ? MAX (c->calendar[0] / 8, 4u) : MAX (c->max_period / 4, 8u);
  if (f->n % every != 0 || f->history.len < 2 * MAX (c->min_period, 4u) + c->horizon)
    return;
  buf = g_new (double, f->history.len);
  shd_ring_copy (&f->history, buf);
  if (calendar) {
    for (guint i = 0; i < SHD_MAX_SEASONS && c->calendar[i]; i++)
      cand[nc++] = c->calendar[i];
  } else {
    nc = shd_season_candidates (buf, f->history.len, MAX (c->min_period, 4u),
                                MIN (c->max_period, c->max_season), c->min_acf,
                                cand, SHD_MAX_SEASONS - 1);
  }
  for (guint i = 0; i < nc; i++) {
    gboolean in_use = FALSE;
    double skill;

    for (guint j = 0; j < f->n_seasons; j++)
      in_use |= f->seasons[j] == cand[i];
    /* a calendar period is a strong prior: half a period after the first
     * says whether it holds; a period found in the data needs a whole one */
    /* tested hours ahead, where a season matters (an eighth of it, at
     * least the scoring horizon): one step ahead persistence is hard to
     * beat even on a disk busy every afternoon */
    skill = shd_season_skill (buf, f->history.len, cand[i],
                              MAX (c->horizon, calendar ? cand[i] / 8 : 1),
                              c->profile_cycles, c->level_window, c->profile_fit,
                              calendar ? MAX (cand[i] / 4, 12u) : MAX (cand[i], 32u));
    if (!isfinite (skill)) {
      if (in_use)               /* too little history to say: keep it */
        accepted[na++] = cand[i];
      continue;
    }
    if (skill < (calendar ? SKILL_CALENDAR : SKILL_FOUND) || (in_use && skill < SKILL_DROP))
      accepted[na++] = cand[i];
  }
  /* a season found in the data is kept while no other is found: the
   * peaks move as history slides */
  if (!calendar && na == 0)
    return;
  /* shortest first */
  for (guint i = 1; i < na; i++)
    for (guint j = i; j > 0 && accepted[j] < accepted[j - 1]; j--) {
      guint t = accepted[j];
      accepted[j] = accepted[j - 1];
      accepted[j - 1] = t;
    }
  if (!calendar && na > 1)
    na = 1;                     /* the data's seasons: the shortest that holds */
  if (na == f->n_seasons && memcmp (accepted, f->seasons, na * sizeof *accepted) == 0)
    return;
  memcpy (f->seasons, accepted, na * sizeof *accepted);
  f->n_seasons = na;
  g_debug ("seasons: %u in use, longest %u samples", na, na ? accepted[na - 1] : 0);
  start_seasonal_models (f);
}

void
shd_forecaster_update (ShdForecaster *f, double y)
{
  double naive_due;

  g_return_if_fail (isfinite (y));
  if (f->n > 0) {
    f->scale = f->dl * f->scale + fabs (y - f->last);
    f->scale_n = f->dl * f->scale_n + 1;
  }
  /* the forecasts made `horizon` steps ago, for now: naive's stands in for
   * a model that had none */
  naive_due = shd_ring_get (&f->slot[SHD_MODEL_NAIVE].pending, 0);
  for (guint k = 0; k < SHD_N_MODELS; k++) {
    Slot *s = &f->slot[k];
    double p = shd_ring_get (&s->pending, 0), e;

    if (!isfinite (p))
      p = naive_due;
    if (!isfinite (p))
      continue;
    e = fabs (y - p);
    s->L = f->dl * s->L + e;
    s->Ln = f->dl * s->Ln + 1;
    s->S = f->ds * s->S + e;
    s->Sn = f->ds * s->Sn + 1;
    s->scored++;
  }
  {
    double p = shd_ring_get (&f->own_pending, 0);

    if (isfinite (p)) {
      shd_ring_push (&f->own_err, fabs (log1p (MAX (y, 0)) - log1p (MAX (p, 0))));
      f->own_q = NAN;
    }
  }
  for (guint k = 0; k < SHD_N_MODELS; k++)
    if (f->slot[k].model)
      shd_model_update (f->slot[k].model, y);
  shd_ring_push (&f->history, y);
  f->last = y;
  f->n++;
  maybe_update_seasons (f);
  for (guint k = 0; k < SHD_N_MODELS; k++) {
    double p;

    if (!shd_forecaster_point (f, k, f->c.horizon, &p))
      p = NAN;
    shd_ring_push (&f->slot[k].pending, p);
  }
  choose_best (f);
  {
    ShdPrediction p;

    shd_ring_push (&f->own_pending, shd_forecaster_predict (f, f->c.horizon, &p) ? p.point : NAN);
  }
}

gboolean
shd_forecaster_past (const ShdForecaster *f, guint back, double *out)
{
  if (back >= f->history.len)
    return FALSE;
  *out = shd_ring_back (&f->history, back);
  return TRUE;
}

guint64
shd_forecaster_count (const ShdForecaster *f)
{
  return f->n;
}

guint
shd_forecaster_period (const ShdForecaster *f)
{
  return f->n_seasons ? f->seasons[f->n_seasons - 1] : 0;
}

guint
shd_forecaster_seasons (const ShdForecaster *f, guint *out, guint max)
{
  guint n = MIN (max, f->n_seasons);

  memcpy (out, f->seasons, n * sizeof *out);
  return n;
}

ShdModel *
shd_forecaster_model (const ShdForecaster *f, ShdModelKind k)
{
  g_return_val_if_fail (k < SHD_N_MODELS, NULL);
  return f->slot[k].model;
}

ShdModelKind
shd_forecaster_best (const ShdForecaster *f)
{
  return f->best;
}

gboolean
shd_forecaster_predict (const ShdForecaster *f, guint h, ShdPrediction *out)
{
  double half;
  guint H = f->c.horizon;

  g_return_val_if_fail (h >= 1, FALSE);
  if (!shd_forecaster_point (f, f->best, h, &out->point))
    return FALSE;
  if (f->weight < 1) {
    double nv;

    if (shd_forecaster_point (f, SHD_MODEL_NAIVE, h, &nv))
      out->point = nv + f->weight * (out->point - nv);
  }
  out->has_interval = f->own_err.len >= MIN_SCORED;
  if (!out->has_interval) {
    out->lo = out->hi = out->point;
    return TRUE;
  }
  /* the quantile of the selector's own errors at the scoring horizon, on
   * log(1 + y): load is positive and its errors scale with it, so the
   * interval is a factor around the forecast (an additive width from a
   * few bursts put every quiet hour over a tier's limit).  Narrower
   * closer in; further out they stop growing after a few steps (a
   * profile, a level or a mean bounds them). */
  if (!isfinite (f->own_q)) {
    guint n = f->own_err.len, k;

    shd_ring_copy (&f->own_err, f->scratch);
    k = MIN ((guint) floor (f->c.level * n), n - 1);
    /* the k-th smallest: a median of the lower part is not it, so sort */
    for (guint a = 1; a < n; a++)
      for (guint b = a; b > 0 && f->scratch[b] < f->scratch[b - 1]; b--) {
        double t = f->scratch[b];
        f->scratch[b] = f->scratch[b - 1];
        f->scratch[b - 1] = t;
      }
    ((ShdForecaster *) f)->own_q = f->scratch[k];
  }
  half = f->own_q * sqrt ((double) MIN (h, MAX (H, 4u)) / H);
  out->lo = expm1 (log1p (MAX (out->point, 0)) - half);
  out->hi = expm1 (log1p (MAX (out->point, 0)) + half);
  return TRUE;
}
