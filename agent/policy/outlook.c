/* The seasonal scale of a disk's forecast; see outlook.h. */
#include "outlook.h"

#include <math.h>
#include <stdlib.h>

#define MAX_SAMPLES 4096        /* kept per bucket for its quantile */
#define MAX_LOOKAHEAD 4096      /* buckets */
#define HI_FACTOR 4.0           /* envelope(): how far an upper bound may exceed it */
#define ENVELOPE_SPAN 8         /* its phases: a season / this, either side */
#define ENVELOPE_SEASONS 3      /* its seasons, the last ones */

struct _ShdOutlook {
  double bucket_s;
  guint lookahead;              /* buckets */
  ShdForecastConfig fc_config;
  ShdForecaster *fc;
  guint max_gap;                /* buckets filled after a gap; beyond, start afresh */
  gint64 last;                  /* the last bucket learned; -1: none */
  gint64 cur;                   /* the bucket samples are gathered for; -1: none */
  double *samples;
  guint n_samples, cap_samples;
  guint64 seen;                 /* samples offered to the current bucket */
  guint64 count;
  /* the forecast for the lookahead, by bucket after the last learned one;
   * computed again after each bucket learned */
  double *fc_point, *fc_hi;
  double *fc_profile;           /* the profile's median of recent days; NAN */
  guint fc_len;                 /* buckets in the cache; 0: stale */
};

ShdOutlook *
shd_outlook_new (double interval_s, double bucket_s, double lookahead_s, double level,
                 const double *seasons_s)
{
  ShdOutlook *o;
  double per;
  guint day;

  g_return_val_if_fail (interval_s > 0 && bucket_s > 0 && lookahead_s >= 0, NULL);
  o = g_new0 (ShdOutlook, 1);
  per = ceil (bucket_s / interval_s - 1e-9);
  o->bucket_s = MAX (per, 1) * interval_s;
  o->lookahead = (guint) CLAMP (ceil (lookahead_s / o->bucket_s), 1, MAX_LOOKAHEAD);
  o->cap_samples = (guint) CLAMP (per + 1, 1, MAX_SAMPLES);
  o->samples = g_new (double, o->cap_samples);
  o->fc_point = g_new (double, o->lookahead + 2);
  o->fc_hi = g_new (double, o->lookahead + 2);
  o->fc_profile = g_new (double, o->lookahead + 2);
  shd_forecast_config_init (&o->fc_config);
  o->fc_config.level = level;
  shd_forecast_config_set_calendar (&o->fc_config, o->bucket_s, seasons_s);
  /* scored half an hour of a day ahead (6 buckets of 5 minutes; one
   * bucket of 30 minutes), at most 12 buckets */
  day = o->fc_config.calendar[0] ? o->fc_config.calendar[0] : 48;
  o->fc_config.horizon = CLAMP (day / 48, 1u, 12u);
  for (guint i = 0; i < SHD_MAX_SEASONS && o->fc_config.calendar[i]; i++)
    o->max_gap = MAX (o->max_gap, 2 * o->fc_config.calendar[i]);
  o->max_gap = MAX (o->max_gap, 48u);
  o->fc = shd_forecaster_new (&o->fc_config);
  o->last = o->cur = -1;
  return o;
}

void
shd_outlook_free (ShdOutlook *o)
{
  if (o == NULL)
    return;
  shd_forecaster_free (o->fc);
  g_free (o->samples);
  g_free (o->fc_point);
  g_free (o->fc_hi);
  g_free (o->fc_profile);
  g_free (o);
}

double shd_outlook_bucket_s (const ShdOutlook *o) { return o->bucket_s; }
guint64 shd_outlook_count (const ShdOutlook *o) { return o->count; }

/* The season the outlook goes by, in buckets: the forecaster's; or,
 * once the calendar's shortest season (a day) was seen whole but no season
 * is in use, that one provisionally (*provisional), on what recurs: the
 * upper bound of a bucket is the load that two of the last three days
 * reached near its hour (the day before, while only one was seen), its
 * point the day before's load.  The out-of-sample test (forecast.c) says
 * nothing before a day and three eighths and scores every hour's average:
 * a burst that comes back every afternoon an hour earlier or later, on a
 * disk quiet otherwise, fails it for days, yet a copy warmed for it costs
 * less than the burst met on the cheap tier. */
