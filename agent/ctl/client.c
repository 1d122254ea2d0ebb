/* The control socket's client; see client.h. */
#include "client.h"

#include <gio/gunixsocketaddress.h>
#include <string.h>

#define CLIENT_MAX_LINE (256 * 1024 * 1024)

JsonNode *
shd_control_call (const char *path, JsonObject *request, guint timeout_ms, GError **error)
{
  g_autoptr (GSocketClient) client = g_socket_client_new ();
  g_autoptr (GSocketAddress) addr = g_unix_socket_address_new (path);
  g_autoptr (GSocketConnection) conn = NULL;
  g_autoptr (JsonNode) req = json_node_new (JSON_NODE_OBJECT);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GByteArray) buf = g_byte_array_new ();
  g_autofree char *text = NULL;
  GInputStream *in;
  JsonObject *o;
  char chunk[65536];

  g_socket_client_set_timeout (client, (timeout_ms + 999) / 1000);
  conn = g_socket_client_connect (client, G_SOCKET_CONNECTABLE (addr), NULL, error);
  if (conn == NULL) {
    g_prefix_error (error, "cannot reach shadowd at %s: ", path);
    return NULL;
  }
  json_node_set_object (req, request);
  text = json_to_string (req, FALSE);
  if (!g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (conn)),
                                  text, strlen (text), NULL, NULL, error) ||
      !g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (conn)),
                                  "\n", 1, NULL, NULL, error))
    return NULL;
  in = g_io_stream_get_input_stream (G_IO_STREAM (conn));
  while (buf->len == 0 || memchr (buf->data, '\n', buf->len) == NULL) {
    gssize n = g_input_stream_read (in, chunk, sizeof chunk, NULL, error);

    if (n < 0)
      return NULL;
    if (n == 0) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                   "shadowd closed the connection without an answer");
      return NULL;
    }
    if (buf->len + n > CLIENT_MAX_LINE) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE, "answer too long");
      return NULL;
    }
    g_byte_array_append (buf, (guint8 *) chunk, n);
  }
  if (!json_parser_load_from_data (parser, (char *) buf->data,
                                   (guint8 *) memchr (buf->data, '\n', buf->len) - buf->data,
                                   error))
    return NULL;
  if (!JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser))) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "malformed answer");
    return NULL;
  }
  o = json_node_get_object (json_parser_get_root (parser));
  if (json_object_has_member (o, "error")) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s",
                 json_object_get_string_member_with_default (o, "error", "error"));
    return NULL;
  }
  if (!json_object_has_member (o, "return")) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "malformed answer");
    return NULL;
  }
  return json_node_copy (json_object_get_member (o, "return"));
}
