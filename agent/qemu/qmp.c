/* Asynchronous QMP client: framing, negotiation, id matching, timeouts,
 * reconnects.  Everything runs on the thread-default main context. */
#include "qmp.h"

#include <gio/gunixsocketaddress.h>
#include <string.h>

G_DEFINE_QUARK (shd-qmp-error-quark, shd_qmp_error)

#define READ_CHUNK 65536
/* How much of a bad line goes into the log. */
#define EXCERPT 80

typedef enum {
  ST_STOPPED,
  ST_WAITING,                   /* for the next reconnect attempt */
  ST_CONNECTING,
  ST_GREETING,
  ST_NEGOTIATING,
  ST_READY,
} State;

typedef struct {
  ShdQmp *self;
  char *id;
  char *command;
  GTask *task;
  guint timeout_id;
} Pending;

struct _ShdQmp {
  GObject parent_instance;
  char *path;
  ShdQmpConfig cfg;
  State state;
  /* Bumped whenever a connection ends, so that callbacks of operations
   * started on an old connection know to do nothing. */
  guint generation;
  GSocketClient *client;
  GSocketConnection *conn;
  GCancellable *cancel;         /* the current connection's operations */
  GString *line;
  gboolean discarding;          /* inside an oversized line */
  GQueue writeq;                /* GBytes, one command each */
  gboolean writing;
  GHashTable *pending;          /* id -> Pending */
  guint64 next_id;
  char *cap_id;
  JsonObject *greeting;
  guint backoff_ms;
  guint reconnect_id;
  guint handshake_id;
  guint connections;
  gboolean unreachable_logged;
  /* A transport of the caller's instead of the socket (libvirt) */
  ShdQmpTransport transport;
  gpointer transport_data;
  GDestroyNotify transport_free;
};

enum { SIG_READY, SIG_DISCONNECTED, SIG_EVENT, N_SIGNALS };
static guint signals[N_SIGNALS];

G_DEFINE_TYPE (ShdQmp, shd_qmp, G_TYPE_OBJECT)

static void connection_lost (ShdQmp *self, const char *reason);

void
shd_qmp_config_init (ShdQmpConfig *c)
{
  *c = (ShdQmpConfig) {
    .max_line = 1 << 20,
    .command_timeout_ms = 5000,
    .backoff_min_ms = 100,
    .backoff_max_ms = 10000,
  };
}

/* ---- callback context: a weak reference plus the connection generation */

typedef struct {
  GWeakRef self;
  guint generation;
  GBytes *bytes;                /* a write's data, alive until it completes */
} Ctx;

static Ctx *
ctx_new (ShdQmp *self)
{
  Ctx *c = g_new0 (Ctx, 1);

  g_weak_ref_init (&c->self, self);
  c->generation = self->generation;
  return c;
}

/* Frees the context; returns a strong reference to the client if the
 * operation still belongs to its current connection, else NULL. */
static ShdQmp *
ctx_take (Ctx *c)
{
  ShdQmp *self = g_weak_ref_get (&c->self);

  if (self && (self->generation != c->generation || self->state == ST_STOPPED))
    g_clear_object (&self);
  g_weak_ref_clear (&c->self);
  g_clear_pointer (&c->bytes, g_bytes_unref);
  g_free (c);
  return self;
}

/* ---- pending commands ---- */

static void
pending_free (Pending *p)
{
  g_clear_handle_id (&p->timeout_id, g_source_remove);
  g_clear_object (&p->task);
  g_free (p->id);
  g_free (p->command);
  g_free (p);
}

static Pending *
pending_take (ShdQmp *self, const char *id)
{
  Pending *p = g_hash_table_lookup (self->pending, id);

  if (p)
    g_hash_table_steal (self->pending, id);
  return p;
}

/* Completing a task may run its callback at once, and that callback may
 * issue commands: take everything out of the table first. */
