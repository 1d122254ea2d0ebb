/* The QMP client against a fake QMP peer in the same process. */
#include "qmp.h"

#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <string.h>

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, " \
                 "\"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}"
#define MAX_LINE 1024

/* ---- log capture: warnings are expected here, and asserted on ---- */

static GPtrArray *logged;

static void
log_capture (const char *domain, GLogLevelFlags level, const char *msg, gpointer data)
{
  (void) data;
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING |
               G_LOG_LEVEL_MESSAGE))
    g_ptr_array_add (logged, g_strdup_printf ("%s: %s",
                                              level & G_LOG_LEVEL_WARNING ? "W" :
                                              level & G_LOG_LEVEL_MESSAGE ? "M" : "C",
                                              msg));
  if (g_test_verbose () || (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)))
    g_log_default_handler (domain, level, msg, NULL);
}

static gboolean
was_logged (const char *pattern)
{
  for (guint i = 0; i < logged->len; i++)
    if (g_pattern_match_simple (pattern, logged->pdata[i]))
      return TRUE;
  return FALSE;
}

static gboolean
timed_out_cb (gpointer p)
{
  *(gboolean *) p = TRUE;
  return G_SOURCE_REMOVE;
}

#define WAIT_UNTIL(cond, ms)                                            \
  G_STMT_START {                                                        \
    gboolean to_ = FALSE;                                               \
    guint id_ = g_timeout_add ((ms), timed_out_cb, &to_);               \
    while (!(cond) && !to_)                                             \
      g_main_context_iteration (NULL, TRUE);                            \
    if (!to_)                                                           \
      g_source_remove (id_);                                            \
    if (!(cond))                                                        \
      g_error ("timed out waiting for %s", #cond);                      \
  } G_STMT_END

/* ---- the fake peer ---- */

typedef struct _Peer Peer;
typedef void (*PeerHandler) (Peer *peer, const char *command, const char *id,
                             JsonObject *msg);

struct _Peer {
  char *dir, *path;
  GSocketService *service;
  GSocketConnection *conn;
  GCancellable *cancel;
  guint connections;
  guint bad_greetings;          /* this many connections get garbage ... */
  guint silent_greetings;       /* ... or nothing, before a real greeting */
  PeerHandler handler;
  GPtrArray *commands;
  char *held_id;
  guint eofs;                   /* connections the client closed */
};

static void
peer_send_len (Peer *peer, const char *text, gsize len)
{
  g_autoptr (GError) error = NULL;
  GOutputStream *out;

  g_assert_nonnull (peer->conn);
  out = g_io_stream_get_output_stream (G_IO_STREAM (peer->conn));
  g_output_stream_write_all (out, text, len, NULL, NULL, &error);
  g_assert_no_error (error);
}

static void
peer_send (Peer *peer, const char *text)
{
  peer_send_len (peer, text, strlen (text));
}

static void
peer_sendf (Peer *peer, const char *fmt, ...) G_GNUC_PRINTF (2, 3);
static void
peer_sendf (Peer *peer, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *s = NULL;

  va_start (ap, fmt);
  s = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  peer_send (peer, s);
}

static void
peer_reply (Peer *peer, const char *id, const char *ret)
{
  peer_sendf (peer, "{\"return\": %s, \"id\": \"%s\"}\n", ret, id);
}

static void
peer_hangup (Peer *peer)
{
  if (peer->cancel)
    g_cancellable_cancel (peer->cancel);
  g_clear_object (&peer->cancel);
  if (peer->conn)
    g_io_stream_close (G_IO_STREAM (peer->conn), NULL, NULL);
  g_clear_object (&peer->conn);
}

static void read_next (Peer *peer, GDataInputStream *in);

static void
on_line (GObject *src, GAsyncResult *res, gpointer data)
{
  Peer *peer = data;
  GDataInputStream *in = G_DATA_INPUT_STREAM (src);
  g_autoptr (GError) error = NULL;
  g_autofree char *line = g_data_input_stream_read_line_finish_utf8 (in, res, NULL, &error);
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonObject *o;
  const char *cmd, *id;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
    g_object_unref (in);
    return;
  }
  if (line == NULL) {
    peer->eofs += error == NULL;
    g_object_unref (in);
    return;
  }
  g_assert_true (json_parser_load_from_data (parser, line, -1, NULL));
  o = json_node_get_object (json_parser_get_root (parser));
  cmd = json_object_get_string_member (o, "execute");
  id = json_object_get_string_member (o, "id");
  if (strcmp (cmd, "qmp_capabilities") == 0)
    peer_reply (peer, id, "{}");
  else {
    g_ptr_array_add (peer->commands, g_strdup (cmd));
    peer->handler (peer, cmd, id, o);
  }
  /* The handler may have hung up. */
  if (peer->conn && g_cancellable_is_cancelled (g_object_get_data (G_OBJECT (in), "cancel")) == FALSE)
    read_next (peer, in);
  g_object_unref (in);
}

