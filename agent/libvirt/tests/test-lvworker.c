/* The libvirt layer's worker: tasks run in threads of its own, complete
 * in the caller's context, are skipped once cancelled, and a closed worker
 * waits for what it had and refuses what comes later. */
#include "lvworker.h"

static GMutex lock;
static GHashTable *threads;     /* GThread seen running tasks */

static void
sleepy (GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
  (void) source;
  (void) cancellable;
  g_mutex_lock (&lock);
  g_hash_table_add (threads, g_thread_self ());
  g_mutex_unlock (&lock);
  g_usleep (GPOINTER_TO_UINT (data) * 1000);
  g_task_return_boolean (task, TRUE);
}

typedef struct {
  guint done, ok, cancelled;
  GThread *main;
} Counts;

static void
finished (GObject *src, GAsyncResult *res, gpointer data)
{
  Counts *c = data;
  g_autoptr (GError) error = NULL;

  (void) src;
  g_assert_true (g_thread_self () == c->main);
  if (g_task_propagate_boolean (G_TASK (res), &error))
    c->ok++;
  else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    c->cancelled++;
  c->done++;
}

static void
test_threads (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdLvWorker) w = shd_lv_worker_new ("test", 2, &error);
  g_autoptr (GCancellable) cancel = g_cancellable_new ();
  Counts c = { 0, 0, 0, g_thread_self () };
  gint64 t0 = g_get_monotonic_time ();

  g_assert_no_error (error);
  threads = g_hash_table_new (NULL, NULL);
  /* 4 tasks of 100 ms on 2 threads: about 200 ms, in 2 threads */
  for (guint i = 0; i < 4; i++) {
    GTask *t = g_task_new (NULL, NULL, finished, &c);

    g_task_set_task_data (t, GUINT_TO_POINTER (100), NULL);
    shd_lv_worker_run (w, t, sleepy);
  }
  /* and one cancelled before its turn: skipped */
  {
    GTask *t = g_task_new (NULL, cancel, finished, &c);

    g_task_set_task_data (t, GUINT_TO_POINTER (1000), NULL);
    g_cancellable_cancel (cancel);
    shd_lv_worker_run (w, t, sleepy);
  }
  g_assert_cmpuint (shd_lv_worker_busy (w), >=, 1);
  while (c.done < 5)
    g_main_context_iteration (NULL, TRUE);
  g_assert_cmpuint (c.ok, ==, 4);
  g_assert_cmpuint (c.cancelled, ==, 1);
  g_assert_cmpuint (g_hash_table_size (threads), ==, 2);
  g_assert_false (g_hash_table_contains (threads, g_thread_self ()));
  g_assert_cmpint (g_get_monotonic_time () - t0, >=, 190 * 1000);
  /* a worker counts a task done once its function returned, which may be
   * just after the callback ran here */
  for (guint i = 0; i < 1000 && shd_lv_worker_busy (w) > 0; i++)
    g_usleep (1000);
  g_assert_cmpuint (shd_lv_worker_busy (w), ==, 0);

  /* close waits for what is queued; then refuses */
  {
    GTask *t = g_task_new (NULL, NULL, finished, &c);

    g_task_set_task_data (t, GUINT_TO_POINTER (50), NULL);
    shd_lv_worker_run (w, t, sleepy);
  }
  shd_lv_worker_close (w);
  g_assert_cmpuint (shd_lv_worker_busy (w), ==, 0);
  {
    GTask *t = g_task_new (NULL, NULL, finished, &c);

    shd_lv_worker_run (w, t, sleepy);
  }
  while (c.done < 7)
    g_main_context_iteration (NULL, TRUE);
  g_assert_cmpuint (c.ok, ==, 5);
  g_assert_cmpuint (c.cancelled, ==, 2);
  g_hash_table_unref (threads);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/lvworker/threads", test_threads);
  return g_test_run ();
}
