/* The control socket and the metrics endpoint; see control.h. */
#include "control.h"

#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <string.h>

#define CONTROL_MAX_LINE (64 * 1024)
#define HTTP_MAX_REQUEST (8 * 1024)

/* ---- one connection: read lines, answer, repeat ---- */

typedef struct Conn Conn;
typedef gboolean (*ConnLineFunc) (Conn *c, const char *line, gsize len, GString *reply);

struct Conn {
  GSocketConnection *conn;
  GCancellable *cancel;
  GByteArray *buf;
  gsize max;
  ConnLineFunc on_line;         /* FALSE: close after the reply */
  gpointer handler;             /* ShdControlHandler or ShdMetricsFunc */
  gpointer data;
  gboolean http;                /* a request ends at an empty line */
  gboolean closing;
  GString *reply;
};

static void conn_read (Conn *c);

static void
conn_free (Conn *c)
{
  g_io_stream_close (G_IO_STREAM (c->conn), NULL, NULL);
  g_object_unref (c->conn);
  g_object_unref (c->cancel);
  g_byte_array_unref (c->buf);
  if (c->reply)
    g_string_free (c->reply, TRUE);
  g_free (c);
}

static void
conn_written (GObject *src, GAsyncResult *res, gpointer data)
{
  Conn *c = data;
  g_autoptr (GError) error = NULL;

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (src), res, NULL, &error) ||
      c->closing) {
    conn_free (c);
    return;
  }
  g_string_truncate (c->reply, 0);
  conn_read (c);
}

static void
conn_flush (Conn *c)
{
  GOutputStream *out = g_io_stream_get_output_stream (G_IO_STREAM (c->conn));

  if (c->reply->len == 0) {
    if (c->closing)
      conn_free (c);
    else
      conn_read (c);
    return;
  }
  g_output_stream_write_all_async (out, c->reply->str, c->reply->len, G_PRIORITY_DEFAULT,
                                   c->cancel, conn_written, c);
}

/* Consumes complete requests in buf; FALSE once the connection should end. */
static void
conn_process (Conn *c)
{
  for (;;) {
    guint8 *nl = c->buf->len ? memchr (c->buf->data, '\n', c->buf->len) : NULL;
    gsize len;

    if (c->http && nl) {
      /* the end of the headers: "\n\n" or "\r\n\r\n" */
      char *end = g_strstr_len ((char *) c->buf->data, c->buf->len, "\n\r\n");

      if (end == NULL)
        end = g_strstr_len ((char *) c->buf->data, c->buf->len, "\n\n");
      nl = end ? (guint8 *) end : NULL;
    }
    if (nl == NULL)
      break;
    len = nl - c->buf->data;
    if (!c->on_line (c, (char *) c->buf->data, len, c->reply))
      c->closing = TRUE;
    g_byte_array_remove_range (c->buf, 0, len + 1);
    if (c->closing)
      break;
  }
  if (!c->closing && c->buf->len > c->max) {
    g_debug ("control: request longer than %" G_GSIZE_FORMAT " bytes, closing", c->max);
    c->closing = TRUE;
  }
  conn_flush (c);
}

static void
conn_got (GObject *src, GAsyncResult *res, gpointer data)
{
  Conn *c = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) bytes = g_input_stream_read_bytes_finish (G_INPUT_STREAM (src),
                                                                res, &error);
  gsize n = 0;
  const guint8 *p;

  if (bytes == NULL || g_bytes_get_size (bytes) == 0) {
    conn_free (c);              /* EOF, error or cancelled */
    return;
  }
  p = g_bytes_get_data (bytes, &n);
  g_byte_array_append (c->buf, p, n);
  conn_process (c);
}

static void
conn_read (Conn *c)
{
  GInputStream *in = g_io_stream_get_input_stream (G_IO_STREAM (c->conn));

  g_input_stream_read_bytes_async (in, 4096, G_PRIORITY_DEFAULT, c->cancel, conn_got, c);
}

