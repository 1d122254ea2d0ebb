/* One managed disk: its QMP connection, the sampling timer, collector,
 * policy, actions (blockdev-reopen, x-blockdev-change), and its bounded
 * recent state.
 *
 * A GObject.  Every QMP command in flight holds a reference on the disk
 * (and the disk on its configuration and history), so a reply that comes
 * after the disk was removed finds it alive; shd_disk_stop() cancels the
 * commands, and their callbacks then return without acting.  Whoever
 * drops the disk stops it first (the daemon does). */
#pragma once

#include "config.h"
#include "history.h"
#include "metrics.h"
#include "policy.h"
#include "qmp.h"

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define SHD_TYPE_DISK (shd_disk_get_type ())
G_DECLARE_FINAL_TYPE (ShdDisk, shd_disk, SHD, DISK, GObject)

/* history may be NULL.  The disk holds references on d and history. */
ShdDisk *shd_disk_new (const ShdConfig *c, ShdDiskConfig *d, ShdHistory *history,
                       GError **error);
/* The same over a QMP client someone else owns and starts (one per
 * libvirt domain, shared by its disks); the disk holds a reference. */
ShdDisk *shd_disk_new_with_qmp (const ShdConfig *c, ShdDiskConfig *d,
                                ShdHistory *history, ShdQmp *qmp, GError **error);
void shd_disk_start (ShdDisk *disk);
/* Stops sampling and acting; commands in flight are cancelled.  Final. */
void shd_disk_stop (ShdDisk *disk);

const char *shd_disk_name (ShdDisk *disk);
ShdPolicy *shd_disk_policy (ShdDisk *disk);

JsonNode *shd_disk_status (ShdDisk *disk);
/* The recent notable decisions kept in memory, oldest first. */
JsonNode *shd_disk_decisions (ShdDisk *disk, guint limit);
/* steps: 0 for the policy's horizon. */
JsonNode *shd_disk_forecast (ShdDisk *disk, guint steps);

gboolean shd_disk_request_switch (ShdDisk *disk, const char *tier, GError **error);
/* Returns the target's pre-warm state: state, valid and stale bytes, ETA;
 * raises write-mode to sync first when the disk runs async. */
JsonNode *shd_disk_prewarm (ShdDisk *disk, const char *tier, GError **error);
void shd_disk_set_paused (ShdDisk *disk, gboolean paused);
/* Past load for the seasonal forecast (shadowctl import): buckets as
 * [index, IOPS] pairs, index floor(unix seconds / bucket_s), learned and
 * stored in the history.  bucket_s must be the disk's. */
JsonNode *shd_disk_import_buckets (ShdDisk *disk, double bucket_s, JsonArray *buckets,
                                   GError **error);

/* Prometheus: the per-disk families (declared once per scrape), and this
 * disk's samples of them (label disk, and tier, op, state). */
void shd_disk_declare_metrics (ShdMetrics *m);
void shd_disk_collect_metrics (ShdDisk *disk, ShdMetrics *m);

G_END_DECLS
