/* The control socket; see control.h. */
#include "control.h"

#include "conn.h"

#include <errno.h>
#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <string.h>

#define CONTROL_MAX_LINE (64 * 1024)

typedef struct {
  const ShdCommand *command;
  GObject *owner;
} Entry;

struct _ShdControl {
  GObject parent_instance;
  GSocketService *service;
  GCancellable *cancel;
  char *path;                   /* NULL once removed, or when never ours */
  GHashTable *commands;         /* name -> Entry */
  GPtrArray *names;             /* in registration order, for messages */
  GPtrArray *owners;            /* GObject */
};

G_DEFINE_TYPE (ShdControl, shd_control, G_TYPE_OBJECT)

/* ---- answering ---- */

static void
reply_node (ShdConn *conn, JsonNode *node)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autofree char *text = NULL;
  gsize len;

  json_generator_set_root (gen, node);
  text = json_generator_to_data (gen, &len);
  text = g_realloc (text, len + 2);
  text[len] = '\n';
  text[len + 1] = '\0';
  shd_conn_reply (conn, text, len + 1, FALSE);
}

static void
reply_error (ShdConn *conn, const char *message)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonNode) n = NULL;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "error");
  json_builder_add_string_value (b, message);
  json_builder_end_object (b);
  n = json_builder_get_root (b);
  reply_node (conn, n);
}

static void
reply_return (ShdConn *conn, JsonNode *value)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonNode) n = NULL;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "return");
  json_builder_add_value (b, value);
  json_builder_end_object (b);
  n = json_builder_get_root (b);
  reply_node (conn, n);
}

static void
command_done (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (ShdConn) conn = data;
  g_autoptr (GError) error = NULL;
  JsonNode *ret = g_task_propagate_pointer (G_TASK (res), &error);

  (void) src;
  if (ret == NULL)
    reply_error (conn, error ? error->message : "failed");
  else
    reply_return (conn, ret);   /* takes ret */
}

static char *
command_list (ShdControl *ctl)
{
  g_ptr_array_add (ctl->names, NULL);
  {
    char *list = g_strjoinv (", ", (char **) ctl->names->pdata);

    g_ptr_array_remove_index (ctl->names, ctl->names->len - 1);
    return list;
  }
}

static void
on_request (GObject *owner, ShdConn *conn, const char *line, gsize len)
{
  ShdControl *ctl = SHD_CONTROL (owner);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  g_autoptr (GTask) task = NULL;
  JsonNode *root, *cmd;
  JsonObject *req;
  const char *name;
  const Entry *e;

  while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
    len--;
  if (len == 0) {
    shd_conn_reply (conn, NULL, 0, FALSE);
    return;
  }
  if (!json_parser_load_from_data (parser, line, len, &error)) {
    reply_error (conn, error->message);
    return;
  }
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root)) {
    reply_error (conn, "a request is a JSON object");
    return;
  }
  req = json_node_get_object (root);
  cmd = json_object_get_member (req, "command");
  name = cmd && JSON_NODE_HOLDS_VALUE (cmd) &&
         json_node_get_value_type (cmd) == G_TYPE_STRING ? json_node_get_string (cmd) : NULL;
  if (name == NULL) {
    reply_error (conn, "a request needs a \"command\"");
    return;
  }
  e = g_hash_table_lookup (ctl->commands, name);
  if (e == NULL) {
    g_autofree char *list = command_list (ctl);
    g_autofree char *msg = g_strdup_printf ("unknown command '%s' (%s)", name, list);

    reply_error (conn, msg);
    return;
  }
  task = g_task_new (ctl, ctl->cancel, command_done, shd_conn_ref (conn));
  g_task_set_source_tag (task, on_request);
  g_task_set_name (task, e->command->name);
  if (e->command->run_async) {
    e->command->run_async (e->owner, req, g_steal_pointer (&task));
    return;
  }
  {
    JsonNode *ret = e->command->run (e->owner, req, &error);

    if (ret)
      g_task_return_pointer (task, ret, (GDestroyNotify) json_node_unref);
    else
      g_task_return_error (task, error ? g_steal_pointer (&error) :
                           g_error_new_literal (G_IO_ERROR, G_IO_ERROR_FAILED, "failed"));
  }
}

static gboolean
on_incoming (GSocketService *service, GSocketConnection *stream, GObject *src,
             gpointer data)
{
  ShdControl *ctl = data;
  g_autoptr (ShdConn) conn = NULL;

  (void) service;
  (void) src;
  conn = shd_conn_start (stream, SHD_CONN_LINES, CONTROL_MAX_LINE, G_OBJECT (ctl),
                         on_request, ctl->cancel);
  return TRUE;
}