static void
fail_all_pending (ShdQmp *self, GQuark domain, int code, const char *reason)
{
  g_autoptr (GList) list = g_hash_table_get_values (self->pending);

  g_hash_table_steal_all (self->pending);
  for (GList *l = list; l; l = l->next) {
    Pending *p = l->data;

    g_clear_handle_id (&p->timeout_id, g_source_remove);
    g_task_return_new_error (p->task, domain, code, "%s: '%s' %s",
                             self->path, p->command, reason);
    pending_free (p);
  }
}

static gboolean
pending_timeout (gpointer data)
{
  Pending *p = data;
  ShdQmp *self = p->self;
  guint ms = 0;

  p->timeout_id = 0;
  pending_take (self, p->id);
  ms = GPOINTER_TO_UINT (g_task_get_task_data (p->task));
  g_warning ("QMP %s: '%s' (id %s) got no reply within %u ms", self->path,
             p->command, p->id, ms);
  g_task_return_new_error (p->task, SHD_QMP_ERROR, SHD_QMP_ERROR_TIMEOUT,
                           "%s: '%s' got no reply within %u ms", self->path,
                           p->command, ms);
  pending_free (p);
  return G_SOURCE_REMOVE;
}

/* ---- writing ---- */

static void write_next (ShdQmp *self);

static void
on_written (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdQmp) self = NULL;

  g_output_stream_write_all_finish (G_OUTPUT_STREAM (src), res, NULL, &error);
  self = ctx_take (data);
  if (self == NULL)
    return;
  self->writing = FALSE;
  if (error) {
    g_autofree char *reason = g_strdup_printf ("write failed: %s", error->message);
    connection_lost (self, reason);
    return;
  }
  write_next (self);
}

static void
write_next (ShdQmp *self)
{
  GOutputStream *out;
  Ctx *c;
  gsize len;
  const char *data;

  if (self->writing || self->conn == NULL || g_queue_is_empty (&self->writeq))
    return;
  c = ctx_new (self);
  c->bytes = g_queue_pop_head (&self->writeq);
  data = g_bytes_get_data (c->bytes, &len);
  out = g_io_stream_get_output_stream (G_IO_STREAM (self->conn));
  self->writing = TRUE;
  g_output_stream_write_all_async (out, data, len, G_PRIORITY_DEFAULT,
                                   self->cancel, on_written, c);
}

static void
send_node (ShdQmp *self, JsonNode *node)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autofree char *data = NULL;
  char *line;
  gsize len;

  json_generator_set_root (gen, node);
  data = json_generator_to_data (gen, &len);
  /* One command per line: the generator never emits a raw newline. */
  line = g_malloc (len + 1);
  memcpy (line, data, len);
  line[len] = '\n';
  g_queue_push_tail (&self->writeq, g_bytes_new_take (line, len + 1));
  write_next (self);
}

static JsonNode *
build_command (const char *command, JsonObject *arguments, const char *id)
{
  g_autoptr (JsonBuilder) b = json_builder_new_immutable ();

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "execute");
  json_builder_add_string_value (b, command);
  if (arguments) {
    json_builder_set_member_name (b, "arguments");
    json_builder_add_value (b, json_node_init_object (json_node_alloc (), arguments));
  }
  if (id) {
    json_builder_set_member_name (b, "id");
    json_builder_add_string_value (b, id);
  }
  json_builder_end_object (b);
  return json_builder_get_root (b);
}

/* A command as QMP reads it, on one line without its newline; @arguments
 * is not taken */
char *
shd_qmp_command_line (const char *command, JsonObject *arguments)
{
  g_autoptr (JsonNode) root = build_command (command, arguments, NULL);
  g_autoptr (JsonGenerator) gen = json_generator_new ();

  json_generator_set_root (gen, root);
  return json_generator_to_data (gen, NULL);
}

/* ---- connection lifecycle ---- */

