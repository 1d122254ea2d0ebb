/* The metrics endpoint, with its client in a thread of the same process. */
#include "http.h"

#include <string.h>

static guint port;
static guint renders;

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

static gpointer
http_request (gpointer p)
{
  g_autoptr (GSocketClient) client = g_socket_client_new ();
  g_autoptr (GSocketConnection) conn = g_socket_client_connect_to_host (client,
    "127.0.0.1", port, NULL, NULL);
  GString *out = g_string_new (NULL);
  char buf[4096];
  gssize n;

  g_assert_nonnull (conn);
  g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (conn)), p,
                             strlen (p), NULL, NULL, NULL);
  while ((n = g_input_stream_read (g_io_stream_get_input_stream (G_IO_STREAM (conn)),
                                   buf, sizeof buf, NULL, NULL)) > 0)
    g_string_append_len (out, buf, n);
  return g_string_free (out, FALSE);
}

static char *
render (gpointer data)
{
  g_assert_true (G_IS_OBJECT (data));
  return g_strdup_printf ("shadowd_test %u\n", ++renders);
}

static void
test_metrics (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GObject) owner = g_object_new (G_TYPE_OBJECT, NULL);
  g_autoptr (ShdHttpServer) srv = shd_http_server_new ("127.0.0.1", 0, render, owner, &error);
  g_autofree char *a = NULL, *b = NULL, *c = NULL, *d = NULL;

  g_assert_no_error (error);
  port = shd_http_server_get_port (srv);
  g_assert_cmpuint (port, >, 0);
  a = in_thread (http_request, (gpointer) "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
  g_assert_true (g_str_has_prefix (a, "HTTP/1.0 200 OK\r\n"));
  g_assert_nonnull (strstr (a, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
  g_assert_nonnull (strstr (a, "\r\n\r\nshadowd_test 1\n"));
  g_assert_nonnull (strstr (a, "Content-Length: 15\r\n"));
  b = in_thread (http_request, (gpointer) "GET /nope HTTP/1.0\r\n\r\n");
  g_assert_true (g_str_has_prefix (b, "HTTP/1.0 404"));
  c = in_thread (http_request, (gpointer) "POST /metrics HTTP/1.0\n\n");
  g_assert_true (g_str_has_prefix (c, "HTTP/1.0 405"));
  d = in_thread (http_request, (gpointer) "GET / HTTP/1.0\n\n");
  g_assert_nonnull (strstr (d, "metrics at /metrics"));
  g_assert_cmpuint (renders, ==, 1);
  shd_http_server_close (srv);
}

static void
test_bad_address (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GObject) owner = g_object_new (G_TYPE_OBJECT, NULL);
  g_autoptr (ShdHttpServer) srv = shd_http_server_new ("not-an-address", 0, render, owner,
                                                       &error);

  g_assert_null (srv);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/http/metrics", test_metrics);
  g_test_add_func ("/http/bad-address", test_bad_address);
  return g_test_run ();
}
