/* The control socket: a UNIX stream socket on the main loop.
 *
 * Each request is one line of JSON, {"command": "status", ...}, and each
 * answer one line, {"return": ...} or {"error": "message"}.  Several
 * requests may follow on one connection; they are answered in order.
 * Lines longer than 64 KiB close the connection.
 *
 * Commands come from tables (ShdCommand) that each layer registers: the
 * daemon's (commands.h), the libvirt layer's.  A command answers at once
 * (run) or later (run_async: it completes the GTask it is given, whose
 * source object is the ShdControl and whose cancellable is cancelled when
 * the control socket closes; the connection waits, the main loop does
 * not).
 *
 * The socket's directory is created if missing.  A socket file left by
 * an earlier run is replaced; one that a live process still listens on is
 * not: shd_control_new() fails with G_IO_ERROR_ADDRESS_IN_USE. */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

typedef struct {
  const char *name;
  /* Answers at once: the value (owned by the caller) or NULL with error. */
  JsonNode *(*run) (gpointer data, JsonObject *request, GError **error);
  /* Answers later: g_task_return_pointer (task, JsonNode, json_node_unref)
   * or g_task_return_error (task, ...). */
  void (*run_async) (gpointer data, JsonObject *request, GTask *task);
} ShdCommand;

#define SHD_TYPE_CONTROL (shd_control_get_type ())
G_DECLARE_FINAL_TYPE (ShdControl, shd_control, SHD, CONTROL, GObject)

/* Listens on path at once. */
ShdControl *shd_control_new (const char *path, GError **error);
/* Adds n commands (a static table) that run with owner as their data
 * (or NULL); the control socket holds a reference on owner.  A name given twice is
 * an error of the caller's. */
void shd_control_add_commands (ShdControl *ctl, const ShdCommand *commands, gsize n,
                               GObject *owner);
/* Stops listening, cancels the commands in flight, removes the socket
 * file.  Connections end as their last operation completes. */
void shd_control_close (ShdControl *ctl);

G_END_DECLS
