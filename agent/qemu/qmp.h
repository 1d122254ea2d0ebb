/* An asynchronous QMP client on the GLib main loop.
 *
 * It connects to a UNIX socket, negotiates capabilities, sends commands
 * with ids and matches replies to them, delivers events as they come
 * (interleaved with replies), times out commands, caps the length of a
 * line, and reconnects with exponential backoff when the peer goes away.
 * Bad input (garbage, oversized or truncated lines) is logged with
 * g_warning and skipped or answered by reconnecting; it never crashes.
 *
 * Signals:
 *   "ready"        () the connection is negotiated; re-read all state now,
 *                  since anything may have changed while disconnected.
 *   "disconnected" (const char *reason) the connection was lost; commands
 *                  in flight have failed with SHD_QMP_ERROR_DISCONNECTED.
 *   "event"        (const char *name, JsonObject *data, gint64 timestamp_us)
 *                  data is an empty object when the event has none.
 */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define SHD_QMP_ERROR (shd_qmp_error_quark ())
GQuark shd_qmp_error_quark (void);

typedef enum {
  SHD_QMP_ERROR_NOT_CONNECTED,  /* no negotiated connection right now */
  SHD_QMP_ERROR_DISCONNECTED,   /* lost before the reply came */
  SHD_QMP_ERROR_TIMEOUT,        /* no reply in time */
  SHD_QMP_ERROR_COMMAND,        /* the peer answered with an error */
} ShdQmpError;

typedef struct {
  gsize max_line;               /* bytes; longer lines are discarded */
  guint command_timeout_ms;     /* default per command, and for the handshake */
  guint backoff_min_ms;         /* first reconnect delay, doubled per failure */
  guint backoff_max_ms;
} ShdQmpConfig;

void shd_qmp_config_init (ShdQmpConfig *c);

#define SHD_TYPE_QMP (shd_qmp_get_type ())
G_DECLARE_FINAL_TYPE (ShdQmp, shd_qmp, SHD, QMP, GObject)

ShdQmp *shd_qmp_new (const char *socket_path, const ShdQmpConfig *config);
/* Connect, and keep reconnecting until shd_qmp_stop(). */
void shd_qmp_start (ShdQmp *self);
/* Close; commands in flight fail with G_IO_ERROR_CANCELLED. */
void shd_qmp_stop (ShdQmp *self);
gboolean shd_qmp_is_ready (ShdQmp *self);
const char *shd_qmp_get_path (ShdQmp *self);
/* The greeting's "QMP" object of the current connection, or NULL. */
JsonObject *shd_qmp_get_greeting (ShdQmp *self);
/* Connections negotiated so far. */
guint shd_qmp_get_connection_count (ShdQmp *self);

/* A transport other than a QMP socket (libvirt's QEMU passthrough): it
 * sends one command line (a JSON object without "id") and completes task
 * with the whole reply object as text (g_task_return_pointer, g_free) or
 * with an error when it could not deliver it.  It runs the command where
 * it likes (the libvirt layer: a pool of its own threads) and may
 * complete the task from any thread.  The client does not time such
 * commands out; a command whose cancellable is cancelled completes at
 * once with G_IO_ERROR_CANCELLED, and its late reply is dropped. */
typedef void (*ShdQmpTransport) (const char *command, GTask *task /* transfer full */,
                                 gpointer data);

/* A client over such a transport.  It is ready only when its owner says
 * so; events come from the owner too.  free_data frees data when the
 * client goes. */
ShdQmp *shd_qmp_new_custom (const char *label, ShdQmpTransport transport, gpointer data,
                            GDestroyNotify free_data);
void shd_qmp_custom_set_ready (ShdQmp *self, gboolean ready, const char *reason);
void shd_qmp_custom_event (ShdQmp *self, const char *name, JsonObject *data,
                           gint64 timestamp_us);
/* {"return": V} gives a copy of V; {"error": ...} SHD_QMP_ERROR_COMMAND. */
JsonNode *shd_qmp_parse_reply (const char *command, const char *reply, GError **error);
/* {"execute": COMMAND, "arguments": ...} on one line, no newline; for the
 * blocking monitors of the libvirt layer and its hook */
char *shd_qmp_command_line (const char *command, JsonObject *arguments);

/* arguments may be NULL; timeout_ms 0 means the configured default.
 * On a QMP error reply the GError is SHD_QMP_ERROR_COMMAND with the
 * message "Class: description". */
void shd_qmp_execute_async (ShdQmp *self, const char *command,
                            JsonObject *arguments, guint timeout_ms,
                            GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer user_data);
/* The "return" value. */
JsonNode *shd_qmp_execute_finish (ShdQmp *self, GAsyncResult *result,
                                  GError **error);

G_END_DECLS
