/* Small line-oriented servers on the main loop.
 *
 * The control socket: a UNIX stream socket; each request is one line of
 * JSON, {"command": "status", ...}, and each answer one line,
 * {"return": ...} or {"error": "message"}.  Several requests may follow
 * on one connection.  Lines longer than 64 KiB close the connection.
 *
 * The metrics endpoint: HTTP/1.0 GET /metrics on a TCP address
 * (loopback by default), Prometheus text format. */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Returns the answer's value (owned by the caller) or NULL with error. */
typedef JsonNode *(*ShdControlHandler) (JsonObject *request, gpointer data,
                                        GError **error);

typedef struct _ShdControl ShdControl;

/* Removes a stale socket file first; creates the directory if missing. */
ShdControl *shd_control_new (const char *path, ShdControlHandler handler,
                             gpointer data, GError **error);
void shd_control_free (ShdControl *c);

typedef void (*ShdMetricsFunc) (GString *out, gpointer data);
typedef struct _ShdMetrics ShdMetrics;

ShdMetrics *shd_metrics_new (const char *address, guint port, ShdMetricsFunc func,
                             gpointer data, GError **error);
void shd_metrics_free (ShdMetrics *m);
/* The bound port (useful when port 0 asked for any). */
guint shd_metrics_port (ShdMetrics *m);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdControl, shd_control_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdMetrics, shd_metrics_free)

G_END_DECLS
