/* Giving a released tier's space back: holes punched over the whole of
 * its image file (fallocate PUNCH_HOLE, the size kept), so the file reads
 * as zeroes and holds no blocks.  Only for a file that nothing writes any
 * more (the tier's child was removed from the shadow node) and that maps
 * the tier's data one to one (blockgraph.h says when).
 *
 * The punch is a blocking system call that may take a while on a large
 * file: it runs in a GTask thread (GLib's pool), touches nothing of the
 * main loop's, and completes on the caller's context. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

void shd_discard_file_async (const char *path, GCancellable *cancellable,
                             GAsyncReadyCallback callback, gpointer user_data);
/* Bytes the file had allocated before and has now; FALSE with error. */
gboolean shd_discard_file_finish (GAsyncResult *res, guint64 *before, guint64 *after,
                                  GError **error);

G_END_DECLS