/* ---- the socket file ---- */

/* Someone accepts connections on path right now. */
static gboolean
is_live (const char *path)
{
  g_autoptr (GSocket) s = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM,
                                        G_SOCKET_PROTOCOL_DEFAULT, NULL);
  g_autoptr (GSocketAddress) addr = g_unix_socket_address_new (path);

  /* a local connect is answered at once: accepted (or queued) by a
   * listener, refused when nobody listens */
  return s && g_socket_connect (s, addr, NULL, NULL);
}

static gboolean
claim_path (const char *path, GError **error)
{
  g_autofree char *dir = g_path_get_dirname (path);
  GStatBuf st;

  if (g_mkdir_with_parents (dir, 0755) < 0) {
    int e = errno;

    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e), "cannot create %s: %s",
                 dir, g_strerror (e));
    return FALSE;
  }
  if (g_lstat (path, &st) < 0 || !S_ISSOCK (st.st_mode))
    return TRUE;                /* nothing there, or not a socket: bind says */
  if (is_live (path)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE,
                 "control socket %s: another shadowd is listening on it; stop it first, "
                 "or give this one another [shadowd] control path", path);
    return FALSE;
  }
  /* left by an earlier run that did not remove it */
  g_unlink (path);
  return TRUE;
}

ShdControl *
shd_control_new (const char *path, GError **error)
{
  g_autoptr (ShdControl) ctl = g_object_new (SHD_TYPE_CONTROL, NULL);
  g_autoptr (GSocketAddress) addr = NULL;

  if (!claim_path (path, error))
    return NULL;
  addr = g_unix_socket_address_new (path);
  if (!g_socket_listener_add_address (G_SOCKET_LISTENER (ctl->service), addr,
                                      G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT,
                                      NULL, NULL, error)) {
    g_prefix_error (error, "control socket %s: ", path);
    return NULL;
  }
  ctl->path = g_strdup (path);
  g_chmod (path, 0660);
  g_signal_connect_object (ctl->service, "incoming", G_CALLBACK (on_incoming), ctl, 0);
  g_socket_service_start (ctl->service);
  return g_steal_pointer (&ctl);
}

void
shd_control_add_commands (ShdControl *ctl, const ShdCommand *commands, gsize n,
                          GObject *owner)
{
  g_return_if_fail (SHD_IS_CONTROL (ctl) && (owner == NULL || G_IS_OBJECT (owner)));
  if (owner)
    g_ptr_array_add (ctl->owners, g_object_ref (owner));
  for (gsize i = 0; i < n; i++) {
    Entry *e;

    g_return_if_fail ((commands[i].run == NULL) != (commands[i].run_async == NULL));
    g_return_if_fail (!g_hash_table_contains (ctl->commands, commands[i].name));
    e = g_new0 (Entry, 1);
    e->command = &commands[i];
    e->owner = owner;
    g_hash_table_insert (ctl->commands, (gpointer) commands[i].name, e);
    g_ptr_array_add (ctl->names, (gpointer) commands[i].name);
  }
}

void
shd_control_close (ShdControl *ctl)
{
  g_return_if_fail (SHD_IS_CONTROL (ctl));
  g_cancellable_cancel (ctl->cancel);
  g_socket_service_stop (ctl->service);
  g_socket_listener_close (G_SOCKET_LISTENER (ctl->service));
  if (ctl->path)
    g_unlink (ctl->path);
  g_clear_pointer (&ctl->path, g_free);
}

static void
shd_control_dispose (GObject *object)
{
  ShdControl *ctl = SHD_CONTROL (object);

  shd_control_close (ctl);
  g_clear_pointer (&ctl->owners, g_ptr_array_unref);
  G_OBJECT_CLASS (shd_control_parent_class)->dispose (object);
}

static void
shd_control_finalize (GObject *object)
{
  ShdControl *ctl = SHD_CONTROL (object);

  g_object_unref (ctl->service);
  g_object_unref (ctl->cancel);
  g_hash_table_unref (ctl->commands);
  g_ptr_array_unref (ctl->names);
  G_OBJECT_CLASS (shd_control_parent_class)->finalize (object);
}

static void
shd_control_class_init (ShdControlClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS (klass);

  oc->dispose = shd_control_dispose;
  oc->finalize = shd_control_finalize;
}

static void
shd_control_init (ShdControl *ctl)
{
  ctl->service = g_socket_service_new ();
  ctl->cancel = g_cancellable_new ();
  ctl->commands = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
  ctl->names = g_ptr_array_new ();
  ctl->owners = g_ptr_array_new_with_free_func (g_object_unref);
}
