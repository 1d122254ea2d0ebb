/* qmp-sim: a simulated QMP peer serving many shadow nodes, for scale
 * benchmarks of shadowd without QEMU.
 *
 *   qmp-sim --dir DIR --disks N
 *
 * Listens on DIR/qmp-0.sock .. DIR/qmp-(N-1).sock.  Each socket is one
 * "QEMU" with a shadow node sh0 over tier-a (cheap: 200 IOPS, 2 ms) and
 * tier-b (fast: 20000 IOPS, 0.2 ms).  The load follows a 5-minute cycle
 * with a short spike per cycle, phase-shifted per disk; latency follows the
 * active tier.  Answers qmp_capabilities, query-blockstats,
 * query-named-block-nodes and blockdev-reopen (switching the active child
 * and emitting SHADOW_SWITCHED); anything else gets a GenericError.
 *
 * With --start S, disk 0 starts S seconds into its cycle (the spike is at
 * 200-230 s); without it, where the monotonic clock happens to be, which
 * makes a test's path depend on the machine's uptime. */
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

typedef struct {
  guint index;
  double phase;                 /* seconds added to the clock */
  gboolean fast;                /* tier-b active */
  gint64 last_us;
  double rd_ops, rd_bytes, rd_ns, wr_ops, wr_bytes, wr_ns;
  double child_ops[2], child_ns[2];
  GSocketService *service;
} Sim;

typedef struct {
  Sim *sim;
  GSocketConnection *conn;
  GDataInputStream *in;
  GOutputStream *out;
} Client;

static void
advance (Sim *s)
{
  gint64 now = g_get_monotonic_time ();
  double dt = (now - s->last_us) / 1e6, t = now / 1e6 + s->phase;
  double cyc = fmod (t, 300);
  double offered = 60 + 40 * sin (2 * G_PI * t / 300) + (cyc > 200 && cyc < 230 ? 900 : 0);
  double cap = s->fast ? 20000 : 200, base = s->fast ? 0.2 : 2.0;
  double iops = MIN (offered, cap * 0.97), rho = iops / cap;
  double lat = rho < 0.97 ? base / (1 - rho) : 160;
  double n = iops * dt;

  s->last_us = now;
  if (dt <= 0)
    return;
  s->rd_ops += n * 0.8;
  s->rd_bytes += n * 0.8 * 4096;
  s->rd_ns += n * 0.8 * lat * 1e6;
  s->wr_ops += n * 0.2;
  s->wr_bytes += n * 0.2 * 4096;
  s->wr_ns += n * 0.2 * lat * 1e6;
  s->child_ops[s->fast] += n;
  s->child_ns[s->fast] += n * lat * 1e6;
  s->child_ops[!s->fast] += n * 0.2;
  s->child_ns[!s->fast] += n * 0.2 * (s->fast ? 2.0 : 0.2) * 1e6;
}

static void
counters (JsonBuilder *b, double rd, double rdb, double rdn, double wr, double wrb,
          double wrn)
{
  json_builder_set_member_name (b, "rd-operations");
  json_builder_add_int_value (b, (gint64) rd);
  json_builder_set_member_name (b, "rd-bytes");
  json_builder_add_int_value (b, (gint64) rdb);
  json_builder_set_member_name (b, "rd-total-time-ns");
  json_builder_add_int_value (b, (gint64) rdn);
  json_builder_set_member_name (b, "wr-operations");
  json_builder_add_int_value (b, (gint64) wr);
  json_builder_set_member_name (b, "wr-bytes");
  json_builder_add_int_value (b, (gint64) wrb);
  json_builder_set_member_name (b, "wr-total-time-ns");
  json_builder_add_int_value (b, (gint64) wrn);
  json_builder_set_member_name (b, "flush-operations");
  json_builder_add_int_value (b, 0);
}