static guint
season_of (const ShdOutlook *o, gboolean *provisional)
{
  guint period = shd_forecaster_period (o->fc), day = o->fc_config.calendar[0];
  guint64 n = shd_forecaster_count (o->fc);

  if (provisional)
    *provisional = FALSE;
  if (period)
    return period;
  if (day == 0 || n < day)
    return 0;
  if (provisional)
    *provisional = TRUE;
  return day;
}

guint shd_outlook_period (const ShdOutlook *o) { return season_of (o, NULL); }

gboolean
shd_outlook_provisional (const ShdOutlook *o)
{
  gboolean provisional;

  season_of (o, &provisional);
  return provisional;
}

const char *
shd_outlook_model (const ShdOutlook *o)
{
  return shd_outlook_provisional (o) ? "yesterday" : shd_model_kind_name (shd_forecaster_best (o->fc));
}

static void
learn (ShdOutlook *o, double value)
{
  shd_forecaster_update (o->fc, MAX (value, 0));
  o->count++;
  o->fc_len = 0;
}

/* The highest of the point forecast for the bucket h after the last
 * learned and of the load the last ENVELOPE_SEASONS seasons held near
 * its phase (a season / ENVELOPE_SPAN either side: a daily burst comes a
 * little earlier or later from day to day).  For a provisional season,
 * a load that recurs: the highest that two of those seasons reached near
 * the phase (what one reached, while only one was seen).  NAN without a
 * season or before one was seen. */
static double
envelope (const ShdOutlook *o, guint h, double point)
{
  gboolean provisional;
  guint period = season_of (o, &provisional), w = period / ENVELOPE_SPAN;
  double first = NAN, second = NAN, v;  /* the two highest seasons' loads */

  if (period == 0)
    return NAN;
  for (guint d = 1; d <= ENVELOPE_SEASONS; d++) {
    double m = NAN;

    for (gint64 j = -(gint64) w; j <= (gint64) w; j++) {
      /* bucket last + h - d x period + j, counted back from the last */
      gint64 back = (gint64) d * period - h - j;

      if (back >= 0 && back <= G_MAXUINT && shd_forecaster_past (o->fc, (guint) back, &v))
        m = isfinite (m) ? MAX (m, v) : v;
    }
    if (!isfinite (m))
      continue;
    if (!isfinite (first) || m > first) {
      second = first;
      first = m;
    } else if (!isfinite (second) || m > second) {
      second = m;
    }
  }
  if (!isfinite (first))
    return NAN;
  return MAX (provisional && isfinite (second) ? second : first, point);
}

/* The forecasts h = 1 .. lookahead + 1 buckets after the last learned.
 *
 * The upper bound is the selector's interval, but at most HI_FACTOR over
 * the envelope.  The interval's width is one quantile of the selector's
 * errors over every phase, so once a few bursts it missed (a spike a
 * bucket early or late, one higher than before) are a tenth of its
 * window, every quiet hour's bound is over a tier's limit: the dear tier
 * was held, "needed in 0 s", for as long as those errors stayed in the
 * window, long after the load had gone and long before the next burst
 * was due.  Near the phase of a burst that recent seasons held the
 * envelope is the burst, and the bound stays as wide as the selector
 * says. */
