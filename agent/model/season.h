/* Seasons of a load series: candidates from the autocorrelation, and the
 * out-of-sample test a season must pass before the forecasters use it.
 *
 * A lag can correlate by chance (a few spikes that happen to line up, a
 * trend, a random walk), and a seasonal model on a wrong period does much
 * worse than none.  So a season is used only when the seasonal profile
 * model (forecast.h) forecasts the values it has not seen yet better than
 * the same model without the season. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Period by autocorrelation: the lag in [min_period, max_period] with the
 * highest local-peak autocorrelation at or above min_acf, considering only
 * lags with at least three cycles in the data.  0 when there is none. */
guint shd_detect_period (const double *y, gsize n, guint min_period,
                         guint max_period, double min_acf);

/* The same peaks, best first: up to max of them into out; returns how many. */
guint shd_season_candidates (const double *y, gsize n, guint min_period,
                             guint max_period, double min_acf, guint *out, guint max);

/* Out-of-sample skill of a season: the mean absolute error of the profile
 * model with this period over that of the model without a season, both
 * run online over y and scored h steps ahead from every origin after the
 * first period (and after a third of the values).  Below 1: the season
 * helps.  NAN with fewer than min_scored such origins. */
double shd_season_skill (const double *y, gsize n, guint period, guint h,
                         guint cycles, guint window, guint fit, guint min_scored);

G_END_DECLS
