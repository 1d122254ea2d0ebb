/* The seasonal scale of a disk's forecast: its load in buckets of wall
 * time (5 minutes by default), a forecaster with a day and a week as its
 * season candidates, and what the policy asks of it: when will the load
 * next exceed a tier's limit, hours ahead, with a prediction interval.
 *
 * Pure: the caller passes wall-clock time (Unix seconds, or any clock
 * whose day is the configured one: the demo's day is 48 seconds).
 * Buckets are indexed by floor(wall / bucket), so a restarted agent that
 * feeds its stored buckets back finds the same phases.
 *
 * A bucket's value is its demand: the 90th percentile of the samples in
 * it (a bucket of one sample is that sample), because a tier must carry
 * the busy seconds, not the average.  A bucket the agent did not see
 * (it was stopped) is filled with the forecast for it, up to two of the
 * longest seasons; after a longer gap the forecaster starts afresh. */
#pragma once

#include "forecast.h"

#include <glib.h>

G_BEGIN_DECLS

#define SHD_OUTLOOK_QUANTILE 0.9

typedef struct _ShdOutlook ShdOutlook;

/* bucket_s is rounded up to a multiple of interval_s; lookahead_s is how
 * far ahead onset questions look; seasons_s the calendar (seconds,
 * 0-terminated). */
ShdOutlook *shd_outlook_new (double interval_s, double bucket_s, double lookahead_s,
                             double level, const double *seasons_s);
void shd_outlook_free (ShdOutlook *o);

double shd_outlook_bucket_s (const ShdOutlook *o);
/* One sample.  TRUE when it closed a bucket: *index and *value say which
 * (for the history); several may close at once after a gap, this reports
 * the last one seen, the filled ones are not. */
gboolean shd_outlook_add (ShdOutlook *o, double wall, double load, gint64 *index,
                          double *value);
/* A stored bucket (after a restart, or imported), oldest first; indexes
 * must grow.  Gaps are filled as in shd_outlook_add. */
void shd_outlook_feed (ShdOutlook *o, gint64 index, double value);
/* The index of the last bucket learned; -1: none */
gint64 shd_outlook_last (const ShdOutlook *o);
/* Forget every bucket learned (not the one being gathered), so that they
 * can be fed again in order with older ones among them. */
void shd_outlook_forget (ShdOutlook *o);
/* Buckets learned (stored, imported and seen). */
guint64 shd_outlook_count (const ShdOutlook *o);
/* The season in use in buckets (0: none yet); provisional: the
 * calendar's day while the forecaster has accepted no season, going by
 * the bursts that recur from day to day (outlook.c, season_of()) */
guint shd_outlook_period (const ShdOutlook *o);
gboolean shd_outlook_provisional (const ShdOutlook *o);
const char *shd_outlook_model (const ShdOutlook *o);

/* The forecast for the bucket k after the current one (k = 0: the one
 * under way), its start in wall seconds, and the upper bound at the
 * level.  FALSE while the forecaster has nothing to say. */
gboolean shd_outlook_bucket (const ShdOutlook *o, guint k, double *start,
                             double *point, double *hi);
/* Seconds from wall until the first bucket in the lookahead whose upper
 * bound exceeds limit (0: the current one does); INFINITY when none does
 * or there is no season to go by.  *peak: the highest upper bound from
 * that bucket on, within the lookahead (NAN when none). */
double shd_outlook_onset (const ShdOutlook *o, double wall, double limit, double *peak);
/* Seconds from wall until the last bucket in the lookahead whose upper
 * bound exceeds limit ends; 0 when none does. */
double shd_outlook_clear (const ShdOutlook *o, double wall, double limit);
/* Seconds from wall until the first bucket whose point forecast is at or
 * under limit (0: the current one); INFINITY when none in the lookahead,
 * 0 without a season. */
double shd_outlook_fits (const ShdOutlook *o, double wall, double limit);
/* Seconds from wall until the first bucket whose point forecast exceeds
 * limit; INFINITY when none does or there is no season. */
double shd_outlook_exceeds (const ShdOutlook *o, double wall, double limit);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdOutlook, shd_outlook_free)

G_END_DECLS
