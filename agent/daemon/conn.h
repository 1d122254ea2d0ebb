/* One client connection of a small request/answer server on the main
 * loop (the control socket, the metrics endpoint).
 *
 * It reads requests framed by a newline (SHD_CONN_LINES) or by the empty
 * line that ends HTTP headers (SHD_CONN_HTTP), hands each to the server
 * and writes the answer the server gives, possibly later, with
 * shd_conn_reply().  One request is answered at a time, so answers come
 * in the order of the requests.  A request longer than max_request
 * closes the connection unanswered.
 *
 * A ShdConn is reference-counted: every read and write in flight holds a
 * reference, and so must a server that answers later.  It holds a
 * reference on its server (owner) for as long as it lives, so a request
 * handler never outlives the object it belongs to.  The server's
 * cancellable ends every connection: reads and writes fail, the last
 * reference goes, the stream is closed. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef enum {
  SHD_CONN_LINES,               /* a request is a line */
  SHD_CONN_HTTP,                /* a request ends at an empty line */
} ShdConnFraming;

typedef struct _ShdConn ShdConn;

/* Called once per request (without its terminator), in order; the
 * handler must call shd_conn_reply() once, at once or later. */
typedef void (*ShdConnRequestFunc) (GObject *owner, ShdConn *conn, const char *request,
                                    gsize len);

/* Starts reading at once. */
ShdConn *shd_conn_start (GSocketConnection *stream, ShdConnFraming framing,
                         gsize max_request, GObject *owner, ShdConnRequestFunc func,
                         GCancellable *cancellable);

ShdConn *shd_conn_ref (ShdConn *conn);
void shd_conn_unref (ShdConn *conn);

/* The answer to the current request; close_after: end the connection
 * once it is written (HTTP/1.0). */
void shd_conn_reply (ShdConn *conn, const char *answer, gsize len, gboolean close_after);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdConn, shd_conn_unref)

G_END_DECLS
