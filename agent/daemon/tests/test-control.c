/* The control socket, with its clients in a thread of the same process:
 * the protocol line by line, commands that answer at once and later, the
 * answers' order, and the socket file (stale, live, removed). */
#include "control.h"

#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <string.h>

static char *dir, *path;

/* ---- the commands: an object that counts its calls ---- */

#define TEST_TYPE_OWNER (test_owner_get_type ())
G_DECLARE_FINAL_TYPE (TestOwner, test_owner, TEST, OWNER, GObject)

struct _TestOwner {
  GObject parent_instance;
  guint calls;
};

G_DEFINE_TYPE (TestOwner, test_owner, G_TYPE_OBJECT)
static void test_owner_class_init (TestOwnerClass *klass) { (void) klass; }
static void test_owner_init (TestOwner *o) { (void) o; }

static JsonNode *
echo (gpointer data, JsonObject *req, GError **error)
{
  JsonNode *n = json_node_new (JSON_NODE_OBJECT);

  (void) error;
  TEST_OWNER (data)->calls++;
  json_node_take_object (n, json_object_new ());
  json_object_set_string_member (json_node_get_object (n), "echo",
                                 json_object_get_string_member (req, "command"));
  return n;
}

static JsonNode *
fail (gpointer data, JsonObject *req, GError **error)
{
  (void) req;
  TEST_OWNER (data)->calls++;
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "it failed as asked");
  return NULL;
}

static gboolean
later_done (gpointer data)
{
  GTask *task = data;

  g_task_return_pointer (task, json_node_init_string (json_node_alloc (), "late"),
                         (GDestroyNotify) json_node_unref);
  g_object_unref (task);
  return G_SOURCE_REMOVE;
}

/* answers after 100 ms, from the main loop */
static void
later (gpointer data, JsonObject *req, GTask *task)
{
  (void) req;
  TEST_OWNER (data)->calls++;
  g_assert_true (SHD_IS_CONTROL (g_task_get_source_object (task)));
  g_timeout_add (100, later_done, task);
}

static const ShdCommand commands[] = {
  { "status", echo, NULL },
  { "fail", fail, NULL },
  { "later", NULL, later },
};

static const ShdCommand more[] = {
  { "one", echo, NULL },
};

/* ---- clients, in a thread while the main context serves ---- */

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

/* Sends raw bytes, returns what comes back until EOF or as many lines as
 * the bytes had non-empty lines. */
static gpointer
raw (gpointer data)
{
  const char *text = data;
  g_autoptr (GSocketClient) client = g_socket_client_new ();
  g_autoptr (GSocketAddress) addr = g_unix_socket_address_new (path);
  g_autoptr (GSocketConnection) conn = g_socket_client_connect (client,
    G_SOCKET_CONNECTABLE (addr), NULL, NULL);
  GString *out = g_string_new (NULL);
  guint want = 0, got = 0;
  char buf[4096];
  gssize n;

  g_assert_nonnull (conn);
  for (const char *p = text; *p; p++)
    want += *p == '\n' && p > text && p[-1] != '\n';
  want = MAX (want, 1);
  g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (conn)), text,
                             strlen (text), NULL, NULL, NULL);
  while (got < want &&
         (n = g_input_stream_read (g_io_stream_get_input_stream (G_IO_STREAM (conn)),
                                   buf, sizeof buf, NULL, NULL)) > 0) {
    g_string_append_len (out, buf, n);
    for (gssize i = 0; i < n; i++)
      got += buf[i] == '\n';
  }
  return g_string_free (out, FALSE);
}

static ShdControl *
new_control (TestOwner *owner)
{
  g_autoptr (GError) error = NULL;
  ShdControl *ctl = shd_control_new (path, &error);

  g_assert_no_error (error);
  shd_control_add_commands (ctl, commands, G_N_ELEMENTS (commands), G_OBJECT (owner));
  shd_control_add_commands (ctl, more, G_N_ELEMENTS (more), G_OBJECT (owner));
  return ctl;
}

static void
expect (const char *request, const char *answer)
{
  g_autofree char *got = in_thread (raw, (gpointer) request);

  g_assert_cmpstr (got, ==, answer);
}