static void
read_next (Peer *peer, GDataInputStream *in)
{
  g_data_input_stream_read_line_async (in, G_PRIORITY_DEFAULT,
                                       g_object_get_data (G_OBJECT (in), "cancel"),
                                       on_line, peer);
  g_object_ref (in);
}

static gboolean
on_incoming (GSocketService *service, GSocketConnection *conn, GObject *src,
             gpointer data)
{
  Peer *peer = data;
  g_autoptr (GDataInputStream) in = NULL;

  (void) service;
  (void) src;
  peer_hangup (peer);
  peer->conn = g_object_ref (conn);
  peer->cancel = g_cancellable_new ();
  peer->connections++;
  in = g_data_input_stream_new (g_io_stream_get_input_stream (G_IO_STREAM (conn)));
  g_object_set_data_full (G_OBJECT (in), "cancel", g_object_ref (peer->cancel),
                          g_object_unref);
  if (peer->connections <= peer->silent_greetings)
    ;                           /* say nothing at all */
  else if (peer->connections <= peer->silent_greetings + peer->bad_greetings)
    peer_send (peer, "hello, this is not QMP\n");
  else
    peer_send (peer, GREETING "\n");
  read_next (peer, in);
  return TRUE;
}

static void
peer_listen (Peer *peer)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocketAddress) addr = g_unix_socket_address_new (peer->path);

  peer->service = g_socket_service_new ();
  g_socket_listener_add_address (G_SOCKET_LISTENER (peer->service), addr,
                                 G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT,
                                 NULL, NULL, &error);
  g_assert_no_error (error);
  g_signal_connect (peer->service, "incoming", G_CALLBACK (on_incoming), peer);
  g_socket_service_start (peer->service);
}

/* QEMU going away: no listener, no socket file, no connection. */
static void
peer_shutdown (Peer *peer)
{
  peer_hangup (peer);
  if (peer->service) {
    g_socket_service_stop (peer->service);
    g_socket_listener_close (G_SOCKET_LISTENER (peer->service));
    g_clear_object (&peer->service);
  }
  g_unlink (peer->path);
}

static void
default_handler (Peer *peer, const char *cmd, const char *id, JsonObject *msg)
{
  (void) msg;
  peer_sendf (peer, "{\"return\": {\"ok\": \"%s\"}, \"id\": \"%s\"}\n", cmd, id);
}

/* ---- fixture ---- */

typedef struct {
  Peer peer;
  ShdQmp *qmp;
  guint ready, disconnected;
  GPtrArray *trail;             /* events and replies in arrival order */
  JsonObject *last_event_data;
  gint64 last_event_ts;
} Fixture;

static void
on_ready (ShdQmp *qmp, gpointer data)
{
  Fixture *f = data;

  (void) qmp;
  f->ready++;
}

static void
on_disconnected (ShdQmp *qmp, const char *reason, gpointer data)
{
  Fixture *f = data;

  (void) qmp;
  g_assert_nonnull (reason);
  f->disconnected++;
}

