/* shadowd's libvirt side: the ShdLibvirt object, its jobs, libvirt's
 * event thread, shutdown and metrics; see lvdaemon.h and lvprivate.h. */
#include "lvprivate.h"

#include "log.h"
#include "lvevents.h"

#include <string.h>

#define CALL_THREADS 4
#define MONITOR_THREADS 4

G_DEFINE_TYPE (ShdLibvirt, shd_libvirt, G_TYPE_OBJECT)

static void shutdown_continue (ShdLibvirt *lv);

gboolean
shd_libvirt_supported (void)
{
  return TRUE;
}

/* ---- jobs ---- */

typedef struct {
  LvWorkFunc work;
  LvDoneFunc done;
  gpointer data;
  GDestroyNotify free_data;
} Job;

static void
job_free (Job *j)
{
  if (j->free_data)
    j->free_data (j->data);
  g_free (j);
}

static void
job_thread (GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
  Job *j = data;
  g_autoptr (GError) error = NULL;

  (void) source;
  (void) cancellable;
  if (j->work (j->data, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, g_steal_pointer (&error));
}

static void
job_finished (GObject *src, GAsyncResult *res, gpointer data)
{
  ShdLibvirt *lv = SHD_LIBVIRT (src);
  Job *j = g_task_get_task_data (G_TASK (res));
  g_autoptr (GError) error = NULL;

  (void) data;
  g_task_propagate_boolean (G_TASK (res), &error);
  lv->jobs--;
  j->done (lv, j->data, error);
  if (lv->stopping)
    shutdown_continue (lv);
}

void
lv_run (ShdLibvirt *lv, ShdLvWorker *worker, LvWorkFunc work, LvDoneFunc done,
        gpointer data, GDestroyNotify free_data)
{
  GTask *task = g_task_new (lv, lv->cancel, job_finished, NULL);
  Job *j = g_new0 (Job, 1);

  j->work = work;
  j->done = done;
  j->data = data;
  j->free_data = free_data;
  g_task_set_task_data (task, j, (GDestroyNotify) job_free);
  g_task_set_source_tag (task, lv_run);
  lv->jobs++;
  shd_lv_worker_run (worker, task, job_thread);
}

void
lv_set_error (GError **error, const char *what)
{
  const char *msg = virGetLastErrorMessage ();

  if (what)
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: %s", what, msg);
  else
    g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_FAILED, msg);
}

static void
quiet_errors (void *data, virErrorPtr error)
{
  /* errors are reported where they happen, with context */
  (void) data;
  (void) error;
}

static gpointer
init_libvirt (gpointer data)
{
  (void) data;
  virSetErrorFunc (NULL, quiet_errors);
  if (virInitialize () < 0)
    return g_strdup (virGetLastErrorMessage ());
  return NULL;
}

/* ---- metrics ---- */

static const ShdMetricFamily families[] = {
  { "shadowd_libvirt_connected", SHD_METRIC_GAUGE, "1 while connected to the libvirt URI" },
  { "shadowd_libvirt_domains", SHD_METRIC_GAUGE, "Running domains followed, per URI" },
  { "shadowd_libvirt_disks", SHD_METRIC_GAUGE,
    "Domain disks with shadow metadata, per URI and state" },
  { "shadowd_libvirt_calls_busy", SHD_METRIC_GAUGE,
    "libvirt calls queued or running, per worker (calls, monitor)" },
};

typedef struct {
  Conn *c;
  guint count[LV_N_STATES];
} DiskCount;

static gboolean
count_disk (Conn *c, Dom *d, LvDisk *k, gpointer data)
{
  DiskCount *dc = data;

  (void) d;
  if (c == dc->c)
    dc->count[k->state]++;
  return TRUE;
}

static void
collect_metrics (GObject *owner, ShdMetrics *m)
{
  ShdLibvirt *lv = SHD_LIBVIRT (owner);
  ShdLvWorker *workers[] = { lv->calls, lv->monitor, lv->mover };

  shd_metrics_declare (m, families, G_N_ELEMENTS (families));
  for (guint i = 0; lv->conns && i < lv->conns->len; i++) {
    Conn *c = lv->conns->pdata[i];
    DiskCount dc = { c, { 0 } };

    shd_metrics_add (m, "shadowd_libvirt_connected", c->connected, "uri", c->uri, NULL);
    shd_metrics_add (m, "shadowd_libvirt_domains", c->doms ? g_hash_table_size (c->doms) : 0,
                     "uri", c->uri, NULL);
    lv_foreach_disk (lv, count_disk, &dc);
    for (guint s = 0; s < LV_N_STATES; s++)
      shd_metrics_add (m, "shadowd_libvirt_disks", dc.count[s], "uri", c->uri,
                       "state", lv_state_name (s), NULL);
  }
  for (guint i = 0; i < G_N_ELEMENTS (workers); i++)
    if (workers[i])
      shd_metrics_add (m, "shadowd_libvirt_calls_busy", shd_lv_worker_busy (workers[i]),
                       "worker", shd_lv_worker_name (workers[i]), NULL);
  if (lv->moves)
    lv_move_collect_metrics (lv, m);
}

