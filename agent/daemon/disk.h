/* One managed disk: its QMP connection, the sampling timer, collector,
 * policy, actions (blockdev-reopen), and its bounded recent state. */
#pragma once

#include "config.h"
#include "history.h"
#include "policy.h"
#include "qmp.h"

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

typedef struct _ShdDisk ShdDisk;

/* history may be NULL; it must outlive the disk. */
ShdDisk *shd_disk_new (const ShdConfig *c, const ShdDiskConfig *d,
                       ShdHistory *history, GError **error);
/* The same over a QMP client someone else owns and starts (one per
 * libvirt domain, shared by its disks); the disk keeps a reference. */
ShdDisk *shd_disk_new_with_qmp (const ShdConfig *c, const ShdDiskConfig *d,
                                ShdHistory *history, ShdQmp *qmp, GError **error);
void shd_disk_free (ShdDisk *disk);
void shd_disk_start (ShdDisk *disk);

const char *shd_disk_name (const ShdDisk *disk);
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

/* Prometheus text exposition lines for this disk. */
void shd_disk_metrics (ShdDisk *disk, GString *out);

G_END_DECLS
