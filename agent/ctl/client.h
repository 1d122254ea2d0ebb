/* The client of shadowd's control socket (daemon/control.h has the
 * protocol): one request, one answer, blocking, for shadowctl and
 * virsh-shadow. */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Sends request (a JSON object with "command") to the socket at path and
 * returns the answer's "return" value, or NULL with the server's error or
 * why it could not be reached. */
JsonNode *shd_control_call (const char *path, JsonObject *request, guint timeout_ms,
                            GError **error);

G_END_DECLS