static void
blockstats (Sim *s, JsonBuilder *b)
{
  const char *names[2] = { "tier-a", "tier-b" };

  advance (s);
  json_builder_begin_array (b);
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "node-name");
  json_builder_add_string_value (b, "sh0");
  json_builder_set_member_name (b, "stats");
  json_builder_begin_object (b);
  json_builder_end_object (b);
  json_builder_set_member_name (b, "driver-specific");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "driver");
  json_builder_add_string_value (b, "shadow");
  json_builder_set_member_name (b, "active");
  json_builder_add_string_value (b, names[s->fast]);
  counters (b, s->rd_ops, s->rd_bytes, s->rd_ns, s->wr_ops, s->wr_bytes, s->wr_ns);
  json_builder_set_member_name (b, "children");
  json_builder_begin_array (b);
  for (int i = 0; i < 2; i++) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "node-name");
    json_builder_add_string_value (b, names[i]);
    json_builder_set_member_name (b, "state");
    json_builder_add_string_value (b, i == s->fast ? "active" : "synced");
    json_builder_set_member_name (b, "valid-bytes");
    json_builder_add_int_value (b, (gint64) 1 << 30);
    json_builder_set_member_name (b, "failed-operations");
    json_builder_add_int_value (b, 0);
    json_builder_set_member_name (b, "copied-bytes");
    json_builder_add_int_value (b, (gint64) 1 << 30);
    counters (b, s->child_ops[i] * (i == s->fast ? 0.8 : 0), 0,
              s->child_ns[i] * (i == s->fast ? 0.8 : 0), s->child_ops[i] * 0.2, 0,
              s->child_ns[i] * 0.2);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  json_builder_end_object (b);
  json_builder_end_array (b);
}

static void
send_node (Client *c, JsonNode *n)
{
  g_autofree char *text = json_to_string (n, FALSE);
  g_autofree char *line = g_strconcat (text, "\n", NULL);

  g_output_stream_write_all (c->out, line, strlen (line), NULL, NULL, NULL);
}

static void
client_free (Client *c)
{
  g_io_stream_close (G_IO_STREAM (c->conn), NULL, NULL);
  g_object_unref (c->in);
  g_object_unref (c->conn);
  g_free (c);
}

static void read_next (Client *c);

static void
on_line (GObject *src, GAsyncResult *res, gpointer data)
{
  Client *c = data;
  g_autofree char *line = g_data_input_stream_read_line_finish (G_DATA_INPUT_STREAM (src),
                                                                 res, NULL, NULL);
  g_autoptr (JsonParser) p = json_parser_new ();
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonNode) reply = NULL;
  JsonObject *o, *args;
  const char *cmd;
  JsonNode *id;
  gboolean switched = FALSE;
  const char *old = NULL;

  if (line == NULL) {
    client_free (c);
    return;
  }
  if (!json_parser_load_from_data (p, line, -1, NULL) ||
      !JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p))) {
    read_next (c);
    return;
  }
  o = json_node_get_object (json_parser_get_root (p));
  cmd = json_object_get_string_member_with_default (o, "execute", "");
  id = json_object_get_member (o, "id");
  args = json_object_has_member (o, "arguments") ?
         json_object_get_object_member (o, "arguments") : NULL;
  json_builder_begin_object (b);
  if (strcmp (cmd, "qmp_capabilities") == 0) {
    json_builder_set_member_name (b, "return");
    json_builder_begin_object (b);
    json_builder_end_object (b);
  } else if (strcmp (cmd, "query-blockstats") == 0) {
    json_builder_set_member_name (b, "return");
    blockstats (c->sim, b);
  } else if (strcmp (cmd, "query-named-block-nodes") == 0) {
    json_builder_set_member_name (b, "return");
    json_builder_begin_array (b);
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "node-name");
    json_builder_add_string_value (b, "sh0");
    json_builder_set_member_name (b, "drv");
    json_builder_add_string_value (b, "shadow");
    json_builder_set_member_name (b, "image");
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "virtual-size");
    json_builder_add_int_value (b, (gint64) 1 << 30);
    json_builder_end_object (b);
    json_builder_end_object (b);
    json_builder_end_array (b);
  } else if (strcmp (cmd, "blockdev-reopen") == 0 && args) {
    JsonArray *opts = json_object_get_array_member (args, "options");
    JsonObject *n = opts ? json_array_get_object_element (opts, 0) : NULL;
    const char *child = n ? json_object_get_string_member_with_default (n, "active-child", "")
                          : "";
    gboolean fast = strcmp (child, "tier-b") == 0;

    advance (c->sim);
    old = c->sim->fast ? "tier-b" : "tier-a";
    switched = fast != c->sim->fast;
    c->sim->fast = fast;
    json_builder_set_member_name (b, "return");
    json_builder_begin_object (b);
    json_builder_end_object (b);
  } else {
    json_builder_set_member_name (b, "error");
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "class");
    json_builder_add_string_value (b, "GenericError");
    json_builder_set_member_name (b, "desc");
    json_builder_add_string_value (b, "not simulated");
    json_builder_end_object (b);
  }
  if (id) {
    json_builder_set_member_name (b, "id");
    json_builder_add_value (b, json_node_copy (id));
  }
  json_builder_end_object (b);
  reply = json_builder_get_root (b);
  if (switched) {
    g_autofree char *ev = g_strdup_printf (
      "{\"event\": \"SHADOW_SWITCHED\", \"data\": {\"node-name\": \"sh0\", "
      "\"child\": \"%s\", \"old-child\": \"%s\", \"pause-ns\": 100000}, "
      "\"timestamp\": {\"seconds\": 0, \"microseconds\": 0}}\n",
      c->sim->fast ? "tier-b" : "tier-a", old);
    g_output_stream_write_all (c->out, ev, strlen (ev), NULL, NULL, NULL);
  }
  send_node (c, reply);
  read_next (c);
}