static void
teardown (ShdQmp *self)
{
  self->generation++;
  if (self->cancel) {
    g_cancellable_cancel (self->cancel);
    g_clear_object (&self->cancel);
  }
  g_clear_handle_id (&self->handshake_id, g_source_remove);
  if (self->conn) {
    /* Errors of the half-closed sub-streams are of no interest. */
    g_io_stream_close (G_IO_STREAM (self->conn), NULL, NULL);
    g_clear_object (&self->conn);
  }
  g_queue_clear_full (&self->writeq, (GDestroyNotify) g_bytes_unref);
  self->writing = FALSE;
  g_string_truncate (self->line, 0);
  self->discarding = FALSE;
  g_clear_pointer (&self->greeting, json_object_unref);
  g_clear_pointer (&self->cap_id, g_free);
}

static void do_connect (ShdQmp *self);

static gboolean
reconnect_cb (gpointer data)
{
  ShdQmp *self = data;

  self->reconnect_id = 0;
  do_connect (self);
  return G_SOURCE_REMOVE;
}

static void
schedule_reconnect (ShdQmp *self)
{
  guint delay = self->backoff_ms;

  self->state = ST_WAITING;
  self->backoff_ms = MIN (self->backoff_ms * 2, self->cfg.backoff_max_ms);
  g_clear_handle_id (&self->reconnect_id, g_source_remove);
  self->reconnect_id = g_timeout_add (delay, reconnect_cb, self);
}

static void
connection_lost (ShdQmp *self, const char *reason)
{
  gboolean was_ready = self->state == ST_READY;
  g_autoptr (ShdQmp) hold = g_object_ref (self);

  (void) hold;                  /* keeps self alive through the signal */
  teardown (self);
  g_message ("QMP %s: %s; reconnecting in %u ms", self->path, reason, self->backoff_ms);
  schedule_reconnect (self);
  fail_all_pending (self, SHD_QMP_ERROR, SHD_QMP_ERROR_DISCONNECTED,
                    "lost its connection before the reply");
  if (was_ready && self->state != ST_STOPPED)
    g_signal_emit (self, signals[SIG_DISCONNECTED], 0, reason);
}

static gboolean
handshake_timeout (gpointer data)
{
  ShdQmp *self = data;

  self->handshake_id = 0;
  g_warning ("QMP %s: no greeting and capabilities reply within %u ms",
             self->path, self->cfg.command_timeout_ms);
  connection_lost (self, "handshake timed out");
  return G_SOURCE_REMOVE;
}

static void
become_ready (ShdQmp *self)
{
  self->state = ST_READY;
  g_clear_handle_id (&self->handshake_id, g_source_remove);
  self->backoff_ms = self->cfg.backoff_min_ms;
  self->connections++;
  self->unreachable_logged = FALSE;
  g_debug ("QMP %s: ready (connection %u)", self->path, self->connections);
  g_signal_emit (self, signals[SIG_READY], 0);
}

/* ---- reading ---- */

static void
dispatch_event (ShdQmp *self, JsonObject *o)
{
  const char *name = json_object_get_string_member_with_default (o, "event", NULL);
  JsonObject *data = NULL;
  g_autoptr (JsonObject) empty = NULL;
  gint64 ts = 0;

  if (name == NULL) {
    g_warning ("QMP %s: event without a name, ignored", self->path);
    return;
  }
  if (json_object_has_member (o, "data") &&
      JSON_NODE_HOLDS_OBJECT (json_object_get_member (o, "data")))
    data = json_object_get_object_member (o, "data");
  else
    data = empty = json_object_new ();
  if (json_object_has_member (o, "timestamp") &&
      JSON_NODE_HOLDS_OBJECT (json_object_get_member (o, "timestamp"))) {
    JsonObject *t = json_object_get_object_member (o, "timestamp");
    ts = json_object_get_int_member_with_default (t, "seconds", 0) * G_USEC_PER_SEC +
         json_object_get_int_member_with_default (t, "microseconds", 0);
  }
  g_signal_emit (self, signals[SIG_EVENT], 0, name, data, ts);
}

