/* The daemon's state; see daemon.h. */
#include "daemon.h"

#include "log.h"

#include <glib/gstdio.h>

#define PRUNE_S 600

struct _ShdDaemon {
  GObject parent_instance;
  ShdConfig *config;
  ShdHistory *history;
  GPtrArray *disks;             /* ShdDisk, in order */
  GHashTable *by_name;          /* name -> ShdDisk (borrowed from disks) */
  guint flush_timer, prune_timer;
  gint64 started_us;
  gboolean stopped;
  GTask *shutdown;              /* waits for the disks to go */
  GPtrArray *sources;           /* MetricsSource (a GWeakRef stays where it is) */
  guint live_disks;
  ShdMoveHandler move_handler;
  gpointer move_handler_data;
};

/* The owner is held weakly: it holds the daemon itself (libvirt's does) */
typedef struct {
  ShdMetricsSourceFunc func;
  GWeakRef owner;
} MetricsSource;

G_DEFINE_TYPE (ShdDaemon, shd_daemon, G_TYPE_OBJECT)

static gboolean
on_flush (gpointer data)
{
  ShdDaemon *dm = data;
  g_autoptr (GError) error = NULL;

  if (!shd_history_flush (dm->history, &error))
    shd_log (G_LOG_LEVEL_WARNING, NULL, "history", "%s", error->message);
  return G_SOURCE_CONTINUE;
}

static gboolean
on_prune (gpointer data)
{
  ShdDaemon *dm = data;
  g_autoptr (GError) error = NULL;
  gint64 n = shd_history_prune (dm->history, g_get_real_time () / 1000, &error);

  if (n < 0)
    shd_log (G_LOG_LEVEL_WARNING, NULL, "history", "%s", error->message);
  else if (n > 0)
    shd_log (G_LOG_LEVEL_DEBUG, NULL, "history", "pruned %" G_GINT64_FORMAT " rows", n);
  return G_SOURCE_CONTINUE;
}

ShdDaemon *
shd_daemon_new (ShdConfig *config, GError **error)
{
  g_autoptr (ShdDaemon) dm = g_object_new (SHD_TYPE_DAEMON, NULL);

  dm->config = config;
  if (*config->state) {
    g_autofree char *dir = g_path_get_dirname (config->state);

    g_mkdir_with_parents (dir, 0750);
    dm->history = shd_history_open (config->state, config->history_full_hours,
                                    config->history_days, error);
    if (dm->history == NULL)
      return NULL;
  }
  for (guint i = 0; i < config->disks->len; i++) {
    g_autoptr (ShdDisk) disk = shd_disk_new (config, config->disks->pdata[i], dm->history,
                                             error);

    if (disk == NULL)
      return NULL;
    g_hash_table_insert (dm->by_name, (gpointer) shd_disk_name (disk), disk);
    g_ptr_array_add (dm->disks, g_steal_pointer (&disk));
  }
  return g_steal_pointer (&dm);
}

void
shd_daemon_start (ShdDaemon *dm)
{
  dm->started_us = g_get_monotonic_time ();
  if (dm->history) {
    on_prune (dm);
    dm->flush_timer = g_timeout_add ((guint) MAX (dm->config->interval_s * 1000, 200),
                                     on_flush, dm);
    dm->prune_timer = g_timeout_add_seconds (PRUNE_S, on_prune, dm);
  }
  for (guint i = 0; i < dm->disks->len; i++)
    shd_disk_start (dm->disks->pdata[i]);
}

void
shd_daemon_stop (ShdDaemon *dm)
{
  g_autoptr (GError) error = NULL;

  if (dm->stopped)
    return;
  dm->stopped = TRUE;
  g_clear_handle_id (&dm->flush_timer, g_source_remove);
  g_clear_handle_id (&dm->prune_timer, g_source_remove);
  for (guint i = 0; i < dm->disks->len; i++)
    shd_disk_stop (dm->disks->pdata[i]);
  g_hash_table_remove_all (dm->by_name);
  g_ptr_array_set_size (dm->disks, 0);
  if (dm->history && !shd_history_flush (dm->history, &error))
    shd_log (G_LOG_LEVEL_WARNING, NULL, "history", "%s", error->message);
}

static void
shutdown_done (ShdDaemon *dm)
{
  g_autoptr (GTask) task = g_steal_pointer (&dm->shutdown);

  /* every disk is gone, and with them their references on the history:
   * this one is the last, which commits and closes */
  g_clear_pointer (&dm->history, shd_history_unref);
  g_task_return_boolean (task, TRUE);
}

static void
disk_finalized (gpointer data, GObject *where_the_disk_was)
{
  ShdDaemon *dm = data;

  (void) where_the_disk_was;
  if (--dm->live_disks == 0 && dm->shutdown)
    shutdown_done (dm);
}

void
shd_daemon_shutdown_async (ShdDaemon *dm, GAsyncReadyCallback callback, gpointer data)
{
  g_autoptr (GPtrArray) disks = g_ptr_array_ref (dm->disks);

  g_return_if_fail (dm->shutdown == NULL);
  dm->shutdown = g_task_new (dm, NULL, callback, data);
  g_task_set_source_tag (dm->shutdown, shd_daemon_shutdown_async);
  for (guint i = 0; i < disks->len; i++) {
    dm->live_disks++;
    g_object_weak_ref (disks->pdata[i], disk_finalized, dm);
  }
  shd_daemon_stop (dm);         /* the callbacks still in flight hold their disk */
  if (dm->live_disks == 0 && dm->shutdown)
    shutdown_done (dm);
}