static void
fill_cache (ShdOutlook *o)
{
  ShdPrediction p;
  double prof, env;
  gboolean provisional;
  guint period = season_of (o, &provisional);

  o->fc_len = 0;
  for (guint h = 1; h <= o->lookahead + 1; h++) {
    if (!shd_forecaster_predict (o->fc, h, &p))
      break;
    o->fc_point[h - 1] = MAX (p.point, 0);
    o->fc_hi[h - 1] = MAX (p.hi, o->fc_point[h - 1]);
    env = envelope (o, h, o->fc_point[h - 1]);
    /* a provisional season's bound is what the day before held near that
     * hour: the interval of a forecaster without a season is as wide on
     * every hour */
    if (provisional)
      o->fc_hi[h - 1] = isfinite (env) ? env : o->fc_point[h - 1];
    else if (isfinite (env))
      o->fc_hi[h - 1] = MAX (MIN (o->fc_hi[h - 1], HI_FACTOR * (1 + env) - 1),
                             o->fc_point[h - 1]);
    /* what the same hour held on most recent days (the profile's median)
     * counts too, whichever model the selector trusts on average: a
     * smoother that wins on the quiet hours flattens the daily burst */
    o->fc_profile[h - 1] = NAN;
    if (provisional) {
      /* the profile of one day: the day before, at the same hour */
      if (period >= h && shd_forecaster_past (o->fc, period - h, &prof))
        o->fc_profile[h - 1] = MAX (prof, 0);
    } else if (period &&
        shd_forecaster_point (o->fc, SHD_MODEL_PROFILE, h, &prof)) {
      o->fc_hi[h - 1] = MAX (o->fc_hi[h - 1], prof);
      o->fc_profile[h - 1] = MAX (prof, 0);
    }
    o->fc_len = h;
  }
}

/* Buckets between the last one learned and `index` were not seen: fill
 * them with their forecast, or start afresh after a long gap. */
static void
fill_gap (ShdOutlook *o, gint64 last, gint64 index)
{
  gint64 missing = index - last - 1;

  if (last < 0 || missing <= 0)
    return;
  if (missing > o->max_gap) {
    shd_forecaster_free (o->fc);
    o->fc = shd_forecaster_new (&o->fc_config);
    o->fc_len = 0;
    return;
  }
  for (gint64 i = 0; i < missing; i++) {
    ShdPrediction p;

    learn (o, shd_forecaster_predict (o->fc, 1, &p) ? p.point : 0);
  }
}

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

static double
bucket_value (ShdOutlook *o)
{
  double rank, lo;
  guint i;

  qsort (o->samples, o->n_samples, sizeof *o->samples, cmp_double);
  rank = SHD_OUTLOOK_QUANTILE * (o->n_samples - 1);
  i = (guint) floor (rank);
  lo = o->samples[i];
  if (i + 1 >= o->n_samples)
    return lo;
  return lo + (rank - i) * (o->samples[i + 1] - lo);
}

/* Bucket `index` is done: fill what came before it unseen, learn it. */
static void
learn_bucket (ShdOutlook *o, gint64 index, double value)
{
  fill_gap (o, o->last, index);
  learn (o, value);
  o->last = index;
}

gboolean
shd_outlook_add (ShdOutlook *o, double wall, double load, gint64 *index, double *value)
{
  gint64 b;
  gboolean closed = FALSE;

  g_return_val_if_fail (isfinite (wall), FALSE);
  if (!isfinite (load))
    return FALSE;
  b = (gint64) floor (wall / o->bucket_s);
  if ((o->cur >= 0 && b < o->cur) || b <= o->last)
    return FALSE;               /* the clock went back: ignore until it catches up */
  if (o->cur >= 0 && b > o->cur) {
    double v = bucket_value (o);

    learn_bucket (o, o->cur, v);
    if (index)
      *index = o->cur;
    if (value)
      *value = v;
    closed = TRUE;
    o->n_samples = 0;
    o->seen = 0;
  }
  o->cur = b;
  /* keep a bounded sample of the bucket: every sample until full, then
   * one slot in turn (the bucket is longer than expected) */
  if (o->n_samples < o->cap_samples)
    o->samples[o->n_samples++] = MAX (load, 0);
  else
    o->samples[o->seen % o->cap_samples] = MAX (load, 0);
  o->seen++;
  return closed;
}

gint64 shd_outlook_last (const ShdOutlook *o) { return o->last; }