static void
dispatch_reply (ShdQmp *self, JsonObject *o, const char *line)
{
  JsonNode *idn = json_object_get_member (o, "id");
  const char *id = JSON_NODE_HOLDS_VALUE (idn) && json_node_get_value_type (idn) == G_TYPE_STRING
                   ? json_node_get_string (idn) : NULL;
  Pending *p;

  if (id == NULL) {
    g_warning ("QMP %s: reply with an id that is not ours: %.*s", self->path,
               EXCERPT, line);
    return;
  }
  if (self->state == ST_NEGOTIATING) {
    if (g_strcmp0 (id, self->cap_id) != 0) {
      g_warning ("QMP %s: unexpected reply during negotiation: %.*s", self->path,
                 EXCERPT, line);
      return;
    }
    if (!json_object_has_member (o, "return")) {
      g_warning ("QMP %s: qmp_capabilities refused: %.*s", self->path, EXCERPT, line);
      connection_lost (self, "capabilities negotiation failed");
      return;
    }
    become_ready (self);
    return;
  }
  p = pending_take (self, id);
  if (p == NULL) {
    /* Most likely the reply to a command that already timed out. */
    g_debug ("QMP %s: reply to unknown id %s, dropped", self->path, id);
    return;
  }
  if (json_object_has_member (o, "return")) {
    g_task_return_pointer (p->task, json_node_copy (json_object_get_member (o, "return")),
                           (GDestroyNotify) json_node_unref);
  } else if (json_object_has_member (o, "error") &&
             JSON_NODE_HOLDS_OBJECT (json_object_get_member (o, "error"))) {
    JsonObject *e = json_object_get_object_member (o, "error");
    g_task_return_new_error (p->task, SHD_QMP_ERROR, SHD_QMP_ERROR_COMMAND, "%s: %s",
                             json_object_get_string_member_with_default (e, "class", "Error"),
                             json_object_get_string_member_with_default (e, "desc", "(no description)"));
  } else {
    g_warning ("QMP %s: reply with neither return nor error: %.*s", self->path,
               EXCERPT, line);
    g_task_return_new_error (p->task, SHD_QMP_ERROR, SHD_QMP_ERROR_COMMAND,
                             "malformed reply to '%s'", p->command);
  }
  pending_free (p);
}

static void
send_capabilities (ShdQmp *self)
{
  g_autoptr (JsonNode) cmd = NULL;

  self->cap_id = g_strdup_printf ("shd-cap-%u", self->generation);
  cmd = build_command ("qmp_capabilities", NULL, self->cap_id);
  self->state = ST_NEGOTIATING;
  send_node (self, cmd);
}

static void
handle_line (ShdQmp *self, char *line)
{
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  g_autoptr (GError) error = NULL;
  JsonNode *root;
  JsonObject *o;

  g_strchomp (line);
  if (*line == '\0')
    return;
  if (!json_parser_load_from_data (parser, line, -1, &error))
    root = NULL;
  else
    root = json_parser_get_root (parser);
  o = root && JSON_NODE_HOLDS_OBJECT (root) ? json_node_get_object (root) : NULL;
  if (self->state == ST_GREETING) {
    /* Whatever this is, it does not speak QMP: try again later. */
    if (o == NULL || !json_object_has_member (o, "QMP") ||
        !JSON_NODE_HOLDS_OBJECT (json_object_get_member (o, "QMP"))) {
      g_warning ("QMP %s: expected a greeting, got: %.*s", self->path, EXCERPT, line);
      connection_lost (self, "no QMP greeting");
      return;
    }
    self->greeting = json_object_ref (json_object_get_object_member (o, "QMP"));
    send_capabilities (self);
  } else if (error) {
    g_warning ("QMP %s: ignoring a line that is not JSON (%s): %.*s", self->path,
               error->message, EXCERPT, line);
  } else if (o == NULL) {
    g_warning ("QMP %s: ignoring a line that is not a JSON object: %.*s",
               self->path, EXCERPT, line);
  } else if (json_object_has_member (o, "event")) {
    dispatch_event (self, o);
  } else if (json_object_has_member (o, "id")) {
    dispatch_reply (self, o, line);
  } else if (json_object_has_member (o, "error")) {
    /* QEMU answers a command it could not parse without an id. */
    g_warning ("QMP %s: error without an id: %.*s", self->path, EXCERPT, line);
  } else {
    g_warning ("QMP %s: unexpected message: %.*s", self->path, EXCERPT, line);
  }
}

