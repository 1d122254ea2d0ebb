/* A small HTTP/1.0 endpoint on the main loop for Prometheus: GET /metrics
 * answers with the text a callback renders (metrics.h), GET / with a
 * pointer to it; anything else is 404 or 405.  One request per
 * connection; requests over 8 KiB close it. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* The body of GET /metrics. */
typedef char *(*ShdHttpMetricsFunc) (gpointer data);

#define SHD_TYPE_HTTP_SERVER (shd_http_server_get_type ())
G_DECLARE_FINAL_TYPE (ShdHttpServer, shd_http_server, SHD, HTTP_SERVER, GObject)

/* Listens on address:port at once (port 0: any; see get_port).  The
 * server holds a reference on owner, which func gets as data. */
ShdHttpServer *shd_http_server_new (const char *address, guint port,
                                    ShdHttpMetricsFunc func, GObject *owner,
                                    GError **error);
guint shd_http_server_get_port (ShdHttpServer *srv);
/* Stops listening; connections end as their last operation completes. */
void shd_http_server_close (ShdHttpServer *srv);

G_END_DECLS