gboolean
shd_daemon_shutdown_finish (ShdDaemon *dm, GAsyncResult *res, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (res, dm), FALSE);
  return g_task_propagate_boolean (G_TASK (res), error);
}

ShdConfig *
shd_daemon_get_config (ShdDaemon *dm)
{
  return dm->config;
}

ShdHistory *
shd_daemon_get_history (ShdDaemon *dm)
{
  return dm->history;
}

GPtrArray *
shd_daemon_get_disks (ShdDaemon *dm)
{
  return dm->disks;
}

void
shd_daemon_set_move_handler (ShdDaemon *dm, ShdMoveHandler handler, gpointer data)
{
  dm->move_handler = handler;
  dm->move_handler_data = data;
}

gboolean
shd_daemon_handle_move (ShdDaemon *dm, JsonObject *req, JsonNode **result, GError **error)
{
  *result = NULL;
  return dm->move_handler && dm->move_handler (dm->move_handler_data, req, result, error);
}

ShdDisk *
shd_daemon_find_disk (ShdDaemon *dm, const char *name, GError **error)
{
  ShdDisk *disk = g_hash_table_lookup (dm->by_name, name);

  if (disk == NULL)
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no disk '%s'", name);
  return disk;
}

void
shd_daemon_add_disk (ShdDaemon *dm, ShdDisk *disk)
{
  g_return_if_fail (!dm->stopped);
  g_return_if_fail (!g_hash_table_contains (dm->by_name, shd_disk_name (disk)));
  g_ptr_array_add (dm->disks, g_object_ref (disk));
  g_hash_table_insert (dm->by_name, (gpointer) shd_disk_name (disk), disk);
  shd_disk_start (disk);
}

void
shd_daemon_remove_disk (ShdDaemon *dm, ShdDisk *disk)
{
  g_autoptr (ShdDisk) hold = g_object_ref (disk);   /* the array may hold the last one */

  (void) hold;
  shd_disk_stop (disk);
  if (g_hash_table_lookup (dm->by_name, shd_disk_name (disk)) == disk)
    g_hash_table_remove (dm->by_name, shd_disk_name (disk));
  g_ptr_array_remove (dm->disks, disk);
}

static const ShdMetricFamily families[] = {
  { "shadowd_up", SHD_METRIC_GAUGE, "1: shadowd answers" },
  { "shadowd_build_info", SHD_METRIC_GAUGE, "shadowd's version, as a label" },
  { "shadowd_disks", SHD_METRIC_GAUGE, "Disks managed" },
  { "shadowd_uptime_seconds", SHD_METRIC_GAUGE, "Seconds since shadowd started" },
  { "shadowd_interval_seconds", SHD_METRIC_GAUGE, "Seconds between samples" },
};

void
shd_daemon_add_metrics_source (ShdDaemon *dm, ShdMetricsSourceFunc func, GObject *owner)
{
  MetricsSource *src = g_new0 (MetricsSource, 1);

  src->func = func;
  g_weak_ref_init (&src->owner, owner);
  g_ptr_array_add (dm->sources, src);
}

static void
metrics_source_free (gpointer p)
{
  MetricsSource *src = p;

  g_weak_ref_clear (&src->owner);
  g_free (src);
}

char *
shd_daemon_render_metrics (ShdDaemon *dm)
{
  g_autoptr (ShdMetrics) m = shd_metrics_new ();

  shd_metrics_declare (m, families, G_N_ELEMENTS (families));
  shd_disk_declare_metrics (m);
  shd_metrics_add (m, "shadowd_up", 1, NULL);
  shd_metrics_add (m, "shadowd_build_info", 1, "version", SHADOWD_VERSION, NULL);
  shd_metrics_add (m, "shadowd_disks", dm->disks->len, NULL);
  shd_metrics_add (m, "shadowd_uptime_seconds",
                   (g_get_monotonic_time () - dm->started_us) / 1e6, NULL);
  shd_metrics_add (m, "shadowd_interval_seconds", dm->config->interval_s, NULL);
  for (guint i = 0; i < dm->disks->len; i++)
    shd_disk_collect_metrics (dm->disks->pdata[i], m);
  for (guint i = 0; i < dm->sources->len; i++) {
    MetricsSource *src = dm->sources->pdata[i];
    g_autoptr (GObject) owner = g_weak_ref_get (&src->owner);

    if (owner)
      src->func (owner, m);
  }
  return shd_metrics_render (m);
}

static void
shd_daemon_dispose (GObject *object)
{
  ShdDaemon *dm = SHD_DAEMON (object);

  shd_daemon_stop (dm);
  g_ptr_array_set_size (dm->sources, 0);
  G_OBJECT_CLASS (shd_daemon_parent_class)->dispose (object);
}

static void
shd_daemon_finalize (GObject *object)
{
  ShdDaemon *dm = SHD_DAEMON (object);

  g_hash_table_unref (dm->by_name);
  g_ptr_array_unref (dm->disks);
  g_ptr_array_unref (dm->sources);
  g_clear_pointer (&dm->history, shd_history_unref);
  g_clear_pointer (&dm->config, shd_config_free);
  G_OBJECT_CLASS (shd_daemon_parent_class)->finalize (object);
}

static void
shd_daemon_class_init (ShdDaemonClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS (klass);

  oc->dispose = shd_daemon_dispose;
  oc->finalize = shd_daemon_finalize;
}

static void
shd_daemon_init (ShdDaemon *dm)
{
  dm->disks = g_ptr_array_new_with_free_func (g_object_unref);
  dm->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  dm->sources = g_ptr_array_new_with_free_func (metrics_source_free);
}