/* Splits input into lines, capping their length.  Stops early when a line
 * ended the connection. */
static void
feed (ShdQmp *self, const char *data, gsize len)
{
  const char *p = data, *end = data + len;
  guint gen = self->generation;

  while (p < end) {
    const char *nl = memchr (p, '\n', end - p);
    gsize n = nl ? (gsize) (nl - p) : (gsize) (end - p);

    if (!self->discarding) {
      if (self->line->len + n > self->cfg.max_line) {
        g_warning ("QMP %s: line longer than %zu bytes, discarded", self->path,
                   self->cfg.max_line);
        self->discarding = TRUE;
        g_string_truncate (self->line, 0);
      } else {
        g_string_append_len (self->line, p, n);
      }
    }
    if (nl == NULL)
      return;
    p = nl + 1;
    if (self->discarding) {
      self->discarding = FALSE;
      continue;
    }
    {
      g_autofree char *line = g_strndup (self->line->str, self->line->len);

      g_string_truncate (self->line, 0);
      handle_line (self, line);
    }
    if (gen != self->generation || self->state == ST_STOPPED)
      return;
  }
}

static void start_read (ShdQmp *self);

static void
on_read (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) bytes = g_input_stream_read_bytes_finish (G_INPUT_STREAM (src),
                                                               res, &error);
  g_autoptr (ShdQmp) self = ctx_take (data);
  gsize len;
  const char *buf;
  guint gen;

  if (self == NULL)
    return;
  if (bytes == NULL) {
    g_autofree char *reason = g_strdup_printf ("read failed: %s", error->message);
    connection_lost (self, reason);
    return;
  }
  buf = g_bytes_get_data (bytes, &len);
  if (len == 0) {
    if (self->line->len > 0 || self->discarding)
      g_warning ("QMP %s: connection closed in the middle of a line "
                 "(%zu bytes dropped)", self->path, self->line->len);
    connection_lost (self, "peer closed the connection");
    return;
  }
  gen = self->generation;
  feed (self, buf, len);
  if (gen == self->generation && self->state != ST_STOPPED)
    start_read (self);
}

static void
start_read (ShdQmp *self)
{
  GInputStream *in = g_io_stream_get_input_stream (G_IO_STREAM (self->conn));

  g_input_stream_read_bytes_async (in, READ_CHUNK, G_PRIORITY_DEFAULT,
                                   self->cancel, on_read, ctx_new (self));
}

static void
on_connected (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocketConnection) conn =
    g_socket_client_connect_finish (G_SOCKET_CLIENT (src), res, &error);
  g_autoptr (ShdQmp) self = ctx_take (data);

  if (self == NULL)
    return;
  if (conn == NULL) {
    /* Expected while QEMU is down: say it once per outage. */
    if (!self->unreachable_logged)
      g_message ("QMP %s: cannot connect (%s); retrying with backoff", self->path,
                 error->message);
    else
      g_debug ("QMP %s: cannot connect: %s", self->path, error->message);
    self->unreachable_logged = TRUE;
    g_clear_object (&self->cancel);
    schedule_reconnect (self);
    return;
  }
  self->conn = g_steal_pointer (&conn);
  self->state = ST_GREETING;
  self->handshake_id = g_timeout_add (self->cfg.command_timeout_ms, handshake_timeout, self);
  start_read (self);
}

