/* systemd's readiness protocol (sd_notify(3)) without libsystemd: one
 * datagram to $NOTIFY_SOCKET, nothing when it is not set. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

void shd_notify (const char *message);

G_END_DECLS