/* ---- public ---- */

ShdLibvirt *
shd_libvirt_new (ShdDaemon *dm, char **uris, GError **error)
{
  static GOnce once = G_ONCE_INIT;
  g_autoptr (ShdLibvirt) lv = NULL;
  const char *init_error;

  if (uris == NULL || uris[0] == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "no libvirt URI");
    return NULL;
  }
  for (guint i = 0; uris[i]; i++)
    for (guint j = 0; j < i; j++)
      if (strcmp (uris[i], uris[j]) == 0) {
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                     "libvirt URI %s given twice", uris[i]);
        return NULL;
      }
  /* local: neither call talks to libvirtd */
  init_error = g_once (&once, init_libvirt, NULL);
  if (init_error) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot initialize libvirt: %s",
                 init_error);
    return NULL;
  }
  lv = g_object_new (SHD_TYPE_LIBVIRT, NULL);
  lv->dm = g_object_ref (dm);
  lv->config = shd_daemon_get_config (dm);
  lv->calls = shd_lv_worker_new ("calls", CALL_THREADS, error);
  if (lv->calls == NULL)
    return NULL;
  lv->monitor = shd_lv_worker_new ("monitor", MONITOR_THREADS, error);
  if (lv->monitor == NULL)
    return NULL;
  lv->mover = shd_lv_worker_new ("moves", 1, error);
  if (lv->mover == NULL)
    return NULL;
  shd_daemon_set_move_handler (dm, lv_move_handle, lv);
  /* libvirt's event loop, in a thread of its own (lvevents.h) */
  if (!shd_lv_events_start (error))
    return NULL;
  lv->events = TRUE;
  for (guint i = 0; uris[i]; i++)
    g_ptr_array_add (lv->conns, conn_new (lv, uris[i], i));
  shd_daemon_add_metrics_source (dm, collect_metrics, G_OBJECT (lv));
  return g_steal_pointer (&lv);
}

static gboolean
on_rescan (gpointer data)
{
  ShdLibvirt *lv = data;

  for (guint i = 0; i < lv->conns->len; i++) {
    Conn *c = lv->conns->pdata[i];
    g_autoptr (GList) doms = g_hash_table_get_values (c->doms);

    for (GList *l = doms; l; l = l->next)
      dom_reconcile (l->data);
  }
  return G_SOURCE_CONTINUE;
}

void
shd_libvirt_start (ShdLibvirt *lv)
{
  g_return_if_fail (!lv->started && !lv->stopping);
  lv->started = TRUE;
  for (guint i = 0; i < lv->conns->len; i++)
    conn_connect (lv->conns->pdata[i]);
  lv->rescan_id = g_timeout_add_seconds (LV_RESCAN_S, on_rescan, lv);
}

void
shd_libvirt_add_commands (ShdLibvirt *lv, ShdControl *ctl)
{
  lv_add_commands (lv, ctl);
}

/* ---- shutdown: cancel, wait, free ---- */

static void
shutdown_return (ShdLibvirt *lv)
{
  g_autoptr (GTask) task = g_steal_pointer (&lv->shutdown);
  guint dropped = 0;

  if (task == NULL)
    return;
  for (guint i = 0; i < lv->conns->len; i++)
    dropped += ((Conn *) lv->conns->pdata[i])->dropped;
  shd_log (G_LOG_LEVEL_INFO, NULL, "libvirt", "libvirt: stopped; %u events came "
           "during the stop and were dropped", dropped);
  g_clear_handle_id (&lv->grace_id, g_source_remove);
  /* at a low priority, the completion comes after the events still queued
   * at the default one: they find conn->lv NULL and only free themselves */
  g_task_set_priority (task, G_PRIORITY_LOW);
  g_task_return_boolean (task, TRUE);
}

/* The last job, in a worker: close the connections, stop libvirt's event
 * loop */
static void
close_thread (GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
  ShdLibvirt *lv = source;

  (void) data;
  (void) cancellable;
  for (guint i = 0; i < lv->conns->len; i++)
    conn_close_now (lv->conns->pdata[i]);
  shd_lv_events_stop ();
  g_task_return_boolean (task, TRUE);
}

