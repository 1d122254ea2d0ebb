/* The metrics endpoint; see http.h. */
#include "http.h"

#include "conn.h"

#include <string.h>

#define HTTP_MAX_REQUEST (8 * 1024)

struct _ShdHttpServer {
  GObject parent_instance;
  GSocketService *service;
  GCancellable *cancel;
  guint port;
  ShdHttpMetricsFunc func;
  GObject *owner;
};

G_DEFINE_TYPE (ShdHttpServer, shd_http_server, G_TYPE_OBJECT)

static void
on_request (GObject *owner, ShdConn *conn, const char *req, gsize len)
{
  ShdHttpServer *srv = SHD_HTTP_SERVER (owner);
  const char *eol = memchr (req, '\n', len);
  g_autofree char *first = g_strndup (req, eol ? (gsize) (eol - req) : len);
  g_auto (GStrv) parts = NULL;
  g_autofree char *body = NULL;
  g_autofree char *answer = NULL;
  const char *status = "200 OK";

  g_strchomp (first);
  parts = g_strsplit (first, " ", 3);
  if (g_strv_length (parts) < 2 || strcmp (parts[0], "GET") != 0) {
    status = "405 Method Not Allowed";
    body = g_strdup ("only GET\n");
  } else if (strcmp (parts[1], "/metrics") == 0) {
    body = srv->func (srv->owner);
  } else if (strcmp (parts[1], "/") == 0) {
    body = g_strdup ("shadowd: metrics at /metrics\n");
  } else {
    status = "404 Not Found";
    body = g_strdup ("not found\n");
  }
  answer = g_strdup_printf ("HTTP/1.0 %s\r\n"
                            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                            "Content-Length: %" G_GSIZE_FORMAT "\r\n"
                            "Connection: close\r\n\r\n%s", status, strlen (body), body);
  shd_conn_reply (conn, answer, strlen (answer), TRUE);
}

static gboolean
on_incoming (GSocketService *service, GSocketConnection *stream, GObject *src,
             gpointer data)
{
  ShdHttpServer *srv = data;
  g_autoptr (ShdConn) conn = NULL;

  (void) service;
  (void) src;
  conn = shd_conn_start (stream, SHD_CONN_HTTP, HTTP_MAX_REQUEST, G_OBJECT (srv),
                         on_request, srv->cancel);
  return TRUE;
}

ShdHttpServer *
shd_http_server_new (const char *address, guint port, ShdHttpMetricsFunc func,
                     GObject *owner, GError **error)
{
  g_autoptr (ShdHttpServer) srv = NULL;
  g_autoptr (GInetAddress) ia = g_inet_address_new_from_string (address);
  g_autoptr (GSocketAddress) addr = NULL, bound = NULL;

  if (ia == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "'%s' is not an IP address", address);
    return NULL;
  }
  srv = g_object_new (SHD_TYPE_HTTP_SERVER, NULL);
  srv->func = func;
  srv->owner = g_object_ref (owner);
  addr = g_inet_socket_address_new (ia, port);
  if (!g_socket_listener_add_address (G_SOCKET_LISTENER (srv->service), addr,
                                      G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP,
                                      NULL, &bound, error)) {
    g_prefix_error (error, "metrics on %s port %u: ", address, port);
    return NULL;
  }
  srv->port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  g_signal_connect_object (srv->service, "incoming", G_CALLBACK (on_incoming), srv, 0);
  g_socket_service_start (srv->service);
  return g_steal_pointer (&srv);
}

guint
shd_http_server_get_port (ShdHttpServer *srv)
{
  return srv->port;
}

void
shd_http_server_close (ShdHttpServer *srv)
{
  g_cancellable_cancel (srv->cancel);
  g_socket_service_stop (srv->service);
  g_socket_listener_close (G_SOCKET_LISTENER (srv->service));
}

static void
shd_http_server_dispose (GObject *object)
{
  ShdHttpServer *srv = SHD_HTTP_SERVER (object);

  shd_http_server_close (srv);
  g_clear_object (&srv->owner);
  G_OBJECT_CLASS (shd_http_server_parent_class)->dispose (object);
}

static void
shd_http_server_finalize (GObject *object)
{
  ShdHttpServer *srv = SHD_HTTP_SERVER (object);

  g_object_unref (srv->service);
  g_object_unref (srv->cancel);
  G_OBJECT_CLASS (shd_http_server_parent_class)->finalize (object);
}

static void
shd_http_server_class_init (ShdHttpServerClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS (klass);

  oc->dispose = shd_http_server_dispose;
  oc->finalize = shd_http_server_finalize;
}

static void
shd_http_server_init (ShdHttpServer *srv)
{
  srv->service = g_socket_service_new ();
  srv->cancel = g_cancellable_new ();
}
