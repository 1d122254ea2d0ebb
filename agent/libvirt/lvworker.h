/* A pool of threads of its own for blocking libvirt calls.
 *
 * libvirt's API blocks until libvirtd answers, and a libvirtd that stops
 * answering blocks it for as long.  None of it may run on the main loop,
 * where every disk is sampled; nor in GLib's shared pool (g_task_run_in_
 * thread), where it would hold threads that GIO's own asynchronous work
 * needs.  A ShdLvWorker runs GTasks in threads that only it owns
 * (an exclusive GThreadPool).
 *
 * A task is completed from the worker thread (g_task_return_*); its
 * callback runs in the task's context as always, and the worker hands its
 * own reference back to that context too, so a task and its source
 * object are never finalized in a worker thread.  Reference-counted;
 * shd_lv_worker_close() waits for what is queued and running, and a task
 * given to a closed worker completes at once with G_IO_ERROR_CANCELLED. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef struct _ShdLvWorker ShdLvWorker;

ShdLvWorker *shd_lv_worker_new (const char *name, guint threads, GError **error);
ShdLvWorker *shd_lv_worker_ref (ShdLvWorker *w);
/* From the main thread (the last reference closes). */
void shd_lv_worker_unref (ShdLvWorker *w);

/* Runs func in one of the worker's threads.  Takes the reference on task.
 * A task whose cancellable is cancelled by then completes with
 * G_IO_ERROR_CANCELLED without running func. */
void shd_lv_worker_run (ShdLvWorker *w, GTask *task, GTaskThreadFunc func);
/* Tasks queued or running. */
guint shd_lv_worker_busy (ShdLvWorker *w);
const char *shd_lv_worker_name (ShdLvWorker *w);
/* Waits for the tasks queued and running, then stops the threads.  Not
 * from one of them. */
void shd_lv_worker_close (ShdLvWorker *w);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdLvWorker, shd_lv_worker_unref)

G_END_DECLS