static void
on_event (ShdQmp *qmp, const char *name, JsonObject *data, gint64 ts, gpointer user)
{
  Fixture *f = user;

  (void) qmp;
  g_ptr_array_add (f->trail, g_strdup_printf ("event:%s", name));
  g_clear_pointer (&f->last_event_data, json_object_unref);
  f->last_event_data = json_object_ref (data);
  f->last_event_ts = ts;
}

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  ShdQmpConfig c;

  (void) data;
  memset (f, 0, sizeof *f);
  g_ptr_array_set_size (logged, 0);
  f->peer.dir = g_dir_make_tmp ("shd-qmp-XXXXXX", &error);
  g_assert_no_error (error);
  f->peer.path = g_build_filename (f->peer.dir, "qmp.sock", NULL);
  f->peer.commands = g_ptr_array_new_with_free_func (g_free);
  f->peer.handler = default_handler;
  f->trail = g_ptr_array_new_with_free_func (g_free);
  shd_qmp_config_init (&c);
  c.max_line = MAX_LINE;
  c.command_timeout_ms = 1000;
  c.backoff_min_ms = 20;
  c.backoff_max_ms = 200;
  f->qmp = shd_qmp_new (f->peer.path, &c);
  g_signal_connect (f->qmp, "ready", G_CALLBACK (on_ready), f);
  g_signal_connect (f->qmp, "disconnected", G_CALLBACK (on_disconnected), f);
  g_signal_connect (f->qmp, "event", G_CALLBACK (on_event), f);
}

static void
start (Fixture *f)
{
  peer_listen (&f->peer);
  shd_qmp_start (f->qmp);
  WAIT_UNTIL (f->ready == 1, 5000);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  (void) data;
  if (f->qmp)
    shd_qmp_stop (f->qmp);
  g_clear_object (&f->qmp);
  peer_shutdown (&f->peer);
  /* Let cancelled operations finish. */
  while (g_main_context_iteration (NULL, FALSE))
    ;
  g_rmdir (f->peer.dir);
  g_free (f->peer.dir);
  g_free (f->peer.path);
  g_free (f->peer.held_id);
  g_ptr_array_unref (f->peer.commands);
  g_ptr_array_unref (f->trail);
  g_clear_pointer (&f->last_event_data, json_object_unref);
  g_assert_false (was_logged ("C: *"));
}

typedef struct {
  gboolean done;
  JsonNode *ret;
  GError *error;
  Fixture *f;
} Result;

static void
result_clear (Result *r)
{
  g_clear_pointer (&r->ret, json_node_unref);
  g_clear_error (&r->error);
}

static void
on_exec (GObject *src, GAsyncResult *res, gpointer data)
{
  Result *r = data;

  r->ret = shd_qmp_execute_finish (SHD_QMP (src), res, &r->error);
  r->done = TRUE;
  if (r->f)
    g_ptr_array_add (r->f->trail, g_strdup ("reply"));
}

static void
exec (Fixture *f, const char *cmd, JsonObject *args, guint timeout, Result *r)
{
  memset (r, 0, sizeof *r);
  r->f = f;
  shd_qmp_execute_async (f->qmp, cmd, args, timeout, NULL, on_exec, r);
}

static void
run (Fixture *f, const char *cmd, Result *r)
{
  exec (f, cmd, NULL, 0, r);
  WAIT_UNTIL (r->done, 5000);
}

static const char *
ret_string (Result *r, const char *member)
{
  g_assert_no_error (r->error);
  g_assert_nonnull (r->ret);
  return json_object_get_string_member (json_node_get_object (r->ret), member);
}

/* ---- tests ---- */

static void
echo_handler (Peer *peer, const char *cmd, const char *id, JsonObject *msg)
{
  g_autoptr (JsonNode) args = json_node_init_object (json_node_alloc (),
                                                     json_object_get_object_member (msg, "arguments"));
  g_autofree char *text = json_to_string (args, FALSE);

  (void) cmd;
  peer_reply (peer, id, text);
}