static void
do_connect (ShdQmp *self)
{
  g_autoptr (GSocketAddress) addr = g_unix_socket_address_new (self->path);

  self->state = ST_CONNECTING;
  self->cancel = g_cancellable_new ();
  g_socket_client_connect_async (self->client, G_SOCKET_CONNECTABLE (addr),
                                 self->cancel, on_connected, ctx_new (self));
}

/* ---- public API ---- */

ShdQmp *
shd_qmp_new (const char *socket_path, const ShdQmpConfig *config)
{
  ShdQmp *self;

  g_return_val_if_fail (socket_path != NULL, NULL);
  self = g_object_new (SHD_TYPE_QMP, NULL);
  self->path = g_strdup (socket_path);
  if (config)
    self->cfg = *config;
  g_return_val_if_fail (self->cfg.max_line >= 64, self);
  g_return_val_if_fail (self->cfg.backoff_min_ms >= 1, self);
  self->backoff_ms = self->cfg.backoff_min_ms;
  return self;
}

ShdQmp *
shd_qmp_new_custom (const char *label, ShdQmpTransport transport, gpointer data,
                    GDestroyNotify free_data)
{
  ShdQmp *self;

  g_return_val_if_fail (label != NULL && transport != NULL, NULL);
  self = g_object_new (SHD_TYPE_QMP, NULL);
  self->path = g_strdup (label);
  self->transport = transport;
  self->transport_data = data;
  self->transport_free = free_data;
  self->state = ST_WAITING;
  return self;
}

void
shd_qmp_custom_set_ready (ShdQmp *self, gboolean ready, const char *reason)
{
  g_return_if_fail (SHD_IS_QMP (self) && self->transport != NULL);
  if (ready && self->state != ST_READY) {
    self->state = ST_READY;
    self->connections++;
    g_signal_emit (self, signals[SIG_READY], 0);
  } else if (!ready && self->state == ST_READY) {
    self->state = ST_WAITING;
    g_signal_emit (self, signals[SIG_DISCONNECTED], 0, reason ? reason : "gone");
  }
}

void
shd_qmp_custom_event (ShdQmp *self, const char *name, JsonObject *data, gint64 timestamp_us)
{
  g_autoptr (JsonObject) empty = NULL;

  g_return_if_fail (SHD_IS_QMP (self) && name != NULL);
  if (data == NULL)
    data = empty = json_object_new ();
  g_signal_emit (self, signals[SIG_EVENT], 0, name, data, timestamp_us);
}

/* Parses a reply line ({"return": ...} or {"error": ...}) into the value
 * of "return" or an error, as the socket client does. */
JsonNode *
shd_qmp_parse_reply (const char *command, const char *reply, GError **error)
{
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  JsonNode *root;
  JsonObject *o;

  if (!json_parser_load_from_data (parser, reply, -1, error))
    return NULL;
  root = json_parser_get_root (parser);
  o = root && JSON_NODE_HOLDS_OBJECT (root) ? json_node_get_object (root) : NULL;
  if (o && json_object_has_member (o, "return"))
    return json_node_copy (json_object_get_member (o, "return"));
  if (o && json_object_has_member (o, "error") &&
      JSON_NODE_HOLDS_OBJECT (json_object_get_member (o, "error"))) {
    JsonObject *e = json_object_get_object_member (o, "error");

    g_set_error (error, SHD_QMP_ERROR, SHD_QMP_ERROR_COMMAND, "%s: %s",
                 json_object_get_string_member_with_default (e, "class", "Error"),
                 json_object_get_string_member_with_default (e, "desc", "(no description)"));
    return NULL;
  }
  g_set_error (error, SHD_QMP_ERROR, SHD_QMP_ERROR_COMMAND,
               "malformed reply to '%s': %.*s", command, EXCERPT, reply);
  return NULL;
}

