/* The daemon's commands on the control socket (control.h): status,
 * history, decisions, forecast, prewarm, switch, pause, resume, import,
 * version.
 * The libvirt layer adds its own (libvirt, attach, detach). */
#pragma once

#include "control.h"
#include "daemon.h"

G_BEGIN_DECLS

/* Registers the daemon's commands, run with dm. */
void shd_daemon_add_commands (ShdDaemon *dm, ShdControl *ctl);

/* Request members, for the commands of every layer: a string member, or
 * NULL when absent or not a string; a number, or dflt. */
const char *shd_request_string (JsonObject *req, const char *name);
double shd_request_number (JsonObject *req, const char *name, double dflt);

G_END_DECLS