static void
test_normal (Fixture *f, gconstpointer data)
{
  Result r;
  g_autoptr (JsonObject) args = json_object_new ();
  JsonObject *greeting;

  (void) data;
  start (f);
  g_assert_true (shd_qmp_is_ready (f->qmp));
  greeting = shd_qmp_get_greeting (f->qmp);
  g_assert_nonnull (greeting);
  g_assert_true (json_object_has_member (greeting, "version"));
  run (f, "query-status", &r);
  g_assert_cmpstr (ret_string (&r, "ok"), ==, "query-status");
  result_clear (&r);

  /* Arguments with newlines and quotes must not break the framing. */
  f->peer.handler = echo_handler;
  json_object_set_string_member (args, "node-name", "sh0\n\"x\"}\n{");
  json_object_set_int_member (args, "n", 7);
  exec (f, "echo", args, 0, &r);
  WAIT_UNTIL (r.done, 5000);
  g_assert_cmpstr (ret_string (&r, "node-name"), ==, "sh0\n\"x\"}\n{");
  result_clear (&r);
  g_assert_cmpuint (f->peer.commands->len, ==, 2);
  g_assert_cmpuint (shd_qmp_get_connection_count (f->qmp), ==, 1);
  g_assert_cmpuint (logged->len, ==, 0);
}

static void
event_handler (Peer *peer, const char *cmd, const char *id, JsonObject *msg)
{
  (void) msg;
  peer_send (peer, "{\"event\": \"SHADOW_CHILD_SYNCED\", \"data\": {\"node-name\": "
             "\"sh0\", \"child\": \"tier-b\"}, \"timestamp\": {\"seconds\": 1700000000, "
             "\"microseconds\": 250}}\n");
  peer_send (peer, "{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\n");
  /* Reply and a further event in one write, as QEMU may send them. */
  peer_sendf (peer, "{\"return\": {\"ok\": \"%s\"}, \"id\": \"%s\"}\n"
              "{\"event\": \"STOP\"}\n", cmd, id);
}

static void
test_event_interleaved (Fixture *f, gconstpointer data)
{
  Result r;

  (void) data;
  start (f);
  f->peer.handler = event_handler;
  exec (f, "query-blockstats", NULL, 0, &r);
  WAIT_UNTIL (r.done && f->trail->len == 4, 5000);
  g_assert_cmpstr (ret_string (&r, "ok"), ==, "query-blockstats");
  g_assert_cmpstr (f->trail->pdata[0], ==, "event:SHADOW_CHILD_SYNCED");
  g_assert_cmpstr (f->trail->pdata[1], ==, "event:RESUME");
  g_assert_cmpstr (f->trail->pdata[2], ==, "reply");
  g_assert_cmpstr (f->trail->pdata[3], ==, "event:STOP");
  /* STOP had no data: an empty object, not NULL. */
  g_assert_cmpuint (json_object_get_size (f->last_event_data), ==, 0);
  result_clear (&r);
}

static void
event_data_handler (Peer *peer, const char *cmd, const char *id, JsonObject *msg)
{
  (void) msg;
  peer_send (peer, "{\"event\": \"SHADOW_CHILD_SYNCED\", \"data\": {\"node-name\": "
             "\"sh0\", \"child\": \"tier-b\"}, \"timestamp\": {\"seconds\": 1700000000, "
             "\"microseconds\": 250}}\n");
  default_handler (peer, cmd, id, msg);
}

static void
test_event_data (Fixture *f, gconstpointer data)
{
  Result r;

  (void) data;
  start (f);
  f->peer.handler = event_data_handler;
  run (f, "x", &r);
  WAIT_UNTIL (f->last_event_data != NULL, 5000);
  g_assert_cmpstr (json_object_get_string_member (f->last_event_data, "child"), ==, "tier-b");
  g_assert_cmpint (f->last_event_ts, ==, G_GINT64_CONSTANT (1700000000000250));
  result_clear (&r);
}