/* One command over a custom transport.  Everything here runs on the
 * client's context: the transport's completion and the cancellation (a
 * GCancellableSource) both come as callbacks there, and whichever comes
 * first completes the caller's task. */
typedef struct {
  char *command;
  GTask *task;                  /* the caller's */
  GSource *cancelled;           /* NULL without a cancellable */
  gboolean completed;
} CustomCall;

static void
custom_call_free (CustomCall *c)
{
  if (c->cancelled) {
    g_source_destroy (c->cancelled);
    g_source_unref (c->cancelled);
  }
  g_object_unref (c->task);
  g_free (c->command);
  g_free (c);
}

static gboolean
custom_cancelled (GCancellable *cancellable, gpointer data)
{
  CustomCall *c = data;

  (void) cancellable;
  if (!c->completed) {
    c->completed = TRUE;
    g_task_return_error_if_cancelled (c->task);
  }
  return G_SOURCE_REMOVE;
}

static void
custom_done (GObject *src, GAsyncResult *res, gpointer data)
{
  ShdQmp *self = SHD_QMP (src);
  CustomCall *c = data;
  g_autoptr (GError) error = NULL;
  g_autofree char *reply = g_task_propagate_pointer (G_TASK (res), &error);

  if (c->completed) {
    custom_call_free (c);       /* cancelled meanwhile: the reply is dropped */
    return;
  }
  c->completed = TRUE;
  if (reply == NULL) {
    g_task_return_new_error (c->task, SHD_QMP_ERROR, SHD_QMP_ERROR_DISCONNECTED,
                             "%s: '%s' failed: %s", self->path, c->command, error->message);
  } else {
    JsonNode *ret = shd_qmp_parse_reply (c->command, reply, &error);

    if (ret == NULL)
      g_task_return_error (c->task, g_steal_pointer (&error));
    else
      g_task_return_pointer (c->task, ret, (GDestroyNotify) json_node_unref);
  }
  custom_call_free (c);
}

static void
custom_execute (ShdQmp *self, GTask *task, const char *command, JsonObject *arguments)
{
  /* libvirt assigns its own ids: the command goes without one */
  g_autoptr (JsonNode) cmd = build_command (command, arguments, NULL);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autofree char *line = NULL;
  g_autoptr (GTask) sent = NULL;
  GCancellable *cancellable = g_task_get_cancellable (task);
  CustomCall *c;

  if (g_task_return_error_if_cancelled (task))
    return;
  c = g_new0 (CustomCall, 1);
  c->command = g_strdup (command);
  c->task = g_object_ref (task);
  if (cancellable) {
    c->cancelled = g_cancellable_source_new (cancellable);
    g_source_set_callback (c->cancelled, G_SOURCE_FUNC (custom_cancelled), c, NULL);
    g_source_attach (c->cancelled, g_task_get_context (task));
  }
  json_generator_set_root (gen, cmd);
  line = json_generator_to_data (gen, NULL);
  /* the transport's own task: no cancellable, it cannot be interrupted */
  sent = g_task_new (self, NULL, custom_done, c);
  g_task_set_source_tag (sent, custom_execute);
  self->transport (line, g_steal_pointer (&sent), self->transport_data);
}

void
shd_qmp_start (ShdQmp *self)
{
  g_return_if_fail (SHD_IS_QMP (self));
  if (self->transport)
    return;                     /* readiness comes from its owner */
  if (self->state != ST_STOPPED)
    return;
  self->backoff_ms = self->cfg.backoff_min_ms;
  do_connect (self);
}

void
shd_qmp_stop (ShdQmp *self)
{
  g_return_if_fail (SHD_IS_QMP (self));
  if (self->state == ST_STOPPED)
    return;
  teardown (self);
  g_clear_handle_id (&self->reconnect_id, g_source_remove);
  self->state = ST_STOPPED;
  fail_all_pending (self, G_IO_ERROR, G_IO_ERROR_CANCELLED, "was cancelled");
}

