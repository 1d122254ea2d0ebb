/* Online forecasters for one load series, and the selector that scores
 * them all on the same origins and uses the best.
 *
 * Every model is updated with one observation at a time, at a cost that
 * does not grow with the series, and keeps bounded memory, so one agent
 * can follow many disks.  The same selector runs at both of the agent's
 * time scales: on samples at the polling interval (seconds to minutes
 * ahead) and on bucketed history (hours ahead, daily and weekly seasons);
 * see docs/agent-internals.md, "Forecasting". */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  double point;
  double lo;                    /* prediction interval at the requested level */
  double hi;
  gboolean has_interval;        /* FALSE until enough errors were seen */
} ShdPrediction;

typedef struct _ShdModel ShdModel;

ShdModel *shd_model_new_naive (void);
ShdModel *shd_model_new_snaive (guint period);
ShdModel *shd_model_new_ewma (double alpha);
ShdModel *shd_model_new_holt (double alpha, double beta, double phi);
ShdModel *shd_model_new_hw (guint period, double alpha, double beta,
                            double gamma, double phi);
#define SHD_AR_MAX_ORDER 32
ShdModel *shd_model_new_ar (guint order, guint window);
/* Self-tuning variants: a few smoothing constants run side by side and
 * the one with the lowest recent one-step error forecasts. */
ShdModel *shd_model_new_ewma_tuned (void);
ShdModel *shd_model_new_holt_tuned (double phi);
ShdModel *shd_model_new_hw_tuned (guint period, double phi);
/* The robust profile model, on log(1 + y): a profile p(t), the median of
 * the values at t's phase in the last `cycles` periods (period > 0), or
 * of the last `window` values (period 0: a robust level); the deviation
 * d = y - p decays towards it: forecast p(t+h) + phi_h d(t), with phi_h
 * in [0, 1] fitted by least squares over the last `fit` values. */
ShdModel *shd_model_new_profile (guint period, guint cycles, guint window, guint fit);
void shd_model_free (ShdModel *m);

const char *shd_model_name (const ShdModel *m);
void shd_model_update (ShdModel *m, double y);
gboolean shd_model_ready (const ShdModel *m);
/* h >= 1 steps ahead; level in (0, 1), e.g. 0.95.  FALSE when not ready. */
gboolean shd_model_predict (const ShdModel *m, guint h, double level,
                            ShdPrediction *out);
/* RMS of the rolling one-step residuals; NAN when there are none. */
double shd_model_sigma (const ShdModel *m);
/* AR only: fills phi[0..order-1]; FALSE for other models or before a fit. */
gboolean shd_model_ar_coefficients (const ShdModel *m, double *phi, guint order);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdModel, shd_model_free)

/* Yule-Walker by Levinson-Durbin.  r[0..p] autocovariances; phi[0..p-1]
 * receives the coefficients, *err the innovation variance.  FALSE when r is
 * degenerate (r[0] <= 0 or a non-positive-definite sequence). */
gboolean shd_levinson_durbin (const double *r, guint p, double *phi, double *err);

/* Standard normal quantile, for interval levels. */
double shd_normal_quantile (double p);

/* ---- the selector ---- */

typedef enum {
  SHD_MODEL_NAIVE,
  SHD_MODEL_SNAIVE,
  SHD_MODEL_EWMA,
  SHD_MODEL_HOLT,
  SHD_MODEL_HW,
  SHD_MODEL_AR,
  SHD_MODEL_LEVEL,              /* the profile model without a season */
  SHD_MODEL_PROFILE,            /* the profile model on the longest season */
  SHD_MODEL_MEDIAN,             /* median of naive, ewma and level (and,
                                   with a season, profile and hw) */
  SHD_N_MODELS
} ShdModelKind;

#define SHD_MAX_SEASONS 4

typedef struct {
  /* Seasons.  `period` forces one (in samples); otherwise the calendar
   * periods (a day, a week, in samples) are the candidates when known,
   * and without them the data's autocorrelation peaks in
   * [min_period, max_period] are.  A candidate is used only once it holds
   * up out of sample (season.h). */
  guint period;
  guint calendar[SHD_MAX_SEASONS];      /* 0-terminated */
  guint min_period;
  guint max_period;
  double min_acf;
  guint max_season;             /* longest season kept, in samples */
  guint horizon;                /* steps ahead the models are scored on */
  guint score_window;           /* memory of the long score (decay 1 - 1/w) */
  guint short_window;           /* memory of the recent score */
  double margin;                /* a model must beat naive by this fraction */
  double full_skill;            /* advantage over naive that earns the whole
                                   forecast; less earns a share (0: always whole) */
  double level;                 /* interval level */
  guint pool;                   /* models the selector may choose (bit per kind) */
  gboolean tune;                /* self-tuning ewma/holt/hw; else the constants below */
  double ewma_alpha;
  double holt_alpha, holt_beta, holt_phi;
  double hw_alpha, hw_beta, hw_gamma, hw_phi;
  guint ar_order, ar_window;
  guint profile_cycles, level_window, profile_fit;
} ShdForecastConfig;

void shd_forecast_config_init (ShdForecastConfig *c);
/* The calendar (a day, a week) in samples of interval_s seconds, from
 * seasons_s (seconds; 0-terminated, e.g. 86400, 604800): the ones that
 * are at least 4 and at most max_season samples long. */
void shd_forecast_config_set_calendar (ShdForecastConfig *c, double interval_s,
                                       const double *seasons_s);

typedef struct _ShdForecaster ShdForecaster;

ShdForecaster *shd_forecaster_new (const ShdForecastConfig *c);
void shd_forecaster_free (ShdForecaster *f);
void shd_forecaster_update (ShdForecaster *f, double y);
guint64 shd_forecaster_count (const ShdForecaster *f);
/* The season in use (the longest accepted one), 0 while there is none. */
guint shd_forecaster_period (const ShdForecaster *f);
/* The seasons in use, shortest first; returns how many (at most max). */
guint shd_forecaster_seasons (const ShdForecaster *f, guint *out, guint max);
/* NULL for a model that is not running (a seasonal one without a season,
 * or a combination). */
ShdModel *shd_forecaster_model (const ShdForecaster *f, ShdModelKind k);
/* Point forecast of one kind, h steps ahead; FALSE when it has none. */
gboolean shd_forecaster_point (const ShdForecaster *f, ShdModelKind k, guint h,
                               double *out);
/* Rolling MASE at the configured horizon (every model scored on the same
 * origins: one that could not forecast is charged naive's error); NAN
 * while not scored. */
double shd_forecaster_mase (const ShdForecaster *f, ShdModelKind k);
ShdModelKind shd_forecaster_best (const ShdForecaster *f);
/* Forecast of the best model (naive while nothing is scored), with an
 * interval from its own errors at the scoring horizon. */
gboolean shd_forecaster_predict (const ShdForecaster *f, guint h,
                                 ShdPrediction *out);
const char *shd_model_kind_name (ShdModelKind k);
/* A value learned: back = 0 is the last one; FALSE beyond the history
 * kept (profile_cycles + 3 of the longest season at least). */
gboolean shd_forecaster_past (const ShdForecaster *f, guint back, double *out);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdForecaster, shd_forecaster_free)

G_END_DECLS