static Conn *
conn_new (GSocketConnection *conn, GCancellable *cancel, gsize max, ConnLineFunc f,
          gpointer handler, gpointer data)
{
  Conn *c = g_new0 (Conn, 1);

  c->conn = g_object_ref (conn);
  c->cancel = g_object_ref (cancel);
  c->buf = g_byte_array_new ();
  c->max = max;
  c->on_line = f;
  c->handler = handler;
  c->data = data;
  c->reply = g_string_new (NULL);
  return c;
}

/* ---- control ---- */

struct _ShdControl {
  GSocketService *service;
  GCancellable *cancel;
  char *path;
  ShdControlHandler handler;
  gpointer data;
};

static void
append_json (GString *out, JsonNode *node)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autofree char *text = NULL;

  json_generator_set_root (gen, node);
  text = json_generator_to_data (gen, NULL);
  g_string_append (out, text);
  g_string_append_c (out, '\n');
}

static void
append_error (GString *out, const char *msg)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonNode) n = NULL;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "error");
  json_builder_add_string_value (b, msg);
  json_builder_end_object (b);
  n = json_builder_get_root (b);
  append_json (out, n);
}

static gboolean
control_line (Conn *c, const char *line, gsize len, GString *reply)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = NULL;
  JsonNode *root;

  while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
    len--;
  if (len == 0)
    return TRUE;
  if (!json_parser_load_from_data (parser, line, len, &error)) {
    append_error (reply, error->message);
    return TRUE;
  }
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root)) {
    append_error (reply, "a request is a JSON object");
    return TRUE;
  }
  ret = ((ShdControlHandler) c->handler) (json_node_get_object (root), c->data, &error);
  if (ret == NULL) {
    append_error (reply, error ? error->message : "failed");
  } else {
    JsonObject *o = json_object_new ();
    g_autoptr (JsonNode) n = json_node_new (JSON_NODE_OBJECT);

    json_object_set_member (o, "return", g_steal_pointer (&ret));
    json_node_take_object (n, o);
    append_json (reply, n);
  }
  return TRUE;
}

static gboolean
control_incoming (GSocketService *service, GSocketConnection *conn, GObject *src,
                  gpointer data)
{
  ShdControl *ctl = data;

  (void) service;
  (void) src;
  conn_read (conn_new (conn, ctl->cancel, CONTROL_MAX_LINE, control_line,
                       ctl->handler, ctl->data));
  return TRUE;
}

ShdControl *
shd_control_new (const char *path, ShdControlHandler handler, gpointer data,
                 GError **error)
{
  g_autoptr (ShdControl) ctl = g_new0 (ShdControl, 1);
  g_autoptr (GSocketAddress) addr = NULL;
  g_autofree char *dir = g_path_get_dirname (path);

  ctl->path = g_strdup (path);
  ctl->handler = handler;
  ctl->data = data;
  ctl->cancel = g_cancellable_new ();
  ctl->service = g_socket_service_new ();
  if (g_mkdir_with_parents (dir, 0755) < 0) {
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno),
                 "cannot create %s: %s", dir, g_strerror (errno));
    return NULL;
  }
  /* a socket left by an earlier run */
  if (g_file_test (path, G_FILE_TEST_EXISTS) && !g_file_test (path, G_FILE_TEST_IS_REGULAR))
    g_unlink (path);
  addr = g_unix_socket_address_new (path);
  if (!g_socket_listener_add_address (G_SOCKET_LISTENER (ctl->service), addr,
                                      G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT,
                                      NULL, NULL, error)) {
    g_prefix_error (error, "control socket %s: ", path);
    g_clear_pointer (&ctl->path, g_free);  /* not ours to remove */
    return NULL;
  }
  g_chmod (path, 0660);
  g_signal_connect (ctl->service, "incoming", G_CALLBACK (control_incoming), ctl);
  g_socket_service_start (ctl->service);
  return g_steal_pointer (&ctl);
}

