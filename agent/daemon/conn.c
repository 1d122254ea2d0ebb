/* A request/answer connection; see conn.h. */
#include "conn.h"

#include <string.h>

#define READ_CHUNK 4096

struct _ShdConn {
  GSocketConnection *stream;
  ShdConnFraming framing;
  gsize max;
  GObject *owner;
  ShdConnRequestFunc func;
  GCancellable *cancel;
  GByteArray *buf;              /* read, not yet handled */
  gboolean busy;                /* a request is with the server */
  gboolean closing;
  GBytes *answer;               /* being written */
};

static void conn_next (ShdConn *c);

static void
conn_clear (ShdConn *c)
{
  g_io_stream_close (G_IO_STREAM (c->stream), NULL, NULL);
  g_object_unref (c->stream);
  g_object_unref (c->owner);
  g_object_unref (c->cancel);
  g_byte_array_unref (c->buf);
  g_clear_pointer (&c->answer, g_bytes_unref);
}

ShdConn *
shd_conn_ref (ShdConn *c)
{
  return g_rc_box_acquire (c);
}

void
shd_conn_unref (ShdConn *c)
{
  g_rc_box_release_full (c, (GDestroyNotify) conn_clear);
}

static void
on_read (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (ShdConn) c = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) bytes = g_input_stream_read_bytes_finish (G_INPUT_STREAM (src), res,
                                                               &error);
  gsize n = 0;
  const guint8 *p;

  if (bytes == NULL || g_bytes_get_size (bytes) == 0)
    return;                     /* EOF, error or cancelled: the last reference goes */
  p = g_bytes_get_data (bytes, &n);
  g_byte_array_append (c->buf, p, n);
  conn_next (c);
}

/* The end of the first complete request in buf, or NULL; *skip: the
 * length of its terminator. */
static const guint8 *
request_end (ShdConn *c, gsize *skip)
{
  const char *data = (const char *) c->buf->data;

  if (c->buf->len == 0)
    return NULL;
  if (c->framing == SHD_CONN_LINES) {
    *skip = 1;
    return memchr (c->buf->data, '\n', c->buf->len);
  }
  for (gsize i = 0; i + 1 < c->buf->len; i++) {
    if (data[i] != '\n')
      continue;
    if (data[i + 1] == '\n') {
      *skip = 2;
      return c->buf->data + i;
    }
    if (i + 2 < c->buf->len && data[i + 1] == '\r' && data[i + 2] == '\n') {
      *skip = 3;
      return c->buf->data + i;
    }
  }
  return NULL;
}

/* Hands the next buffered request to the server, or reads more. */
static void
conn_next (ShdConn *c)
{
  const guint8 *end;
  gsize skip = 0;

  if (c->busy || c->closing || g_cancellable_is_cancelled (c->cancel))
    return;
  end = request_end (c, &skip);
  if (end == NULL) {
    if (c->buf->len > c->max) {
      g_debug ("connection: request longer than %" G_GSIZE_FORMAT " bytes, closing", c->max);
      return;                   /* unanswered: the last reference goes */
    }
    g_input_stream_read_bytes_async (g_io_stream_get_input_stream (G_IO_STREAM (c->stream)),
                                     READ_CHUNK, G_PRIORITY_DEFAULT, c->cancel, on_read,
                                     shd_conn_ref (c));
    return;
  }
  {
    gsize len = end - c->buf->data;
    g_autofree char *request = g_strndup ((const char *) c->buf->data, len);

    g_byte_array_remove_range (c->buf, 0, len + skip);
    c->busy = TRUE;
    c->func (c->owner, c, request, len);
  }
}

static void
on_written (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (ShdConn) c = data;

  g_clear_pointer (&c->answer, g_bytes_unref);
  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (src), res, NULL, NULL) ||
      c->closing)
    return;
  c->busy = FALSE;
  conn_next (c);
}

void
shd_conn_reply (ShdConn *c, const char *answer, gsize len, gboolean close_after)
{
  gsize n;
  const char *p;

  g_return_if_fail (c->busy && c->answer == NULL);
  c->closing = close_after;
  if (len == 0) {
    if (!close_after) {
      c->busy = FALSE;
      conn_next (c);
    }
    return;
  }
  c->answer = g_bytes_new (answer, len);
  p = g_bytes_get_data (c->answer, &n);
  g_output_stream_write_all_async (g_io_stream_get_output_stream (G_IO_STREAM (c->stream)),
                                   p, n, G_PRIORITY_DEFAULT, c->cancel, on_written,
                                   shd_conn_ref (c));
}

ShdConn *
shd_conn_start (GSocketConnection *stream, ShdConnFraming framing, gsize max_request,
                GObject *owner, ShdConnRequestFunc func, GCancellable *cancellable)
{
  ShdConn *c = g_rc_box_new0 (ShdConn);

  c->stream = g_object_ref (stream);
  c->framing = framing;
  c->max = max_request;
  c->owner = g_object_ref (owner);
  c->func = func;
  c->cancel = g_object_ref (cancellable);
  c->buf = g_byte_array_new ();
  conn_next (c);
  return c;
}
