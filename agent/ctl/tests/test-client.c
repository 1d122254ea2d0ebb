/* The control client against a scripted peer in a thread: what it sends,
 * and what it makes of answers, errors, silence and no server at all. */
#include "client.h"

#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <string.h>

static char *dir, *path;

typedef struct {
  GSocket *listener;
  const char *answer;           /* sent after the first line; NULL: close */
  char *request;                /* what came, without its newline */
} Peer;

static gpointer
peer_run (gpointer data)
{
  Peer *p = data;
  g_autoptr (GSocket) s = g_socket_accept (p->listener, NULL, NULL);
  GString *in = g_string_new (NULL);
  char buf[4096];
  gssize n;

  g_assert_nonnull (s);
  while (strchr (in->str, '\n') == NULL &&
         (n = g_socket_receive (s, buf, sizeof buf, NULL, NULL)) > 0)
    g_string_append_len (in, buf, n);
  if (strchr (in->str, '\n'))
    *strchr (in->str, '\n') = '\0';
  p->request = g_string_free (in, FALSE);
  if (p->answer)
    g_socket_send (s, p->answer, strlen (p->answer), NULL, NULL);
  g_socket_close (s, NULL);
  return NULL;
}

/* One call of the client against a peer that answers `answer`. */
static JsonNode *
call_peer (const char *answer, char **request, GError **error)
{
  g_autoptr (GSocketAddress) addr = g_unix_socket_address_new (path);
  g_autoptr (JsonObject) req = json_object_new ();
  Peer p = { NULL, answer, NULL };
  GThread *t;
  JsonNode *ret;

  g_unlink (path);
  p.listener = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, 0, NULL);
  g_assert_true (g_socket_bind (p.listener, addr, TRUE, NULL));
  g_assert_true (g_socket_listen (p.listener, NULL));
  t = g_thread_new ("peer", peer_run, &p);
  json_object_set_string_member (req, "command", "status");
  json_object_set_string_member (req, "disk", "a \"quoted\" name");
  ret = shd_control_call (path, req, 5000, error);
  g_thread_join (t);
  g_object_unref (p.listener);
  *request = p.request;
  return ret;
}

static void
test_return (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *request = NULL;
  g_autoptr (JsonNode) ret = call_peer ("{\"return\": {\"echo\": [1, 2]}}\n", &request, &error);

  g_assert_no_error (error);
  /* one line of JSON, escaped by json-glib */
  g_assert_cmpstr (request, ==, "{\"command\":\"status\",\"disk\":\"a \\\"quoted\\\" name\"}");
  g_assert_true (JSON_NODE_HOLDS_OBJECT (ret));
  g_assert_cmpint (json_array_get_length (json_object_get_array_member (
                     json_node_get_object (ret), "echo")), ==, 2);
}

static void
test_error (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *request = NULL;
  g_autoptr (JsonNode) ret = call_peer ("{\"error\": \"no disk 'x'\"}\n", &request, &error);

  g_assert_null (ret);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_FAILED);
  g_assert_cmpstr (error->message, ==, "no disk 'x'");
}

static void
test_malformed (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *request = NULL;
  g_autoptr (JsonNode) ret = call_peer ("[1]\n", &request, &error);

  g_assert_null (ret);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
}

static void
test_closed (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *request = NULL;
  g_autoptr (JsonNode) ret = call_peer (NULL, &request, &error);

  g_assert_null (ret);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED);
}

static void
test_no_server (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) req = json_object_new ();
  g_autoptr (JsonNode) ret = NULL;

  g_unlink (path);
  json_object_set_string_member (req, "command", "status");
  ret = shd_control_call (path, req, 1000, &error);
  g_assert_null (ret);
  g_assert_nonnull (error);
  g_assert_true (g_str_has_prefix (error->message, "cannot reach shadowd at "));
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  dir = g_dir_make_tmp ("shd-client-XXXXXX", NULL);
  path = g_build_filename (dir, "control.sock", NULL);
  g_test_add_func ("/client/return", test_return);
  g_test_add_func ("/client/error", test_error);
  g_test_add_func ("/client/malformed", test_malformed);
  g_test_add_func ("/client/closed", test_closed);
  g_test_add_func ("/client/no-server", test_no_server);
  rc = g_test_run ();
  g_unlink (path);
  g_rmdir (dir);
  g_free (path);
  g_free (dir);
  return rc;
}
