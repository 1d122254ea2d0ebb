/* Online forecasters for one load series, and the per-disk selector that
 * scores them by rolling MASE and uses the best.
 *
 * Every model is updated with one observation at a time and costs O(1)
 * (AR: O(window * p)) per update, with bounded memory, so one agent can
 * follow many disks. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  double point;
  double lo;                    /* prediction interval at the requested level */
  double hi;
  gboolean has_interval;        /* FALSE until enough residuals were seen */
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

/* Period by autocorrelation: the lag in [min_period, max_period] with the
 * highest local-peak autocorrelation at or above min_acf, considering only
 * lags with at least three cycles in the data.  0 when there is none. */
guint shd_detect_period (const double *y, gsize n, guint min_period,
                         guint max_period, double min_acf);

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
  SHD_N_MODELS
} ShdModelKind;

typedef struct {
  guint period;                 /* season in samples; 0 = find it in the data */
  guint min_period;             /* detection range */
  guint max_period;
  double min_acf;               /* detection threshold */
  guint horizon;                /* steps ahead the models are scored on */
  guint score_window;           /* errors in the rolling MASE */
  double margin;                /* a model must beat naive by this fraction */
  double level;                 /* interval level */
  gboolean tune;                /* self-tuning ewma/holt/hw; else the constants below */
  double ewma_alpha;
  double holt_alpha, holt_beta, holt_phi;
  double hw_alpha, hw_beta, hw_gamma, hw_phi;
  guint ar_order, ar_window;
} ShdForecastConfig;

void shd_forecast_config_init (ShdForecastConfig *c);

typedef struct _ShdForecaster ShdForecaster;

ShdForecaster *shd_forecaster_new (const ShdForecastConfig *c);
void shd_forecaster_free (ShdForecaster *f);
void shd_forecaster_update (ShdForecaster *f, double y);
guint64 shd_forecaster_count (const ShdForecaster *f);
/* Configured or detected season, 0 while unknown (seasonal models absent). */
guint shd_forecaster_period (const ShdForecaster *f);
/* NULL for a seasonal model while the season is unknown. */
ShdModel *shd_forecaster_model (const ShdForecaster *f, ShdModelKind k);
/* Rolling MASE at the configured horizon; NAN while not scored. */
double shd_forecaster_mase (const ShdForecaster *f, ShdModelKind k);
ShdModelKind shd_forecaster_best (const ShdForecaster *f);
/* Forecast of the best model (naive while nothing is scored). */
gboolean shd_forecaster_predict (const ShdForecaster *f, guint h,
                                 ShdPrediction *out);
const char *shd_model_kind_name (ShdModelKind k);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdForecaster, shd_forecaster_free)

G_END_DECLS