static void
closed (GObject *src, GAsyncResult *res, gpointer data)
{
  ShdLibvirt *lv = SHD_LIBVIRT (src);

  (void) res;
  (void) data;
  if (lv->shutdown == NULL)
    return;                     /* the grace period ended first */
  shd_lv_worker_close (lv->calls);
  shd_lv_worker_close (lv->monitor);
  shd_lv_worker_close (lv->mover);
  shutdown_return (lv);
}

/* After each job while stopping: once none is left, the last one */
static void
shutdown_continue (ShdLibvirt *lv)
{
  GTask *task;

  if (lv->jobs > 0 || lv->shutdown == NULL || lv->closing)
    return;
  lv->closing = TRUE;
  /* not through lv_run: lv->cancel is cancelled, this one must run */
  task = g_task_new (lv, NULL, closed, NULL);
  g_task_set_source_tag (task, shutdown_continue);
  shd_lv_worker_run (lv->calls, task, close_thread);
}

static gboolean
grace_over (gpointer data)
{
  ShdLibvirt *lv = data;

  lv->grace_id = 0;
  shd_log (G_LOG_LEVEL_WARNING, NULL, "libvirt", "libvirt calls still in flight after %d s "
           "(%u jobs; libvirtd does not answer?): stopping without waiting for them",
           LV_GRACE_S, lv->jobs);
  shutdown_return (lv);
  return G_SOURCE_REMOVE;
}

void
shd_libvirt_shutdown_async (ShdLibvirt *lv, GAsyncReadyCallback callback, gpointer data)
{
  g_return_if_fail (lv->shutdown == NULL && !lv->stopping);
  lv->shutdown = g_task_new (lv, NULL, callback, data);
  g_task_set_source_tag (lv->shutdown, shd_libvirt_shutdown_async);
  lv->stopping = TRUE;
  g_cancellable_cancel (lv->cancel);
  g_clear_handle_id (&lv->rescan_id, g_source_remove);
  /* the agents of domain disks go now; the shadows stay in place */
  for (guint i = 0; i < lv->conns->len; i++)
    conn_detach (lv->conns->pdata[i]);
  lv->grace_id = g_timeout_add_seconds (LV_GRACE_S, grace_over, lv);
  shutdown_continue (lv);
}

gboolean
shd_libvirt_shutdown_finish (ShdLibvirt *lv, GAsyncResult *res, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (res, lv), FALSE);
  return g_task_propagate_boolean (G_TASK (res), error);
}

static void
shd_libvirt_dispose (GObject *object)
{
  ShdLibvirt *lv = SHD_LIBVIRT (object);

  /* without a shutdown: only on shadowd's error paths, before start */
  if (!lv->stopping) {
    lv->stopping = TRUE;
    g_cancellable_cancel (lv->cancel);
    g_clear_handle_id (&lv->rescan_id, g_source_remove);
    for (guint i = 0; lv->conns && i < lv->conns->len; i++)
      conn_detach (lv->conns->pdata[i]);
  }
  if (lv->calls)
    shd_lv_worker_close (lv->calls);
  if (lv->monitor)
    shd_lv_worker_close (lv->monitor);
  if (lv->mover)
    shd_lv_worker_close (lv->mover);
  if (lv->dm)
    shd_daemon_set_move_handler (lv->dm, NULL, NULL);
  if (!lv->started && lv->events)
    shd_lv_events_stop ();
  lv->events = FALSE;
  g_clear_object (&lv->dm);
  G_OBJECT_CLASS (shd_libvirt_parent_class)->dispose (object);
}

static void
shd_libvirt_finalize (GObject *object)
{
  ShdLibvirt *lv = SHD_LIBVIRT (object);

  g_ptr_array_unref (lv->conns);
  g_clear_pointer (&lv->calls, shd_lv_worker_unref);
  g_clear_pointer (&lv->monitor, shd_lv_worker_unref);
  g_clear_pointer (&lv->mover, shd_lv_worker_unref);
  g_hash_table_unref (lv->moves);
  g_object_unref (lv->cancel);
  G_OBJECT_CLASS (shd_libvirt_parent_class)->finalize (object);
}

static void
shd_libvirt_class_init (ShdLibvirtClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS (klass);

  oc->dispose = shd_libvirt_dispose;
  oc->finalize = shd_libvirt_finalize;
}

static void
shd_libvirt_init (ShdLibvirt *lv)
{
  lv->conns = g_ptr_array_new_with_free_func ((GDestroyNotify) conn_unref);
  lv->moves = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                     (GDestroyNotify) lv_move_unref);
  lv->cancel = g_cancellable_new ();
}