void
shd_control_free (ShdControl *c)
{
  if (c == NULL)
    return;
  g_cancellable_cancel (c->cancel);
  g_socket_service_stop (c->service);
  g_socket_listener_close (G_SOCKET_LISTENER (c->service));
  g_signal_handlers_disconnect_by_data (c->service, c);
  g_object_unref (c->service);
  g_object_unref (c->cancel);
  if (c->path)
    g_unlink (c->path);
  g_free (c->path);
  g_free (c);
}

/* ---- metrics ---- */

struct _ShdMetrics {
  GSocketService *service;
  GCancellable *cancel;
  guint port;
  ShdMetricsFunc func;
  gpointer data;
};

static gboolean
http_request (Conn *c, const char *req, gsize len, GString *reply)
{
  g_autofree char *first = NULL;
  const char *eol = memchr (req, '\n', len);
  g_auto (GStrv) parts = NULL;
  GString *body = g_string_new (NULL);
  const char *status = "200 OK";

  first = g_strndup (req, eol ? (gsize) (eol - req) : len);
  g_strchomp (first);
  parts = g_strsplit (first, " ", 3);
  if (g_strv_length (parts) < 2 || strcmp (parts[0], "GET") != 0) {
    status = "405 Method Not Allowed";
    g_string_append (body, "only GET\n");
  } else if (strcmp (parts[1], "/metrics") == 0) {
    ((ShdMetricsFunc) c->handler) (body, c->data);
  } else if (strcmp (parts[1], "/") == 0) {
    g_string_append (body, "shadowd: metrics at /metrics\n");
  } else {
    status = "404 Not Found";
    g_string_append (body, "not found\n");
  }
  g_string_append_printf (reply, "HTTP/1.0 %s\r\n"
                          "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                          "Content-Length: %" G_GSIZE_FORMAT "\r\n"
                          "Connection: close\r\n\r\n", status, body->len);
  g_string_append_len (reply, body->str, body->len);
  g_string_free (body, TRUE);
  return FALSE;                 /* HTTP/1.0: one request per connection */
}

static gboolean
metrics_incoming (GSocketService *service, GSocketConnection *conn, GObject *src,
                  gpointer data)
{
  ShdMetrics *m = data;
  Conn *c;

  (void) service;
  (void) src;
  c = conn_new (conn, m->cancel, HTTP_MAX_REQUEST, http_request, m->func, m->data);
  c->http = TRUE;
  conn_read (c);
  return TRUE;
}

ShdMetrics *
shd_metrics_new (const char *address, guint port, ShdMetricsFunc func, gpointer data,
                 GError **error)
{
  g_autoptr (ShdMetrics) m = g_new0 (ShdMetrics, 1);
  g_autoptr (GInetAddress) ia = g_inet_address_new_from_string (address);
  g_autoptr (GSocketAddress) addr = NULL, bound = NULL;

  m->func = func;
  m->data = data;
  m->cancel = g_cancellable_new ();
  m->service = g_socket_service_new ();
  if (ia == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "'%s' is not an IP address", address);
    return NULL;
  }
  addr = g_inet_socket_address_new (ia, port);
  if (!g_socket_listener_add_address (G_SOCKET_LISTENER (m->service), addr,
                                      G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP,
                                      NULL, &bound, error)) {
    g_prefix_error (error, "metrics on %s port %u: ", address, port);
    return NULL;
  }
  m->port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  g_signal_connect (m->service, "incoming", G_CALLBACK (metrics_incoming), m);
  g_socket_service_start (m->service);
  return g_steal_pointer (&m);
}

guint
shd_metrics_port (ShdMetrics *m)
{
  return m->port;
}

void
shd_metrics_free (ShdMetrics *m)
{
  if (m == NULL)
    return;
  g_cancellable_cancel (m->cancel);
  g_socket_service_stop (m->service);
  g_socket_listener_close (G_SOCKET_LISTENER (m->service));
  g_signal_handlers_disconnect_by_data (m->service, m);
  g_object_unref (m->service);
  g_object_unref (m->cancel);
  g_free (m);
}