static void
reorder_handler (Peer *peer, const char *cmd, const char *id, JsonObject *msg)
{
  (void) msg;
  if (strcmp (cmd, "first") == 0) {
    peer->held_id = g_strdup (id);
    return;
  }
  peer_reply (peer, id, "{\"n\": 2}");
  peer_reply (peer, peer->held_id, "{\"n\": 1}");
}

static void
test_out_of_order (Fixture *f, gconstpointer data)
{
  Result a, b;

  (void) data;
  start (f);
  f->peer.handler = reorder_handler;
  exec (f, "first", NULL, 0, &a);
  exec (f, "second", NULL, 0, &b);
  WAIT_UNTIL (a.done && b.done, 5000);
  g_assert_no_error (a.error);
  g_assert_no_error (b.error);
  g_assert_cmpint (json_object_get_int_member (json_node_get_object (a.ret), "n"), ==, 1);
  g_assert_cmpint (json_object_get_int_member (json_node_get_object (b.ret), "n"), ==, 2);
  result_clear (&a);
  result_clear (&b);
}

static void
late_handler (Peer *peer, const char *cmd, const char *id, JsonObject *msg)
{
  if (strcmp (cmd, "hang") == 0) {
    peer->held_id = g_strdup (id);
    return;
  }
  /* The reply to the timed-out command arrives first, and is dropped. */
  peer_reply (peer, peer->held_id, "{\"ok\": \"late\"}");
  default_handler (peer, cmd, id, msg);
}

static void
test_timeout (Fixture *f, gconstpointer data)
{
  Result r;
  gint64 t0;

  (void) data;
  start (f);
  f->peer.handler = late_handler;
  t0 = g_get_monotonic_time ();
  exec (f, "hang", NULL, 150, &r);
  WAIT_UNTIL (r.done, 5000);
  g_assert_error (r.error, SHD_QMP_ERROR, SHD_QMP_ERROR_TIMEOUT);
  g_assert_cmpint (g_get_monotonic_time () - t0, >=, 140 * 1000);
  g_assert_true (was_logged ("W: *'hang'*no reply within 150 ms*"));
  result_clear (&r);
  run (f, "after", &r);
  g_assert_cmpstr (ret_string (&r, "ok"), ==, "after");
  result_clear (&r);
  /* A timeout alone does not cost the connection. */
  g_assert_cmpuint (shd_qmp_get_connection_count (f->qmp), ==, 1);
  g_assert_cmpuint (f->disconnected, ==, 0);
}