void
shd_outlook_feed (ShdOutlook *o, gint64 index, double value)
{
  g_return_if_fail (index >= 0 && isfinite (value));
  /* the past only: what is learned already, or being gathered, is newer */
  if (index <= o->last || (o->cur >= 0 && index >= o->cur))
    return;
  learn_bucket (o, index, value);
}

void
shd_outlook_forget (ShdOutlook *o)
{
  shd_forecaster_free (o->fc);
  o->fc = shd_forecaster_new (&o->fc_config);
  o->fc_len = 0;
  o->count = 0;
  o->last = -1;
}

gboolean
shd_outlook_bucket (const ShdOutlook *o, guint k, double *start, double *point, double *hi)
{
  ShdOutlook *w = (ShdOutlook *) o;    /* the cache */
  gint64 now = o->cur >= 0 ? o->cur : o->last + 1, h;

  if (o->last < 0)
    return FALSE;
  h = now + k - o->last;
  if (o->fc_len == 0)
    fill_cache (w);
  if (h < 1 || h > o->fc_len) {
    ShdPrediction p;

    /* beyond the cache (a gap not filled yet): ask the forecaster */
    if (h < 1 || h > G_MAXUINT || !shd_forecaster_predict (o->fc, (guint) h, &p))
      return FALSE;
    *point = MAX (p.point, 0);
    *hi = MAX (p.hi, *point);
  } else {
    *point = o->fc_point[h - 1];
    *hi = o->fc_hi[h - 1];
  }
  *start = (now + k) * o->bucket_s;
  return TRUE;
}

double
shd_outlook_onset (const ShdOutlook *o, double wall, double limit, double *peak)
{
  double onset = INFINITY, top = NAN;

  if (peak)
    *peak = NAN;
  if (season_of (o, NULL) == 0)
    return INFINITY;
  for (guint k = 0; k < o->lookahead; k++) {
    double start, point, hi;

    if (!shd_outlook_bucket (o, k, &start, &point, &hi))
      break;
    if (start + o->bucket_s <= wall)
      continue;
    if (!isfinite (onset) && hi > limit)
      onset = MAX (start - wall, 0);
    if (isfinite (onset))
      top = isfinite (top) ? MAX (top, hi) : hi;
  }
  if (peak)
    *peak = top;
  return onset;
}

double
shd_outlook_clear (const ShdOutlook *o, double wall, double limit)
{
  double clear = 0;

  if (season_of (o, NULL) == 0)
    return 0;
  for (guint k = 0; k < o->lookahead; k++) {
    double start, point, hi;

    if (!shd_outlook_bucket (o, k, &start, &point, &hi))
      break;
    if (hi > limit)
      clear = MAX (start + o->bucket_s - wall, 0);
  }
  return clear;
}

/* Seconds from wall until the first bucket in the lookahead whose point
 * forecast is over limit (over) or at or under it (!over); INFINITY when
 * none. */
static double
first_point (const ShdOutlook *o, double wall, double limit, gboolean over)
{
  for (guint k = 0; k < o->lookahead; k++) {
    double start, point, hi, prof, expect;
    gint64 h;

    if (!shd_outlook_bucket (o, k, &start, &point, &hi))
      break;
    if (start + o->bucket_s <= wall)
      continue;
    /* hours ahead the season is the better guide: what recent days held
     * at that hour (the selector may be naive, which sees no season) */
    h = (o->cur >= 0 ? o->cur : o->last + 1) + k - o->last;
    prof = h >= 1 && h <= o->fc_len ? o->fc_profile[h - 1] : NAN;
    expect = isfinite (prof) ? (over ? MAX (point, prof) : prof) : point;
    if (over ? expect > limit : expect <= limit)
      return MAX (start - wall, 0);
  }
  return INFINITY;
}

double
shd_outlook_fits (const ShdOutlook *o, double wall, double limit)
{
  if (season_of (o, NULL) == 0)
    return 0;
  return first_point (o, wall, limit, FALSE);
}

double
shd_outlook_exceeds (const ShdOutlook *o, double wall, double limit)
{
  if (season_of (o, NULL) == 0)
    return INFINITY;
  return first_point (o, wall, limit, TRUE);
}
