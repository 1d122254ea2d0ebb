/* The daemon's state: the configuration, the history and the managed
 * disks, with the history's flush and prune timers.
 *
 * A GObject on the main context.  The disks of [disk:NAME] groups are
 * created with it; other layers (libvirt) add and remove disks of their
 * own at run time.  The daemon holds a reference on each disk and stops a
 * disk when it drops it. */
#pragma once

#include "config.h"
#include "disk.h"
#include "history.h"
#include "metrics.h"

G_BEGIN_DECLS

#define SHD_TYPE_DAEMON (shd_daemon_get_type ())
G_DECLARE_FINAL_TYPE (ShdDaemon, shd_daemon, SHD, DAEMON, GObject)

/* Takes config.  Opens the history, when [shadowd] state names one, and
 * creates the disks of the configuration (not started). */
ShdDaemon *shd_daemon_new (ShdConfig *config, GError **error);
/* Starts the disks and the history's timers. */
void shd_daemon_start (ShdDaemon *dm);
/* Stops and drops every disk and commits the history.  Final. */
void shd_daemon_stop (ShdDaemon *dm);
/* Stops, then completes once every disk it had is finalized (their QMP
 * commands in flight, now cancelled, hold them until their callbacks
 * ran) and the history is closed.  The daemon lives until then. */
void shd_daemon_shutdown_async (ShdDaemon *dm, GAsyncReadyCallback callback, gpointer data);
gboolean shd_daemon_shutdown_finish (ShdDaemon *dm, GAsyncResult *res, GError **error);

/* The configuration; the libvirt layer adds tiers that only a domain's
 * metadata defines. */
ShdConfig *shd_daemon_get_config (ShdDaemon *dm);
ShdHistory *shd_daemon_get_history (ShdDaemon *dm);     /* or NULL */
/* The disks (ShdDisk), in the order they came. */
GPtrArray *shd_daemon_get_disks (ShdDaemon *dm);
ShdDisk *shd_daemon_find_disk (ShdDaemon *dm, const char *name, GError **error);

/* shadowctl move of a disk another layer owns (a libvirt domain's): the
 * handler returns FALSE when the disk is not one of its own, else TRUE
 * with the answer in *result or an error. */
typedef gboolean (*ShdMoveHandler) (gpointer data, JsonObject *req, JsonNode **result,
                                    GError **error);
void shd_daemon_set_move_handler (ShdDaemon *dm, ShdMoveHandler handler, gpointer data);
gboolean shd_daemon_handle_move (ShdDaemon *dm, JsonObject *req, JsonNode **result,
                                 GError **error);

/* Adds a disk (a reference) and starts it. */
void shd_daemon_add_disk (ShdDaemon *dm, ShdDisk *disk);
/* Stops the disk and drops it. */
void shd_daemon_remove_disk (ShdDaemon *dm, ShdDisk *disk);

/* Another layer's metrics, declared and added by func with owner while
 * owner lives (the daemon holds it weakly: the libvirt layer holds the
 * daemon). */
typedef void (*ShdMetricsSourceFunc) (GObject *owner, ShdMetrics *m);
void shd_daemon_add_metrics_source (ShdDaemon *dm, ShdMetricsSourceFunc func,
                                    GObject *owner);
/* One scrape: the daemon's metric families and the disks', then those of
 * every source, as Prometheus text. */
char *shd_daemon_render_metrics (ShdDaemon *dm);

G_END_DECLS
