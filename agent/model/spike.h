/* Spike detection on one load series: a robust z-score against a rolling
 * median/MAD baseline catches sharp spikes, a one-sided CUSUM on the same
 * z catches sustained moderate rises; a second CUSUM decides the end.
 * Upward only: a spike is more load than the baseline. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  guint window;                 /* baseline samples (median and MAD) */
  guint min_baseline;           /* samples before anything is reported */
  double z_on;                  /* robust z that counts toward an onset */
  guint k_on;                   /* consecutive samples above z_on */
  double cusum_k;               /* CUSUM allowance, in robust sigmas */
  double cusum_h;               /* CUSUM alarm threshold */
  double z_off;                 /* z the load must fall below to end ... */
  double end_h;                 /* ... with this much CUSUM evidence */
  double min_scale;             /* floor on the robust sigma, series units */
  double rel_scale;             /* floor on it relative to |median| */
  guint cooldown;               /* samples after an end with no new onset */
  guint max_len;                /* a spike longer than this is a new level; 0: never */
} ShdSpikeConfig;

void shd_spike_config_init (ShdSpikeConfig *c);
/* 1 is the default; 2 fires on spikes half as large, 0.5 on twice. */
void shd_spike_config_set_sensitivity (ShdSpikeConfig *c, double sensitivity);

typedef enum {
  SHD_SPIKE_NONE,
  SHD_SPIKE_ONSET,
  SHD_SPIKE_END,
} ShdSpikeEvent;

typedef struct {
  ShdSpikeEvent event;
  gboolean in_spike;            /* after this sample */
  double z;                     /* robust z of this sample */
  double cusum;                 /* onset CUSUM */
  double baseline;              /* rolling median */
  double scale;                 /* robust sigma used for z */
  guint64 onset;                /* estimated first sample of the spike */
  guint64 end;                  /* for END: estimated first sample after it */
  const char *reason;           /* ONSET: "z-score" or "cusum";
                                   END: "returned" or "level-shift" */
} ShdSpikeReport;

typedef struct _ShdSpikeDetector ShdSpikeDetector;

ShdSpikeDetector *shd_spike_new (const ShdSpikeConfig *c);
void shd_spike_free (ShdSpikeDetector *d);
ShdSpikeEvent shd_spike_update (ShdSpikeDetector *d, double x, ShdSpikeReport *out);
gboolean shd_spike_active (const ShdSpikeDetector *d);

/* Median of v[0..n-1]; reorders v.  Exposed for tests. */
double shd_median_inplace (double *v, gsize n);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdSpikeDetector, shd_spike_free)

G_END_DECLS