static void
read_next (Client *c)
{
  g_data_input_stream_read_line_async (c->in, G_PRIORITY_DEFAULT, NULL, on_line, c);
}

static gboolean
incoming (GSocketService *svc, GSocketConnection *conn, GObject *src, gpointer data)
{
  static const char greeting[] = "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, "
    "\"minor\": 0, \"major\": 10}, \"package\": \"sim\"}, \"capabilities\": []}}\n";
  Client *c = g_new0 (Client, 1);

  (void) svc;
  (void) src;
  c->sim = data;
  c->conn = g_object_ref (conn);
  c->in = g_data_input_stream_new (g_io_stream_get_input_stream (G_IO_STREAM (conn)));
  c->out = g_io_stream_get_output_stream (G_IO_STREAM (conn));
  g_output_stream_write_all (c->out, greeting, strlen (greeting), NULL, NULL, NULL);
  read_next (c);
  return TRUE;
}

static gboolean
quit (gpointer loop)
{
  g_main_loop_quit (loop);
  return G_SOURCE_REMOVE;
}

int
main (int argc, char **argv)
{
  g_autofree char *dir = NULL;
  int disks = 1;
  double start = NAN;
  GOptionEntry entries[] = {
    { "dir", 0, 0, G_OPTION_ARG_FILENAME, &dir, "Directory for the sockets", "DIR" },
    { "disks", 0, 0, G_OPTION_ARG_INT, &disks, "Number of simulated nodes", "N" },
    { "start", 0, 0, G_OPTION_ARG_DOUBLE, &start, "Seconds into the cycle at start", "S" },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- simulated QMP peers");
  g_autoptr (GMainLoop) loop = g_main_loop_new (NULL, FALSE);
  Sim *sims;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, NULL) || dir == NULL || disks < 1) {
    g_printerr ("usage: qmp-sim --dir DIR --disks N [--start S]\n");
    return 2;
  }
  sims = g_new0 (Sim, disks);
  for (int i = 0; i < disks; i++) {
    g_autofree char *path = g_strdup_printf ("%s/qmp-%d.sock", dir, i);
    g_autoptr (GSocketAddress) addr = g_unix_socket_address_new (path);
    g_autoptr (GError) error = NULL;

    g_unlink (path);            /* left by an earlier run */
    sims[i].index = i;
    sims[i].phase = i * 7.3;
    if (!isnan (start))
      sims[i].phase += start - fmod (g_get_monotonic_time () / 1e6, 300);
    sims[i].last_us = g_get_monotonic_time ();
    sims[i].service = g_socket_service_new ();
    if (!g_socket_listener_add_address (G_SOCKET_LISTENER (sims[i].service), addr,
                                        G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT,
                                        NULL, NULL, &error)) {
      g_printerr ("qmp-sim: %s: %s\n", path, error->message);
      return 1;
    }
    g_signal_connect (sims[i].service, "incoming", G_CALLBACK (incoming), &sims[i]);
    g_socket_service_start (sims[i].service);
  }
  g_unix_signal_add (SIGTERM, quit, loop);
  g_unix_signal_add (SIGINT, quit, loop);
  g_main_loop_run (loop);
  for (int i = 0; i < disks; i++) {
    g_autofree char *path = g_strdup_printf ("%s/qmp-%d.sock", dir, i);

    g_socket_service_stop (sims[i].service);
    g_object_unref (sims[i].service);
    g_unlink (path);
  }
  g_free (sims);
  return 0;
}
