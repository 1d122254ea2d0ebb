/* Structured logging; see log.h. */
#include "log.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static gboolean verbose;         /* our own debug lines */
static gboolean debug_all;       /* G_MESSAGES_DEBUG: everyone's */
static gboolean to_journal;

static const char *
level_name (GLogLevelFlags l)
{
  if (l & G_LOG_LEVEL_ERROR) return "error";
  if (l & G_LOG_LEVEL_CRITICAL) return "critical";
  if (l & G_LOG_LEVEL_WARNING) return "warning";
  if (l & G_LOG_LEVEL_MESSAGE) return "notice";
  if (l & G_LOG_LEVEL_INFO) return "info";
  return "debug";
}

static GLogWriterOutput
writer (GLogLevelFlags level, const GLogField *fields, gsize n, gpointer data)
{
  const char *msg = NULL, *domain = NULL;
  g_autoptr (GDateTime) now = NULL;
  g_autofree char *ts = NULL;

  (void) data;
  for (gsize i = 0; i < n; i++)
    if (strcmp (fields[i].key, "GLIB_DOMAIN") == 0)
      domain = fields[i].value;
  if ((level & G_LOG_LEVEL_DEBUG) &&
      !(debug_all || (verbose && g_strcmp0 (domain, G_LOG_DOMAIN) == 0)))
    return G_LOG_WRITER_HANDLED;
  if (to_journal &&
      g_log_writer_journald (level, fields, n, NULL) == G_LOG_WRITER_HANDLED)
    return G_LOG_WRITER_HANDLED;
  for (gsize i = 0; i < n; i++) {
    if (strcmp (fields[i].key, "MESSAGE") == 0)
      msg = fields[i].value;
  }
  now = g_date_time_new_now_utc ();
  ts = g_date_time_format (now, "%Y-%m-%dT%H:%M:%S.%fZ");
  /* drop the microseconds' last three digits: milliseconds are enough */
  if (ts && strlen (ts) > 24)
    memmove (ts + 23, ts + 26, strlen (ts + 26) + 1);
  fprintf (stderr, "%s %s%s%s: %s\n", ts ? ts : "", domain && strcmp (domain, "shadowd") ?
           domain : "", domain && strcmp (domain, "shadowd") ? " " : "",
           level_name (level), msg ? msg : "");
  fflush (stderr);
  return G_LOG_WRITER_HANDLED;
}

void
shd_log_setup (gboolean v)
{
  debug_all = g_getenv ("G_MESSAGES_DEBUG") != NULL;
  verbose = v || debug_all;
  to_journal = g_getenv ("JOURNAL_STREAM") != NULL &&
               g_log_writer_is_journald (fileno (stderr));
  g_log_set_writer_func (writer, NULL, NULL);
}

void
shd_log_fields (GLogLevelFlags level, const GLogField *fields, gsize n)
{
  g_log_structured_array (level, fields, n);
}

void
shd_log (GLogLevelFlags level, const char *disk, const char *event, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;
  GLogField f[4] = {
    { "GLIB_DOMAIN", G_LOG_DOMAIN, -1 },
    { "MESSAGE", NULL, -1 },
    { "SHADOWD_DISK", disk ? disk : "", -1 },
    { "SHADOWD_EVENT", event ? event : "", -1 },
  };

  if ((level & G_LOG_LEVEL_DEBUG) && !verbose)
    return;
  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  f[1].value = msg;
  shd_log_fields (level, f, G_N_ELEMENTS (f));
}
