/* A pool of threads for libvirt calls; see lvworker.h. */
#include "lvworker.h"

struct _ShdLvWorker {
  char *name;
  GMutex lock;                  /* guards pool */
  GThreadPool *pool;            /* NULL once closed */
  gint busy;
};

typedef struct {
  GTask *task;
  GTaskThreadFunc func;
} Job;

static gboolean
unref_in_context (gpointer task)
{
  g_object_unref (task);
  return G_SOURCE_REMOVE;
}

/* The worker's reference goes back to the task's context: if it is the
 * last one, the task (and its source object) are finalized there. */
static void
release (GTask *task)
{
  g_main_context_invoke_full (g_task_get_context (task), G_PRIORITY_DEFAULT,
                              unref_in_context, task, NULL);
}

static void
job_run (gpointer data, gpointer user_data)
{
  Job *job = data;
  ShdLvWorker *w = user_data;
  GTask *task = job->task;

  if (!g_task_return_error_if_cancelled (task))
    job->func (task, g_task_get_source_object (task), g_task_get_task_data (task),
               g_task_get_cancellable (task));
  g_atomic_int_dec_and_test (&w->busy);
  release (task);
  g_free (job);
}

ShdLvWorker *
shd_lv_worker_new (const char *name, guint threads, GError **error)
{
  ShdLvWorker *w = g_atomic_rc_box_new0 (ShdLvWorker);

  w->name = g_strdup (name);
  g_mutex_init (&w->lock);
  w->pool = g_thread_pool_new (job_run, w, (int) threads, TRUE, error);
  if (w->pool == NULL) {
    shd_lv_worker_unref (w);
    return NULL;
  }
  return w;
}

ShdLvWorker *
shd_lv_worker_ref (ShdLvWorker *w)
{
  return g_atomic_rc_box_acquire (w);
}

static void
worker_clear (ShdLvWorker *w)
{
  shd_lv_worker_close (w);
  g_mutex_clear (&w->lock);
  g_free (w->name);
}

void
shd_lv_worker_unref (ShdLvWorker *w)
{
  g_atomic_rc_box_release_full (w, (GDestroyNotify) worker_clear);
}

const char *
shd_lv_worker_name (ShdLvWorker *w)
{
  return w->name;
}

guint
shd_lv_worker_busy (ShdLvWorker *w)
{
  return (guint) g_atomic_int_get (&w->busy);
}

void
shd_lv_worker_run (ShdLvWorker *w, GTask *task, GTaskThreadFunc func)
{
  Job *job;

  g_mutex_lock (&w->lock);
  if (w->pool == NULL) {
    g_mutex_unlock (&w->lock);
    g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_CANCELLED,
                             "%s: shadowd is stopping", w->name);
    g_object_unref (task);
    return;
  }
  job = g_new0 (Job, 1);
  job->task = task;
  job->func = func;
  g_atomic_int_inc (&w->busy);
  g_thread_pool_push (w->pool, job, NULL);
  g_mutex_unlock (&w->lock);
}

void
shd_lv_worker_close (ShdLvWorker *w)
{
  GThreadPool *pool;

  g_mutex_lock (&w->lock);
  pool = g_steal_pointer (&w->pool);
  g_mutex_unlock (&w->lock);
  if (pool)
    g_thread_pool_free (pool, FALSE, TRUE);
}