static void
test_roundtrip (void)
{
  g_autoptr (TestOwner) owner = g_object_new (TEST_TYPE_OWNER, NULL);
  g_autoptr (ShdControl) ctl = new_control (owner);
  g_autofree char *big = NULL;

  expect ("{\"command\":\"status\"}\n", "{\"return\":{\"echo\":\"status\"}}\n");
  expect ("{\"command\":\"fail\"}\n", "{\"error\":\"it failed as asked\"}\n");
  expect ("[1, 2]\n", "{\"error\":\"a request is a JSON object\"}\n");
  expect ("{\"disk\":\"x\"}\n", "{\"error\":\"a request needs a \\\"command\\\"\"}\n");
  /* the list comes from the tables, in the order they were added */
  expect ("{\"command\":\"nope\"}\n",
          "{\"error\":\"unknown command 'nope' (status, fail, later, one)\"}\n");
  {
    g_autofree char *a = in_thread (raw, (gpointer) "this is not json\n");

    g_assert_true (g_str_has_prefix (a, "{\"error\":"));
  }
  /* several requests on one connection, the late answer first: in order */
  expect ("{\"command\":\"later\"}\n\n{\"command\":\"one\"}\n",
          "{\"return\":\"late\"}\n{\"return\":{\"echo\":\"one\"}}\n");
  /* a line over the cap: the connection is closed without an answer */
  big = g_strnfill (100 * 1024, 'x');
  expect (big, "");
  g_assert_cmpuint (owner->calls, ==, 4);
  /* the socket file is removed on close */
  shd_control_close (ctl);
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS));
}

/* A socket file nobody listens on, left by a crash: replaced */
static void
test_stale_socket (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocket) s = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, 0, NULL);
  g_autoptr (GSocketAddress) addr = g_unix_socket_address_new (path);
  g_autoptr (TestOwner) owner = g_object_new (TEST_TYPE_OWNER, NULL);
  g_autoptr (ShdControl) ctl = NULL;

  g_assert_true (g_socket_bind (s, addr, TRUE, &error));
  g_socket_close (s, NULL);
  g_assert_true (g_file_test (path, G_FILE_TEST_EXISTS));
  ctl = new_control (owner);
  expect ("{\"command\":\"status\"}\n", "{\"return\":{\"echo\":\"status\"}}\n");
  shd_control_close (ctl);
}

/* A socket a live process listens on: left alone, with a clear error */
static void
test_live_socket (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (TestOwner) owner = g_object_new (TEST_TYPE_OWNER, NULL);
  g_autoptr (ShdControl) first = new_control (owner);
  g_autoptr (ShdControl) second = shd_control_new (path, &error);

  g_assert_null (second);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE);
  g_assert_nonnull (strstr (error->message, "another shadowd is listening on it"));
  /* the first one still answers */
  expect ("{\"command\":\"status\"}\n", "{\"return\":{\"echo\":\"status\"}}\n");
  shd_control_close (first);
}

/* A command answering after the control socket closed: its connection
 * and the owner stay alive until then, and nothing is written */
static void
test_close_while_busy (void)
{
  g_autoptr (TestOwner) owner = g_object_new (TEST_TYPE_OWNER, NULL);
  g_autoptr (ShdControl) ctl = new_control (owner);
  g_autoptr (GSocketClient) client = g_socket_client_new ();
  g_autoptr (GSocketAddress) addr = g_unix_socket_address_new (path);
  g_autoptr (GSocketConnection) conn = g_socket_client_connect (client,
    G_SOCKET_CONNECTABLE (addr), NULL, NULL);
  const char *req = "{\"command\":\"later\"}\n";
  GWeakRef weak;
  gint64 end;

  g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (conn)), req,
                             strlen (req), NULL, NULL, NULL);
  while (owner->calls == 0)
    g_main_context_iteration (NULL, TRUE);
  g_weak_ref_init (&weak, ctl);
  shd_control_close (ctl);
  g_clear_object (&ctl);
  /* the command in flight holds the control socket */
  {
    g_autoptr (ShdControl) alive = g_weak_ref_get (&weak);

    g_assert_nonnull (alive);
  }
  end = g_get_monotonic_time () + 2 * G_USEC_PER_SEC;
  while (g_get_monotonic_time () < end) {
    g_autoptr (ShdControl) alive = g_weak_ref_get (&weak);

    if (alive == NULL)
      break;
    g_clear_object (&alive);
    g_main_context_iteration (NULL, TRUE);
  }
  {
    g_autoptr (ShdControl) alive = g_weak_ref_get (&weak);

    g_assert_null (alive);
  }
  g_weak_ref_clear (&weak);
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  dir = g_dir_make_tmp ("shd-control-XXXXXX", NULL);
  path = g_build_filename (dir, "control.sock", NULL);
  g_test_add_func ("/control/roundtrip", test_roundtrip);
  g_test_add_func ("/control/stale-socket", test_stale_socket);
  g_test_add_func ("/control/live-socket", test_live_socket);
  g_test_add_func ("/control/close-while-busy", test_close_while_busy);
  rc = g_test_run ();
  g_unlink (path);
  g_rmdir (dir);
  g_free (path);
  g_free (dir);
  return rc;
}
