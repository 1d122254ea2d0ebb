/* libFuzzer target: the QMP reader.  A peer in a thread accepts the
 * client's connection, sends a greeting, answers qmp_capabilities, then
 * sends the fuzz input as is and closes.  The client has a
 * query-blockstats in flight, whose reply (if the input contains one that
 * matches) goes through the collector's parser.  Everything must end in a
 * clean disconnect: no crash, no leak, no hang. */
#include "collector.h"
#include "qmp.h"

#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, " \
                 "\"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}\n"

static char *path;
static GSocket *listener;

typedef struct {
  const uint8_t *data;
  size_t size;
} Input;

static gpointer
peer (gpointer p)
{
  Input *in = p;
  GSocket *s = g_socket_accept (listener, NULL, NULL);
  char buf[4096];
  GString *line = g_string_new (NULL);
  g_autofree char *reply = NULL;
  const char *id, *end;

  if (s == NULL)
    return NULL;
  g_socket_set_timeout (s, 2);
  g_socket_send (s, GREETING, strlen (GREETING), NULL, NULL);
  /* the capabilities command: echo its id */
  while (!strchr (line->str, '\n')) {
    gssize n = g_socket_receive (s, buf, sizeof buf, NULL, NULL);

    if (n <= 0)
      goto out;
    g_string_append_len (line, buf, n);
  }
  id = strstr (line->str, "\"id\"");
  id = id ? strchr (id + 4, '"') : NULL;
  end = id ? strchr (id + 1, '"') : NULL;
  if (id && end) {
    reply = g_strdup_printf ("{\"return\": {}, \"id\": %.*s}\n", (int) (end - id + 1), id);
    g_socket_send (s, reply, strlen (reply), NULL, NULL);
  }
  for (size_t off = 0; off < in->size;) {
    gssize n = g_socket_send (s, (const char *) in->data + off, in->size - off, NULL, NULL);

    if (n <= 0)
      break;
    off += n;
  }
out:
  g_socket_shutdown (s, FALSE, TRUE, NULL);
  /* drain what the client still sends until it closes */
  while (g_socket_receive (s, buf, sizeof buf, NULL, NULL) > 0)
    ;
  g_socket_close (s, NULL);
  g_object_unref (s);
  g_string_free (line, TRUE);
  return NULL;
}

typedef struct {
  gboolean done;
  ShdCollector *coll;
} State;

static void
on_stats (GObject *src, GAsyncResult *res, gpointer data)
{
  State *st = data;
  GError *error = NULL;
  JsonNode *reply = shd_qmp_execute_finish (SHD_QMP (src), res, &error);

  if (reply) {
    ShdShadowRates *r = shd_collector_push (st->coll, reply, g_get_monotonic_time (), &error);

    if (r)
      shd_shadow_rates_free (r);
    json_node_unref (reply);
  }
  g_clear_error (&error);
}

static void
on_ready (ShdQmp *qmp, gpointer data)
{
  JsonObject *args = json_object_new ();

  json_object_set_boolean_member (args, "query-nodes", TRUE);
  shd_qmp_execute_async (qmp, "query-blockstats", args, 0, NULL, on_stats, data);
  shd_qmp_execute_async (qmp, "query-blockstats", args, 0, NULL, on_stats, data);
  json_object_unref (args);
}

static void
on_disconnected (ShdQmp *qmp, const char *reason, gpointer data)
{
  (void) qmp;
  (void) reason;
  ((State *) data)->done = TRUE;
}

static void
on_event (ShdQmp *qmp, const char *name, JsonObject *obj, gint64 ts, gpointer data)
{
  (void) qmp; (void) ts; (void) data;
  g_assert (name != NULL && obj != NULL);
}

static gboolean
deadline (gpointer p)
{
  ((State *) p)->done = TRUE;
  return G_SOURCE_REMOVE;
}

static void
quiet (const char *d, GLogLevelFlags l, const char *m, gpointer u)
{
  (void) d; (void) l; (void) m; (void) u;
}

static void
setup (void)
{
  g_autofree char *dir = g_dir_make_tmp ("shd-fuzz-XXXXXX", NULL);
  g_autoptr (GSocketAddress) addr = NULL;

  path = g_build_filename (dir, "qmp.sock", NULL);
  addr = g_unix_socket_address_new (path);
  listener = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, 0, NULL);
  g_assert (g_socket_bind (listener, addr, TRUE, NULL));
  g_assert (g_socket_listen (listener, NULL));
  g_log_set_default_handler (quiet, NULL);
  g_log_set_writer_func (g_log_writer_default, NULL, NULL);
  g_setenv ("G_MESSAGES_DEBUG", "", TRUE);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  Input in = { data, size };
  State st = { FALSE, shd_collector_new ("sh0") };
  ShdQmpConfig c;
  ShdQmp *qmp;
  GThread *t;
  guint timer;

  if (path == NULL)
    setup ();
  shd_qmp_config_init (&c);
  c.max_line = 4096;
  c.command_timeout_ms = 500;
  c.backoff_min_ms = c.backoff_max_ms = 60000;
  qmp = shd_qmp_new (path, &c);
  g_signal_connect (qmp, "ready", G_CALLBACK (on_ready), &st);
  g_signal_connect (qmp, "disconnected", G_CALLBACK (on_disconnected), &st);
  g_signal_connect (qmp, "event", G_CALLBACK (on_event), &st);
  t = g_thread_new ("peer", peer, &in);
  timer = g_timeout_add (3000, deadline, &st);
  shd_qmp_start (qmp);
  while (!st.done)
    g_main_context_iteration (NULL, TRUE);
  if (!st.done || g_main_context_find_source_by_id (NULL, timer))
    g_source_remove (timer);
  shd_qmp_stop (qmp);
  g_signal_handlers_disconnect_by_data (qmp, &st);
  g_object_unref (qmp);
  g_thread_join (t);
  while (g_main_context_iteration (NULL, FALSE))
    ;
  shd_collector_free (st.coll);
  return 0;
}
