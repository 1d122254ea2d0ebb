/* The control socket and the metrics endpoint, with their clients in a
 * thread of the same process. */
#include "control.h"

#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <string.h>

static char *dir, *path;

static JsonNode *
handler (JsonObject *req, gpointer data, GError **error)
{
  const char *cmd = json_object_get_string_member_with_default (req, "command", "");
  JsonNode *n;

  (*(guint *) data)++;
  if (strcmp (cmd, "fail") == 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "it failed as asked");
    return NULL;
  }
  n = json_node_new (JSON_NODE_OBJECT);
  json_node_take_object (n, json_object_new ());
  json_object_set_string_member (json_node_get_object (n), "echo", cmd);
  return n;
}

typedef struct {
  GThreadFunc func;
  gpointer arg;
  gpointer result;
  gboolean done;
} Job;

static gpointer
job_run (gpointer p)
{
  Job *j = p;

  j->result = j->func (j->arg);
  g_atomic_int_set (&j->done, TRUE);
  g_main_context_wakeup (NULL);
  return NULL;
}

/* Runs func in a thread while the main context serves. */
static gpointer
in_thread (GThreadFunc func, gpointer arg)
{
  Job j = { func, arg, NULL, FALSE };
  GThread *t = g_thread_new ("client", job_run, &j);

  while (!g_atomic_int_get (&j.done))
    g_main_context_iteration (NULL, TRUE);
  g_thread_join (t);
  return j.result;
}

/* Sends raw bytes, returns what comes back until EOF or the first line. */
static gpointer
raw (gpointer data)
{
  const char *text = data;
  g_autoptr (GSocketClient) client = g_socket_client_new ();
  g_autoptr (GSocketAddress) addr = g_unix_socket_address_new (path);
  g_autoptr (GSocketConnection) conn = g_socket_client_connect (client,
    G_SOCKET_CONNECTABLE (addr), NULL, NULL);
  GString *out = g_string_new (NULL);
  char buf[4096];
  gssize n;

  g_assert_nonnull (conn);
  g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (conn)), text,
                             strlen (text), NULL, NULL, NULL);
  while ((n = g_input_stream_read (g_io_stream_get_input_stream (G_IO_STREAM (conn)),
                                   buf, sizeof buf, NULL, NULL)) > 0) {
    g_string_append_len (out, buf, n);
    if (memchr (buf, '\n', n))
      break;
  }
  return g_string_free (out, FALSE);
}

static void
test_control (void)
{
  g_autoptr (GError) error = NULL;
  guint calls = 0;
  g_autoptr (ShdControl) ctl = shd_control_new (path, handler, &calls, &error);
  g_autofree char *a = NULL, *b = NULL, *c = NULL, *d = NULL, *big = NULL, *e = NULL;

  g_assert_no_error (error);
  a = in_thread (raw, (gpointer) "{\"command\":\"status\"}\n");
  g_assert_cmpstr (a, ==, "{\"return\":{\"echo\":\"status\"}}\n");
  b = in_thread (raw, (gpointer) "{\"command\":\"fail\"}\n");
  g_assert_cmpstr (b, ==, "{\"error\":\"it failed as asked\"}\n");
  c = in_thread (raw, (gpointer) "this is not json\n");
  g_assert_true (g_str_has_prefix (c, "{\"error\":"));
  d = in_thread (raw, (gpointer) "[1, 2]\n");
  g_assert_cmpstr (d, ==, "{\"error\":\"a request is a JSON object\"}\n");
  /* two requests on one connection, the answers in order */
  e = in_thread (raw, (gpointer) "{\"command\":\"one\"}\n");
  g_assert_cmpstr (e, ==, "{\"return\":{\"echo\":\"one\"}}\n");
  /* a line over the cap: the connection is closed without an answer */
  big = g_strnfill (100 * 1024, 'x');
  {
    g_autofree char *r = in_thread (raw, big);
    g_assert_cmpstr (r, ==, "");
  }
  g_assert_cmpuint (calls, ==, 3);
  /* the socket file is removed on close; a stale one is replaced */
  g_clear_pointer (&ctl, shd_control_free);
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS));
}

static void
test_stale_socket (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocket) s = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, 0, NULL);
  g_autoptr (GSocketAddress) addr = g_unix_socket_address_new (path);
  guint calls = 0;
  g_autoptr (ShdControl) ctl = NULL;
  g_autofree char *a = NULL;

  g_assert_true (g_socket_bind (s, addr, TRUE, &error));
  g_socket_close (s, NULL);
  g_assert_true (g_file_test (path, G_FILE_TEST_EXISTS));
  ctl = shd_control_new (path, handler, &calls, &error);
  g_assert_no_error (error);
  a = in_thread (raw, (gpointer) "{\"command\":\"x\"}\n");
  g_assert_cmpstr (a, ==, "{\"return\":{\"echo\":\"x\"}}\n");
}

static void
metrics_func (GString *out, gpointer data)
{
  g_string_append_printf (out, "shadowd_test %u\n", ++*(guint *) data);
}

static guint metrics_port;

static gpointer
http_get (gpointer p)
{
  g_autoptr (GSocketClient) client = g_socket_client_new ();
  g_autoptr (GSocketConnection) conn = g_socket_client_connect_to_host (client,
    "127.0.0.1", metrics_port, NULL, NULL);
  g_autofree char *req = g_strdup_printf ("GET %s HTTP/1.0\r\nHost: x\r\n\r\n",
                                          (const char *) p);
  GString *out = g_string_new (NULL);
  char buf[4096];
  gssize n;

  g_assert_nonnull (conn);
  g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (conn)), req,
                             strlen (req), NULL, NULL, NULL);
  while ((n = g_input_stream_read (g_io_stream_get_input_stream (G_IO_STREAM (conn)),
                                   buf, sizeof buf, NULL, NULL)) > 0)
    g_string_append_len (out, buf, n);
  return g_string_free (out, FALSE);
}

static void
test_metrics (void)
{
  g_autoptr (GError) error = NULL;
  guint n = 0;
  g_autoptr (ShdMetrics) m = shd_metrics_new ("127.0.0.1", 0, metrics_func, &n, &error);
  g_autofree char *a = NULL, *b = NULL;

  g_assert_no_error (error);
  metrics_port = shd_metrics_port (m);
  g_assert_cmpuint (metrics_port, >, 0);
  a = in_thread (http_get, (gpointer) "/metrics");
  g_assert_true (g_str_has_prefix (a, "HTTP/1.0 200 OK\r\n"));
  g_assert_nonnull (strstr (a, "\r\n\r\nshadowd_test 1\n"));
  g_assert_nonnull (strstr (a, "Content-Length: 15\r\n"));
  b = in_thread (http_get, (gpointer) "/nope");
  g_assert_true (g_str_has_prefix (b, "HTTP/1.0 404"));
  g_assert_cmpuint (n, ==, 1);

  g_clear_pointer (&m, shd_metrics_free);
  m = shd_metrics_new ("not-an-address", 0, metrics_func, &n, &error);
  g_assert_null (m);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  dir = g_dir_make_tmp ("shd-control-XXXXXX", NULL);
  path = g_build_filename (dir, "control.sock", NULL);
  g_test_add_func ("/control/roundtrip", test_control);
  g_test_add_func ("/control/stale-socket", test_stale_socket);
  g_test_add_func ("/control/metrics", test_metrics);
  rc = g_test_run ();
  g_unlink (path);
  g_rmdir (dir);
  g_free (path);
  g_free (dir);
  return rc;
}
