/* Structured logging: every line carries the disk and an event name as
 * journal fields (SHADOWD_DISK, SHADOWD_EVENT), decisions also their
 * numbers (SHADOWD_LOAD, SHADOWD_FORECAST, ...).  Under systemd
 * (JOURNAL_STREAM names our stderr) lines go to journald with their
 * fields; otherwise to stderr as "TIME LEVEL message". */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* verbose: also debug lines.  Installs the writer; call once. */
void shd_log_setup (gboolean verbose);

void shd_log (GLogLevelFlags level, const char *disk, const char *event,
              const char *fmt, ...) G_GNUC_PRINTF (4, 5);
/* Fields of the caller's own (GLIB_DOMAIN and MESSAGE among them). */
void shd_log_fields (GLogLevelFlags level, const GLogField *fields, gsize n);

G_END_DECLS
