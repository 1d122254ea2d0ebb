/* Rolling-origin backtest of every forecaster, and of the selector the
 * agent runs, on one recorded series. */
#pragma once

#include "forecast.h"

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define SHD_BACKTEST_ERROR (shd_backtest_error_quark ())
GQuark shd_backtest_error_quark (void);

typedef enum {
  SHD_BACKTEST_ERROR_TOO_SHORT,
  SHD_BACKTEST_ERROR_FLAT,      /* no in-sample change: MASE undefined */
} ShdBacktestError;

typedef struct {
  guint period;                 /* 0: found in the data */
  guint horizon;                /* forecasts 1..horizon steps from each origin */
  double train_fraction;        /* the first origin */
  double interval_s;            /* seconds per value; 0: unknown (no calendar) */
  double seasons_s[SHD_MAX_SEASONS]; /* the calendar, 0-terminated: a day, a week */
  const ShdForecastConfig *forecast; /* the selector's settings; NULL: the defaults */
} ShdBacktestConfig;

void shd_backtest_config_init (ShdBacktestConfig *c);

/* The selector's own row: at each origin, the model it picked. */
#define SHD_BACKTEST_AUTO SHD_N_MODELS

typedef struct {
  const char *name;
  guint n;                      /* forecasts scored: the same for every row */
  guint own;                    /* of which the model's own (the rest: naive's,
                                   while the model could not forecast yet) */
  double mase;                  /* over every origin and step */
  double *mase_h;               /* per step ahead, [horizon] */
  double coverage;              /* share of values inside the interval */
  double rolling_mase;          /* the selector's score after the last value */
} ShdBacktestRow;

typedef struct {
  guint n_obs, n_train, horizon, period;
  guint seasons[SHD_MAX_SEASONS];       /* in use after the last value, 0-terminated */
  double level;
  double scale;                 /* in-sample one-step naive MAE */
  ShdBacktestRow rows[SHD_N_MODELS + 1];
  ShdModelKind chosen;          /* the selector's pick after the last value */
  ShdModelKind best;            /* lowest backtest MASE (same origins for all) */
} ShdBacktestResult;

ShdBacktestResult *shd_backtest_run (const double *y, gsize n,
                                     const ShdBacktestConfig *c, GError **error);
void shd_backtest_result_free (ShdBacktestResult *r);
JsonNode *shd_backtest_to_json (const ShdBacktestResult *r, const char *source,
                                const char *column);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdBacktestResult, shd_backtest_result_free)

G_END_DECLS