gboolean
shd_qmp_is_ready (ShdQmp *self)
{
  return self->state == ST_READY;
}

const char *
shd_qmp_get_path (ShdQmp *self)
{
  return self->path;
}

JsonObject *
shd_qmp_get_greeting (ShdQmp *self)
{
  return self->greeting;
}

guint
shd_qmp_get_connection_count (ShdQmp *self)
{
  return self->connections;
}

void
shd_qmp_execute_async (ShdQmp *self, const char *command, JsonObject *arguments,
                       guint timeout_ms, GCancellable *cancellable,
                       GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = NULL;
  g_autoptr (JsonNode) node = NULL;
  Pending *p;

  g_return_if_fail (SHD_IS_QMP (self));
  g_return_if_fail (command != NULL);
  task = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (task, shd_qmp_execute_async);
  if (self->transport && self->state == ST_READY) {
    custom_execute (self, task, command, arguments);
    return;
  }
  if (self->state != ST_READY) {
    g_task_return_new_error (task, SHD_QMP_ERROR, SHD_QMP_ERROR_NOT_CONNECTED,
                             "%s: not connected, '%s' not sent", self->path, command);
    return;
  }
  if (timeout_ms == 0)
    timeout_ms = self->cfg.command_timeout_ms;
  g_task_set_task_data (task, GUINT_TO_POINTER (timeout_ms), NULL);
  p = g_new0 (Pending, 1);
  p->self = self;
  p->id = g_strdup_printf ("shd-%" G_GUINT64_FORMAT, ++self->next_id);
  p->command = g_strdup (command);
  p->task = g_steal_pointer (&task);
  p->timeout_id = g_timeout_add (timeout_ms, pending_timeout, p);
  g_hash_table_insert (self->pending, p->id, p);
  node = build_command (command, arguments, p->id);
  send_node (self, node);
}

JsonNode *
shd_qmp_execute_finish (ShdQmp *self, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, self), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

/* ---- GObject ---- */

static void
shd_qmp_dispose (GObject *object)
{
  ShdQmp *self = SHD_QMP (object);

  shd_qmp_stop (self);
  g_clear_object (&self->client);
  if (self->transport_free && self->transport_data)
    self->transport_free (self->transport_data);
  self->transport_data = NULL;
  G_OBJECT_CLASS (shd_qmp_parent_class)->dispose (object);
}

static void
shd_qmp_finalize (GObject *object)
{
  ShdQmp *self = SHD_QMP (object);

  g_hash_table_unref (self->pending);
  g_string_free (self->line, TRUE);
  g_free (self->path);
  G_OBJECT_CLASS (shd_qmp_parent_class)->finalize (object);
}

static void
shd_qmp_class_init (ShdQmpClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS (klass);

  oc->dispose = shd_qmp_dispose;
  oc->finalize = shd_qmp_finalize;
  signals[SIG_READY] = g_signal_new ("ready", G_TYPE_FROM_CLASS (klass),
                                     G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                     G_TYPE_NONE, 0);
  signals[SIG_DISCONNECTED] = g_signal_new ("disconnected", G_TYPE_FROM_CLASS (klass),
                                            G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                            G_TYPE_NONE, 1, G_TYPE_STRING);
  signals[SIG_EVENT] = g_signal_new ("event", G_TYPE_FROM_CLASS (klass),
                                     G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                     G_TYPE_NONE, 3, G_TYPE_STRING,
                                     JSON_TYPE_OBJECT, G_TYPE_INT64);
}

static void
shd_qmp_init (ShdQmp *self)
{
  shd_qmp_config_init (&self->cfg);
  self->state = ST_STOPPED;
  self->client = g_socket_client_new ();
  self->line = g_string_new (NULL);
  g_queue_init (&self->writeq);
  self->pending = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                         (GDestroyNotify) pending_free);
}