static void
garbage_handler (Peer *peer, const char *cmd, const char *id, JsonObject *msg)
{
  peer_send (peer, "this is {not json\n");
  peer_send (peer, "[1, 2, 3]\n");
  peer_send (peer, "\r\n\n");
  peer_send (peer, "{\"neither\": \"event nor reply\"}\n");
  peer_send (peer, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\n");
  peer_send (peer, "{\"return\": {}, \"id\": 12}\n");
  peer_send_len (peer, "\xff\xfe\x00garbage\n", 11);
  default_handler (peer, cmd, id, msg);
}

static void
test_garbage (Fixture *f, gconstpointer data)
{
  Result r;

  (void) data;
  start (f);
  f->peer.handler = garbage_handler;
  run (f, "x", &r);
  g_assert_cmpstr (ret_string (&r, "ok"), ==, "x");
  result_clear (&r);
  g_assert_true (was_logged ("W: *not JSON*this is {not json*"));
  g_assert_true (was_logged ("W: *not a JSON object*"));
  g_assert_true (was_logged ("W: *unexpected message*"));
  g_assert_true (was_logged ("W: *error without an id*"));
  g_assert_true (was_logged ("W: *id that is not ours*"));
  g_assert_cmpuint (shd_qmp_get_connection_count (f->qmp), ==, 1);
}

static void
oversized_handler (Peer *peer, const char *cmd, const char *id, JsonObject *msg)
{
  g_autofree char *pad = g_strnfill (5 * MAX_LINE, 'x');

  /* An oversized reply to this very command, then the real one. */
  peer_sendf (peer, "{\"return\": {\"pad\": \"%s\"}, \"id\": \"%s\"}\n", pad, id);
  default_handler (peer, cmd, id, msg);
}

static void
test_oversized (Fixture *f, gconstpointer data)
{
  Result r;

  (void) data;
  start (f);
  f->peer.handler = oversized_handler;
  run (f, "big", &r);
  g_assert_cmpstr (ret_string (&r, "ok"), ==, "big");
  result_clear (&r);
  g_assert_true (was_logged ("W: *line longer than 1024 bytes, discarded*"));
  /* The stream is back in step: the next command works. */
  f->peer.handler = default_handler;
  run (f, "next", &r);
  g_assert_cmpstr (ret_string (&r, "ok"), ==, "next");
  result_clear (&r);
  g_assert_cmpuint (shd_qmp_get_connection_count (f->qmp), ==, 1);
}

static void
error_handler (Peer *peer, const char *cmd, const char *id, JsonObject *msg)
{
  (void) cmd;
  (void) msg;
  peer_sendf (peer, "{\"error\": {\"class\": \"GenericError\", \"desc\": "
              "\"Cannot switch to tier-b: not synced\"}, \"id\": \"%s\"}\n", id);
}

static void
test_error_reply (Fixture *f, gconstpointer data)
{
  Result r;

  (void) data;
  start (f);
  f->peer.handler = error_handler;
  run (f, "blockdev-reopen", &r);
  g_assert_error (r.error, SHD_QMP_ERROR, SHD_QMP_ERROR_COMMAND);
  g_assert_cmpstr (r.error->message, ==, "GenericError: Cannot switch to tier-b: not synced");
  result_clear (&r);
}

static void
truncating_handler (Peer *peer, const char *cmd, const char *id, JsonObject *msg)
{
  (void) msg;
  (void) cmd;
  peer_sendf (peer, "{\"return\": {\"stats\": [1, 2, 3], \"id\": \"%s", id);
  peer_hangup (peer);
  peer->handler = default_handler;
}

static void
test_close_mid_reply (Fixture *f, gconstpointer data)
{
  Result r;

  (void) data;
  start (f);
  f->peer.handler = truncating_handler;
  run (f, "query-blockstats", &r);
  g_assert_error (r.error, SHD_QMP_ERROR, SHD_QMP_ERROR_DISCONNECTED);
  result_clear (&r);
  g_assert_true (was_logged ("W: *closed in the middle of a line*"));
  g_assert_cmpuint (f->disconnected, ==, 1);
  /* It comes back by itself, and says so, so state gets re-read. */
  WAIT_UNTIL (f->ready == 2, 5000);
  g_assert_cmpuint (f->peer.connections, ==, 2);
  run (f, "query-blockstats", &r);
  g_assert_cmpstr (ret_string (&r, "ok"), ==, "query-blockstats");
  result_clear (&r);
}

static gboolean
relisten_cb (gpointer data)
{
  peer_listen (data);
  return G_SOURCE_REMOVE;
}

static void
test_reconnect (Fixture *f, gconstpointer data)
{
  Result r;
  gint64 t0;

  (void) data;
  start (f);
  /* QEMU restarts: the socket vanishes for a while. */
  peer_shutdown (&f->peer);
  WAIT_UNTIL (f->disconnected == 1, 5000);
  g_assert_false (shd_qmp_is_ready (f->qmp));
  exec (f, "query-status", NULL, 0, &r);
  WAIT_UNTIL (r.done, 5000);
  g_assert_error (r.error, SHD_QMP_ERROR, SHD_QMP_ERROR_NOT_CONNECTED);
  result_clear (&r);
  t0 = g_get_monotonic_time ();
  g_timeout_add (400, relisten_cb, &f->peer);
  WAIT_UNTIL (f->ready == 2, 5000);
  /* Backoff is capped at 200 ms: back within one period of the return. */
  g_assert_cmpint (g_get_monotonic_time () - t0, <, (400 + 200 + 300) * 1000);
  g_assert_true (was_logged ("M: *cannot connect*"));
  run (f, "query-status", &r);
  g_assert_cmpstr (ret_string (&r, "ok"), ==, "query-status");
  result_clear (&r);
  g_assert_cmpuint (shd_qmp_get_connection_count (f->qmp), ==, 2);
}

static void
test_start_before_peer (Fixture *f, gconstpointer data)
{
  (void) data;
  shd_qmp_start (f->qmp);
  g_timeout_add (150, relisten_cb, &f->peer);
  WAIT_UNTIL (f->ready == 1, 5000);
  g_assert_cmpuint (f->disconnected, ==, 0);
}

static void
test_bad_greeting (Fixture *f, gconstpointer data)
{
  (void) data;
  f->peer.bad_greetings = 2;
  start (f);
  g_assert_cmpuint (f->peer.connections, ==, 3);
  g_assert_true (was_logged ("W: *expected a greeting*hello, this is not QMP*"));
}

static void
test_no_greeting (Fixture *f, gconstpointer data)
{
  (void) data;
  f->peer.silent_greetings = 1;
  start (f);
  g_assert_cmpuint (f->peer.connections, ==, 2);
  g_assert_true (was_logged ("W: *no greeting and capabilities reply within 1000 ms*"));
}

static void
hang_handler (Peer *peer, const char *cmd, const char *id, JsonObject *msg)
{
  (void) peer;
  (void) cmd;
  (void) id;
  (void) msg;
}

static void
test_stop_cancels (Fixture *f, gconstpointer data)
{
  Result r;

  (void) data;
  start (f);
  f->peer.handler = hang_handler;
  exec (f, "hang", NULL, 0, &r);
  WAIT_UNTIL (f->peer.commands->len == 1, 5000);
  shd_qmp_stop (f->qmp);
  WAIT_UNTIL (f->peer.eofs == 1, 5000);
  f->peer.eofs = 0;
  WAIT_UNTIL (r.done, 5000);
  g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  result_clear (&r);
  g_assert_false (shd_qmp_is_ready (f->qmp));
  /* Dropping the last reference with a command in flight is safe too: the
   * command keeps the client alive until it times out, then it goes. */
  shd_qmp_start (f->qmp);
  WAIT_UNTIL (f->ready == 2, 5000);
  exec (f, "hang", NULL, 0, &r);
  WAIT_UNTIL (f->peer.commands->len == 2, 5000);
  g_clear_object (&f->qmp);
  WAIT_UNTIL (r.done, 5000);
  g_assert_error (r.error, SHD_QMP_ERROR, SHD_QMP_ERROR_TIMEOUT);
  result_clear (&r);
  /* ... and its connection is closed. */
  WAIT_UNTIL (f->peer.eofs == 1, 5000);
}

/* ---- a custom transport, answering from a thread of its own ---- */

typedef struct {
  GAsyncQueue *queue;           /* GTask, with the command line as data */
  GThread *thread;
  guint sent;
} Transport;

static gpointer
transport_thread (gpointer data)
{
  Transport *t = data;
  GTask *task;

  while ((task = g_async_queue_pop (t->queue)) != GINT_TO_POINTER (1)) {
    const char *line = g_task_get_task_data (task);

    if (strstr (line, "\"hang\""))
      g_usleep (300 * 1000);
    if (strstr (line, "\"broken\""))
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE, "no monitor");
    else if (strstr (line, "\"id\""))
      g_task_return_pointer (task, g_strdup ("{\"error\": {\"class\": \"X\", \"desc\": \"an id\"}}"),
                             g_free);
    else
      g_task_return_pointer (task, g_strdup ("{\"return\": {\"ok\": 1}}"), g_free);
    g_object_unref (task);
  }
  return NULL;
}

