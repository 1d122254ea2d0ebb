/* Structured logging: every line carries the disk and an event name as
 * journal fields (SHADOWD_DISK, SHADOWD_EVENT), decisions also their
 * numbers (SHADOWD_LOAD, SHADOWD_FORECAST, ...).  Under systemd
 * (JOURNAL_STREAM names our stderr) lines go to journald with their
 * fields; otherwise to stderr as "TIME LEVEL message". */
#pragma once

#include "policy.h"

#include <glib.h>

G_BEGIN_DECLS

/* verbose: also debug lines.  Installs the writer; call once. */
void shd_log_setup (gboolean verbose);

void shd_log (GLogLevelFlags level, const char *disk, const char *event,
              const char *fmt, ...) G_GNUC_PRINTF (4, 5);
void shd_log_decision (const char *disk, const ShdDecision *d, const char *from,
                       const char *to);

G_END_DECLS
