/* Giving a released tier's space back; see discard.h. */
#define _GNU_SOURCE
#include "discard.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  guint64 before, after;
} Freed;

static void
punch (GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
  const char *path = data;
  Freed *r = g_new0 (Freed, 1);
  struct stat st;
  int fd, saved;

  (void) source;
  (void) cancellable;
  fd = g_open (path, O_WRONLY | O_CLOEXEC, 0);
  if (fd < 0 || fstat (fd, &st) != 0) {
    saved = errno;
    if (fd >= 0)
      close (fd);
    g_free (r);
    g_task_return_new_error (task, G_IO_ERROR, g_io_error_from_errno (saved),
                             "%s: %s", path, g_strerror (saved));
    return;
  }
  r->before = (guint64) st.st_blocks * 512;
  if (st.st_size > 0 &&
      fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, st.st_size) != 0) {
    saved = errno;
    close (fd);
    g_free (r);
    g_task_return_new_error (task, G_IO_ERROR, g_io_error_from_errno (saved),
                             "%s: cannot punch holes: %s", path, g_strerror (saved));
    return;
  }
  if (fstat (fd, &st) == 0)
    r->after = (guint64) st.st_blocks * 512;
  close (fd);
  g_task_return_pointer (task, r, g_free);
}

void
shd_discard_file_async (const char *path, GCancellable *cancellable,
                        GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = g_task_new (NULL, cancellable, callback, user_data);

  g_task_set_source_tag (task, shd_discard_file_async);
  g_task_set_task_data (task, g_strdup (path), g_free);
  g_task_run_in_thread (task, punch);
}

gboolean
shd_discard_file_finish (GAsyncResult *res, guint64 *before, guint64 *after, GError **error)
{
  g_autofree Freed *r = g_task_propagate_pointer (G_TASK (res), error);

  if (r == NULL)
    return FALSE;
  *before = r->before;
  *after = r->after;
  return TRUE;
}
