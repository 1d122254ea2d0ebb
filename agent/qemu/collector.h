/* Turning successive query-blockstats replies for one shadow node into
 * rates: IOPS, bytes per second, mean latency and queue depth, for the
 * node and for each child.  Counters going backwards (QEMU restarted, the
 * node re-created) mark the interval invalid instead of producing
 * nonsense; the next interval starts from the new values. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define SHD_COLLECTOR_ERROR (shd_collector_error_quark ())
GQuark shd_collector_error_quark (void);

typedef enum {
  SHD_COLLECTOR_ERROR_NO_NODE,  /* no such node in the reply */
  SHD_COLLECTOR_ERROR_NOT_SHADOW, /* the node has no shadow statistics */
  SHD_COLLECTOR_ERROR_MALFORMED,  /* a field is missing or of the wrong type */
} ShdCollectorError;

typedef struct {
  guint64 rd_ops, rd_bytes, rd_time_ns;
  guint64 wr_ops, wr_bytes, wr_time_ns;
  guint64 flush_ops;
} ShdIoCounters;

typedef struct {
  char *node_name;
  char *state;                  /* active, synced, syncing, stale, degraded */
  guint64 valid_bytes, failed_ops, copied_bytes;
  guint64 compared_bytes;       /* copy-compare's; 0 from a QEMU without it */
  ShdIoCounters io;
} ShdChildSample;

typedef struct {
  gint64 time_us;               /* when it was taken, monotonic */
  char *node_name;
  char *active;
  char *metadata;               /* the metadata child; NULL: none, or a
                                   QEMU that does not say */
  ShdIoCounters io;
  GPtrArray *children;          /* ShdChildSample */
} ShdShadowSample;

/* Finds node_name in a query-blockstats return value (an array; entries
 * nested under "parent" and "backing" are searched too). */
ShdShadowSample *shd_shadow_sample_parse (JsonNode *reply, const char *node_name,
                                          gint64 time_us, GError **error);
void shd_shadow_sample_free (ShdShadowSample *s);
const ShdChildSample *shd_shadow_sample_child (const ShdShadowSample *s,
                                               const char *node_name);

typedef struct {
  double read_iops, write_iops, flush_iops;
  double read_bps, write_bps;
  double read_latency_ms, write_latency_ms; /* NAN: no requests in the interval */
  double latency_ms;                        /* reads and writes together */
  double queue_depth;           /* mean requests in flight (Little's law) */
} ShdIoRates;

typedef struct {
  char *node_name;
  char *state;
  gboolean valid;               /* FALSE: new child, or its counters reset */
  ShdIoRates io;
  double failed_per_s;
  double copy_bps;
  guint64 valid_bytes;
} ShdChildRates;

typedef struct {
  double interval_s;
  gboolean valid;               /* FALSE: node counters reset, or no time passed */
  gboolean reset;               /* some counter went backwards */
  char *active;
  gboolean active_changed;
  ShdIoRates io;
  GPtrArray *children;          /* ShdChildRates, in the current sample's order */
} ShdShadowRates;

ShdShadowRates *shd_shadow_rates_compute (const ShdShadowSample *prev,
                                          const ShdShadowSample *cur);
void shd_shadow_rates_free (ShdShadowRates *r);
const ShdChildRates *shd_shadow_rates_child (const ShdShadowRates *r,
                                             const char *node_name);

/* Keeps the previous sample of one node. */
typedef struct _ShdCollector ShdCollector;

ShdCollector *shd_collector_new (const char *node_name);
void shd_collector_free (ShdCollector *c);
/* Parses a reply; returns the rates since the previous sample, or NULL
 * with no error for the first sample (nothing to compare with yet). */
ShdShadowRates *shd_collector_push (ShdCollector *c, JsonNode *reply,
                                    gint64 time_us, GError **error);
/* Forget the previous sample, e.g. after reconnecting. */
void shd_collector_reset (ShdCollector *c);
const ShdShadowSample *shd_collector_last (const ShdCollector *c);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdShadowSample, shd_shadow_sample_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdShadowRates, shd_shadow_rates_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdCollector, shd_collector_free)

G_END_DECLS
