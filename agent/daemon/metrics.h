/* One scrape in the Prometheus text exposition format, version 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/).
 *
 * The families of a scrape are declared first, from tables of
 * ShdMetricFamily; samples are then added in any order (disk by disk, as
 * the daemon walks its disks) and rendered family by family, in the order
 * of declaration: "# HELP", "# TYPE", then every sample of the family.
 * Label values are escaped (backslash, double quote, newline) and made
 * valid UTF-8; numbers are written locale-independently, with NaN, +Inf
 * and -Inf as Prometheus spells them.  A scraper (promtool check metrics)
 * accepts the result as it is. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  SHD_METRIC_GAUGE,
  SHD_METRIC_COUNTER,           /* its name ends in _total */
} ShdMetricType;

typedef struct {
  const char *name;             /* [a-zA-Z_:][a-zA-Z0-9_:]* */
  ShdMetricType type;
  const char *help;             /* one line */
} ShdMetricFamily;

typedef struct _ShdMetrics ShdMetrics;

ShdMetrics *shd_metrics_new (void);
void shd_metrics_free (ShdMetrics *m);

/* Declares families; a name declared twice is a programming error. */
void shd_metrics_declare (ShdMetrics *m, const ShdMetricFamily *families, gsize n);

/* Adds a sample of a declared family: the value, then label name and
 * value pairs, then NULL. */
void shd_metrics_add (ShdMetrics *m, const char *family, double value, ...)
  G_GNUC_NULL_TERMINATED;
/* The same with the labels in a NULL-terminated array of name, value. */
void shd_metrics_addv (ShdMetrics *m, const char *family, double value,
                       const char *const *labels);

/* The exposition text.  Families without samples are left out. */
char *shd_metrics_render (ShdMetrics *m);

const char *shd_metric_type_name (ShdMetricType type);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdMetrics, shd_metrics_free)

G_END_DECLS