static void
transport_send (const char *line, GTask *task, gpointer data)
{
  Transport *t = data;

  t->sent++;
  g_task_set_task_data (task, g_strdup (line), g_free);
  g_async_queue_push (t->queue, task);
}

typedef struct {
  JsonNode *ret;
  GError *error;
  gboolean done;
} CustomResult;

static void
custom_done_cb (GObject *src, GAsyncResult *res, gpointer data)
{
  CustomResult *r = data;

  r->ret = shd_qmp_execute_finish (SHD_QMP (src), res, &r->error);
  r->done = TRUE;
}

static void
test_custom_transport (void)
{
  Transport t = { g_async_queue_new (), NULL, 0 };
  g_autoptr (ShdQmp) qmp = NULL;
  g_autoptr (GCancellable) cancel = g_cancellable_new ();
  CustomResult a = { 0 }, b = { 0 }, c = { 0 };

  t.thread = g_thread_new ("transport", transport_thread, &t);
  qmp = shd_qmp_new_custom ("custom", transport_send, &t, NULL);
  /* not ready: refused without sending */
  shd_qmp_execute_async (qmp, "query-status", NULL, 0, NULL, custom_done_cb, &a);
  while (!a.done)
    g_main_context_iteration (NULL, TRUE);
  g_assert_error (a.error, SHD_QMP_ERROR, SHD_QMP_ERROR_NOT_CONNECTED);
  g_clear_error (&a.error);
  memset (&a, 0, sizeof a);
  g_assert_cmpuint (t.sent, ==, 0);

  shd_qmp_custom_set_ready (qmp, TRUE, NULL);
  shd_qmp_execute_async (qmp, "query-status", NULL, 0, NULL, custom_done_cb, &a);
  shd_qmp_execute_async (qmp, "broken", NULL, 0, NULL, custom_done_cb, &b);
  while (!a.done || !b.done)
    g_main_context_iteration (NULL, TRUE);
  g_assert_no_error (a.error);
  g_assert_cmpint (json_object_get_int_member (json_node_get_object (a.ret), "ok"), ==, 1);
  g_assert_error (b.error, SHD_QMP_ERROR, SHD_QMP_ERROR_DISCONNECTED);
  g_assert_nonnull (strstr (b.error->message, "no monitor"));

  /* cancelled while the transport is busy: done at once, the late reply
   * dropped */
  shd_qmp_execute_async (qmp, "hang", NULL, 0, cancel, custom_done_cb, &c);
  g_cancellable_cancel (cancel);
  while (!c.done)
    g_main_context_iteration (NULL, TRUE);
  g_assert_error (c.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);

  g_async_queue_push (t.queue, GINT_TO_POINTER (1));
  g_thread_join (t.thread);
  /* the late reply of "hang" comes back to this context, and is dropped */
  while (g_main_context_iteration (NULL, FALSE))
    ;
  g_assert_cmpuint (t.sent, ==, 3);
  g_clear_pointer (&a.ret, json_node_unref);
  g_clear_error (&b.error);
  g_clear_error (&c.error);
  g_async_queue_unref (t.queue);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  logged = g_ptr_array_new_with_free_func (g_free);
  /* Warnings are part of what is tested here; criticals still abort. */
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
  g_log_set_handler ("shadowd", G_LOG_LEVEL_MASK | G_LOG_FLAG_FATAL | G_LOG_FLAG_RECURSION,
                     log_capture, NULL);
#define ADD(path, fn) g_test_add (path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD ("/qmp/normal", test_normal);
  ADD ("/qmp/event-interleaved", test_event_interleaved);
  ADD ("/qmp/event-data", test_event_data);
  ADD ("/qmp/out-of-order", test_out_of_order);
  ADD ("/qmp/timeout", test_timeout);
  ADD ("/qmp/garbage", test_garbage);
  ADD ("/qmp/oversized", test_oversized);
  ADD ("/qmp/error-reply", test_error_reply);
  ADD ("/qmp/close-mid-reply", test_close_mid_reply);
  ADD ("/qmp/reconnect", test_reconnect);
  ADD ("/qmp/start-before-peer", test_start_before_peer);
  ADD ("/qmp/bad-greeting", test_bad_greeting);
  ADD ("/qmp/no-greeting", test_no_greeting);
  ADD ("/qmp/stop-cancels", test_stop_cancels);
  g_test_add_func ("/qmp/custom-transport", test_custom_transport);
  return g_test_run ();
}
