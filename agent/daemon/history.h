/* The agent's history in SQLite: every sample at full resolution for the
 * recent hours, one-minute aggregates for weeks, every decision that was
 * not a plain "hold", the seasonal scale's buckets, and what each tier's
 * image had allocated.  Survives restarts; the agent warms its
 * forecasters from it on start (the short-term one from the samples, the
 * seasonal one from the buckets: a restarted shadowd knows yesterday).
 *
 * Writes are batched: they go into an open transaction that
 * shd_history_flush() commits (the daemon calls it once per interval).
 *
 * Reference-counted: each disk holds a reference, so a disk's last
 * callback may still record; the last reference commits and closes. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define SHD_HISTORY_ERROR (shd_history_error_quark ())
GQuark shd_history_error_quark (void);

typedef struct _ShdHistory ShdHistory;

typedef struct {
  const char *disk;
  gint64 t_ms;                  /* wall clock, Unix milliseconds */
  double iops, read_iops, write_iops, bps;
  double latency_ms;            /* NAN: none */
  double forecast, forecast_hi; /* NAN: none */
  const char *tier;             /* active tier */
} ShdHistorySample;

/* full_hours: full-resolution retention; days: aggregate and decision
 * retention. */
ShdHistory *shd_history_open (const char *path, double full_hours, double days,
                              GError **error);
ShdHistory *shd_history_ref (ShdHistory *h);
/* The last reference commits what is pending and closes the database. */
void shd_history_unref (ShdHistory *h);

gboolean shd_history_add_sample (ShdHistory *h, const ShdHistorySample *s,
                                 GError **error);
/* detail: the decision as JSON (an object), stored as text. */
gboolean shd_history_add_decision (ShdHistory *h, const char *disk, gint64 t_ms,
                                   const char *kind, const char *reason,
                                   JsonNode *detail, GError **error);
gboolean shd_history_flush (ShdHistory *h, GError **error);
/* Drops what is past retention; returns rows deleted, -1 on error. */
gint64 shd_history_prune (ShdHistory *h, gint64 now_ms, GError **error);

typedef enum {
  SHD_HISTORY_AUTO,             /* full inside its retention, else minutes */
  SHD_HISTORY_FULL,
  SHD_HISTORY_MINUTE,
} ShdHistoryResolution;

/* Samples of one disk (NULL: all) in [since_ms, until_ms), oldest first,
 * at most limit (0: no limit; the newest are kept).  An array of objects:
 * disk, time (s), iops, bps, latency-ms, forecast, forecast-upper, tier,
 * and for minutes also samples, iops-max, latency-max-ms. */
JsonNode *shd_history_samples (ShdHistory *h, const char *disk, gint64 since_ms,
                               gint64 until_ms, ShdHistoryResolution res,
                               guint limit, GError **error);
/* Decisions, oldest first; the objects are those stored, plus disk and time. */
JsonNode *shd_history_decisions (ShdHistory *h, const char *disk, gint64 since_ms,
                                 guint limit, GError **error);
/* The last n full-resolution IOPS values of a disk, oldest first, from
 * samples no older than max_age_ms before now_ms. */
GArray *shd_history_recent_load (ShdHistory *h, const char *disk, guint n,
                                 gint64 now_ms, gint64 max_age_ms, GError **error);

/* The seasonal scale (the policy's outlook): one bucket of a disk's load,
 * index floor(unix seconds / bucket_s), replaced when stored again. */
typedef struct {
  gint64 index;
  double value;
} ShdHistoryBucket;

gboolean shd_history_add_bucket (ShdHistory *h, const char *disk, double bucket_s,
                                 gint64 index, double value, GError **error);
/* Buckets of a disk with this bucket size from since_index on, oldest
 * first, the newest `limit` (0: all); kept for history-days. */
GArray *shd_history_buckets (ShdHistory *h, const char *disk, double bucket_s,
                             gint64 since_index, guint limit, GError **error);

/* A tier's allocated bytes (NAN: unknown), lifecycle phase and whether it
 * served the guest, at t_ms; kept for history-full-hours. */
gboolean shd_history_add_tier_sample (ShdHistory *h, const char *disk, gint64 t_ms,
                                      const char *tier, double allocated,
                                      const char *phase, gboolean active, GError **error);
/* Tier samples, oldest first: disk, time (s), tier, allocated-bytes, phase,
 * active. */
JsonNode *shd_history_tier_samples (ShdHistory *h, const char *disk, gint64 since_ms,
                                    guint limit, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdHistory, shd_history_unref)

/* A small state of a disk kept for ever (not pruned), such as its last
 * move: stored at once, with what was batched before it. */
gboolean shd_history_set_state (ShdHistory *h, const char *disk, const char *key,
                                JsonNode *value, GError **error);
/* NULL when never stored (or on error, with error set). */
JsonNode *shd_history_get_state (ShdHistory *h, const char *disk, const char *key,
                                 GError **error);

G_END_DECLS
