/* shadowd's configuration file; see config.h. */
#include "config.h"

#include <gio/gio.h>
#include <math.h>
#include <string.h>

G_DEFINE_QUARK (shd-config-error-quark, shd_config_error)

/* ---- where a key is written: GKeyFile does not keep line numbers ---- */

/* 1-based line of "[group]" (key NULL) or of "key =" inside it; 0 when
 * not found.  Mirrors GKeyFile's syntax: comments start with '#', keys
 * and groups are trimmed, a later duplicate group continues the earlier. */
static guint
find_line (const char *data, gsize len, const char *group, const char *key)
{
  guint line = 0, found = 0;
  gboolean in_group = FALSE;
  const char *p = data, *end = data + len;

  while (p < end) {
    const char *nl = memchr (p, '\n', end - p);
    const char *le = nl ? nl : end;
    g_autofree char *text = g_strndup (p, le - p);
    char *t = g_strstrip (text);

    line++;
    if (*t == '[') {
      char *close = strrchr (t, ']');

      if (close) {
        *close = '\0';
        in_group = strcmp (t + 1, group) == 0;
        if (in_group && key == NULL)
          return line;
      }
    } else if (in_group && key && *t != '#' && *t) {
      char *eq = strchr (t, '=');

      if (eq) {
        *eq = '\0';
        g_strchomp (t);
        if (strcmp (t, key) == 0)
          found = line;          /* the last one wins, as in GKeyFile */
      }
    }
    p = nl ? nl + 1 : end;
  }
  return found;
}

typedef struct {
  GKeyFile *kf;
  const char *data;
  gsize len;
  const char *path;
} Ctx;

static gboolean G_GNUC_PRINTF (5, 6)
fail (const Ctx *x, GError **error, const char *group, const char *key,
      const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;
  guint line = find_line (x->data, x->len, group, key);

  if (line == 0 && key)
    line = find_line (x->data, x->len, group, NULL);
  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  if (line)
    g_set_error (error, SHD_CONFIG_ERROR, SHD_CONFIG_ERROR_INVALID,
                 "%s:%u: [%s]%s%s: %s", x->path, line, group, key ? " " : "",
                 key ? key : "", msg);
  else
    g_set_error (error, SHD_CONFIG_ERROR, SHD_CONFIG_ERROR_INVALID,
                 "%s: [%s]%s%s: %s", x->path, group, key ? " " : "",
                 key ? key : "", msg);
  return FALSE;
}

/* Typed getters: TRUE with *out untouched when the key is absent. */
static gboolean
get_double (const Ctx *x, const char *g, const char *k, double min, double max,
            gboolean min_open, double *out, GError **error)
{
  g_autofree char *raw = NULL;
  double v;
  char *endp;

  if (!g_key_file_has_key (x->kf, g, k, NULL))
    return TRUE;
  raw = g_key_file_get_value (x->kf, g, k, NULL);
  g_strstrip (raw);
  v = g_ascii_strtod (raw, &endp);
  if (*raw == '\0' || *endp != '\0' || !isfinite (v))
    return fail (x, error, g, k, "'%s' is not a number", raw);
  if (v < min || (min_open && v == min) || v > max) {
    if (min_open)
      return fail (x, error, g, k, "%s must be greater than %g and at most %g",
                   raw, min, max);
    return fail (x, error, g, k, "%s must be between %g and %g", raw, min, max);
  }
  *out = v;
  return TRUE;
}

static gboolean
get_uint (const Ctx *x, const char *g, const char *k, guint64 min, guint64 max,
          guint64 *out, GError **error)
{
  g_autofree char *raw = NULL;
  guint64 v;

  if (!g_key_file_has_key (x->kf, g, k, NULL))
    return TRUE;
  raw = g_key_file_get_value (x->kf, g, k, NULL);
  g_strstrip (raw);
  if (!g_ascii_string_to_unsigned (raw, 10, 0, G_MAXUINT64, &v, NULL))
    return fail (x, error, g, k, "'%s' is not a non-negative integer", raw);
  if (v < min || v > max)
    return fail (x, error, g, k, "%s must be between %" G_GUINT64_FORMAT
                 " and %" G_GUINT64_FORMAT, raw, min, max);
  *out = v;
  return TRUE;
}

static gboolean
get_guint (const Ctx *x, const char *g, const char *k, guint min, guint max,
           guint *out, GError **error)
{
  guint64 v = *out;

  if (!get_uint (x, g, k, min, max, &v, error))
    return FALSE;
  *out = (guint) v;
  return TRUE;
}

static gboolean
get_bool (const Ctx *x, const char *g, const char *k, gboolean *out, GError **error)
{
  g_autofree char *raw = NULL;

  if (!g_key_file_has_key (x->kf, g, k, NULL))
    return TRUE;
  raw = g_key_file_get_value (x->kf, g, k, NULL);
  g_strstrip (raw);
  if (strcmp (raw, "true") == 0 || strcmp (raw, "1") == 0)
    *out = TRUE;
  else if (strcmp (raw, "false") == 0 || strcmp (raw, "0") == 0)
    *out = FALSE;
  else
    return fail (x, error, g, k, "'%s' is not a boolean (true or false)", raw);
  return TRUE;
}

/* A string value; "required" makes absence an error, and empty values are
 * always one. */
static gboolean
get_string (const Ctx *x, const char *g, const char *k, gboolean required,
            char **out, GError **error)
{
  g_autofree char *v = NULL;

  if (!g_key_file_has_key (x->kf, g, k, NULL)) {
    if (required)
      return fail (x, error, g, NULL, "the key '%s' is missing", k);
    return TRUE;
  }
  v = g_key_file_get_string (x->kf, g, k, NULL);
  if (v == NULL)
    return fail (x, error, g, k, "not a valid string (bad escape or UTF-8)");
  g_strstrip (v);
  if (*v == '\0')
    return fail (x, error, g, k, "empty value");
  g_free (*out);
  *out = g_steal_pointer (&v);
  return TRUE;
}

/* A boolean option of the shadow node, kept as written ("true" or
 * "false") and sent typed on reopen. */
static gboolean
get_node_bool (const Ctx *x, const char *g, const char *k, char **out, GError **error)
{
  if (!get_string (x, g, k, FALSE, out, error))
    return FALSE;
  if (*out && strcmp (*out, "true") != 0 && strcmp (*out, "false") != 0)
    return fail (x, error, g, k, "'%s' is not a boolean (true or false)", *out);
  return TRUE;
}

/* An absolute path, or empty for "none". */
static gboolean
get_path (const Ctx *x, const char *g, const char *k, char **out, GError **error)
{
  g_autofree char *v = NULL;

  if (!g_key_file_has_key (x->kf, g, k, NULL))
    return TRUE;
  v = g_key_file_get_string (x->kf, g, k, NULL);
  if (v == NULL)
    return fail (x, error, g, k, "not a valid string (bad escape or UTF-8)");
  g_strstrip (v);
  if (*v && !g_path_is_absolute (v))
    return fail (x, error, g, k, "'%s' is not an absolute path", v);
  g_free (*out);
  *out = g_steal_pointer (&v);
  return TRUE;
}

static gboolean
get_choice (const Ctx *x, const char *g, const char *k, const char *const *choices,
            char **out, GError **error)
{
  g_autofree char *joined = NULL;

  if (!get_string (x, g, k, FALSE, out, error))
    return FALSE;
  if (*out == NULL || g_strv_contains (choices, *out))
    return TRUE;
  joined = g_strjoinv (", ", (char **) choices);
  return fail (x, error, g, k, "'%s' is not one of: %s", *out, joined);
}

static const char *const knob_keys[] = {
  "horizon", "prediction-level", "hysteresis", "min-dwell", "max-switches-per-hour",
  "switch-back-after", "spike-sensitivity", "max-utilization",
  "violation-intervals", "period", "forecast", "bucket", "seasons", "lookahead",
  "prewarm-margin", "switch-lead", "release-after", "base-window", NULL
};

/* seconds, separated by ';': the calendar's periods (a day, a week) */
static gboolean
get_seasons (const Ctx *x, const char *g, const char *k, double bucket_s, double *out,
             GError **error)
{
  g_auto (GStrv) v = NULL;
  guint n = 0;

  if (!g_key_file_has_key (x->kf, g, k, NULL))
    return TRUE;
  v = g_key_file_get_string_list (x->kf, g, k, NULL, NULL);
  for (guint i = 0; v && v[i]; i++) {
    char *endp;
    double d;

    g_strstrip (v[i]);
    if (*v[i] == '\0')
      continue;
    d = g_ascii_strtod (v[i], &endp);
    if (*endp != '\0' || !isfinite (d) || d <= 0)
      return fail (x, error, g, k, "'%s' is not a number of seconds", v[i]);
    if (d < 4 * bucket_s)
      return fail (x, error, g, k, "a season of %s s is shorter than 4 buckets of %g s",
                   v[i], bucket_s);
    if (n == SHD_POLICY_MAX_SEASONS - 1)
      return fail (x, error, g, k, "at most %d seasons", SHD_POLICY_MAX_SEASONS - 1);
    out[n++] = d;
  }
  out[n] = 0;
  return TRUE;
}

static gboolean
get_knobs (const Ctx *x, const char *g, ShdPolicyKnobs *k, GError **error)
{
  return get_bool (x, g, "forecast", &k->forecast, error) &&
         get_double (x, g, "bucket", 0, 86400, TRUE, &k->bucket_s, error) &&
         get_seasons (x, g, "seasons", k->bucket_s, k->seasons_s, error) &&
         get_double (x, g, "lookahead", 0, 30 * 86400, FALSE, &k->lookahead_s, error) &&
         get_double (x, g, "prewarm-margin", 0, 86400, FALSE, &k->prewarm_margin_s, error) &&
         get_double (x, g, "switch-lead", 0, 86400, FALSE, &k->switch_lead_s, error) &&
         get_double (x, g, "release-after", 0, 365 * 86400, FALSE, &k->release_after_s,
                     error) &&
         get_double (x, g, "base-window", 0, 365 * 86400, FALSE, &k->base_window_s,
                     error) &&
         get_double (x, g, "horizon", 0, 86400, TRUE, &k->horizon_s, error) &&
         get_double (x, g, "prediction-level", 0.5, 0.999, FALSE, &k->level, error) &&
         get_double (x, g, "hysteresis", 0, 0.9, FALSE, &k->hysteresis, error) &&
         get_double (x, g, "min-dwell", 0, 86400, FALSE, &k->min_dwell_s, error) &&
         get_guint (x, g, "max-switches-per-hour", 0, 3600,
                    &k->max_switches_per_hour, error) &&
         get_double (x, g, "switch-back-after", 0, 86400, FALSE,
                     &k->switch_back_after_s, error) &&
         get_double (x, g, "spike-sensitivity", 0.1, 10, FALSE,
                     &k->spike_sensitivity, error) &&
         get_double (x, g, "max-utilization", 0.05, 1, FALSE,
                     &k->max_utilization, error) &&
         get_guint (x, g, "violation-intervals", 1, 1000,
                    &k->violation_intervals, error) &&
         get_guint (x, g, "period", 0, 100000, &k->period, error);
}

static gboolean
has_prefix (const char *key, const char *const *prefixes)
{
  for (guint i = 0; prefixes && prefixes[i]; i++)
    if (g_str_has_prefix (key, prefixes[i]))
      return TRUE;
  return FALSE;
}

static gboolean
check_keys (const Ctx *x, const char *g, const char *const *allowed,
            const char *const *allowed2, const char *const *prefixes, GError **error)
{
  g_auto (GStrv) keys = g_key_file_get_keys (x->kf, g, NULL, NULL);

  for (guint i = 0; keys && keys[i]; i++) {
    if (g_strv_contains (allowed, keys[i]) ||
        (allowed2 && g_strv_contains (allowed2, keys[i])) ||
        has_prefix (keys[i], prefixes))
      continue;
    if (strchr (keys[i], '['))
      return fail (x, error, g, keys[i], "localized keys are not used");
    return fail (x, error, g, keys[i], "unknown key");
  }
  return TRUE;
}

static void
tier_free (gpointer p)
{
  ShdTierConfig *t = p;

  g_free (t->name);
  g_free (t);
}

static void
disk_tier_free (gpointer p)
{
  ShdDiskTier *t = p;

  g_free (t->tier);
  g_free (t->child);
  g_free (t->rbd_pool);
  g_free (t->rbd_image);
  g_free (t);
}

static void
disk_config_clear (ShdDiskConfig *d)
{
  g_free (d->rbd_conf);
  g_free (d->rbd_user);
  g_free (d->rbd_key_secret);
  g_free (d->name);
  g_free (d->qmp);
  g_free (d->node);
  g_ptr_array_unref (d->tiers);
  g_free (d->chunk_size);
  g_free (d->write_mode);
  g_free (d->prewarm);
  g_free (d->prewarm_speed);
  g_free (d->read_from);
  g_free (d->copy_on_read);
  g_free (d->copy_compare);
  g_free (d->metadata);
  g_free (d->origin);
  g_free (d->release);
}

ShdDiskConfig *
shd_disk_config_ref (ShdDiskConfig *d)
{
  return g_rc_box_acquire (d);
}

void
shd_disk_config_unref (ShdDiskConfig *d)
{
  g_rc_box_release_full (d, (GDestroyNotify) disk_config_clear);
}

static void
disk_free (gpointer p)
{
  shd_disk_config_unref (p);
}

void
shd_config_free (ShdConfig *c)
{
  if (c == NULL)
    return;
  g_free (c->path);
  g_free (c->control);
  g_free (c->state);
  g_free (c->metrics_address);
  g_free (c->release);
  g_strfreev (c->libvirt_uris);
  g_strfreev (c->libvirt_tier_dirs);
  g_ptr_array_unref (c->tiers);
  g_ptr_array_unref (c->disks);
  g_free (c);
}

const ShdTierConfig *
shd_config_tier (const ShdConfig *c, const char *name)
{
  for (guint i = 0; i < c->tiers->len; i++) {
    const ShdTierConfig *t = c->tiers->pdata[i];

    if (strcmp (t->name, name) == 0)
      return t;
  }
  return NULL;
}

const ShdDiskConfig *
shd_config_disk (const ShdConfig *c, const char *name)
{
  for (guint i = 0; i < c->disks->len; i++) {
    const ShdDiskConfig *d = c->disks->pdata[i];

    if (strcmp (d->name, name) == 0)
      return d;
  }
  return NULL;
}

static gboolean
valid_name (const char *s)
{
  if (*s == '\0' || strlen (s) > 64)
    return FALSE;
  for (; *s; s++)
    if (!g_ascii_isalnum (*s) && *s != '-' && *s != '_' && *s != '.')
      return FALSE;
  return TRUE;
}

/* A disk is named by the operator, or DOMAIN.TARGET for a libvirt
 * domain's disk, and libvirt allows almost anything in a domain name
 * ('"', '\\', spaces ...): any UTF-8 text without control characters and
 * without the key file's '[' and ']', up to 255 bytes.  Everything that
 * shows the name escapes it (JSON, metrics labels, the journal). */
static gboolean
valid_disk_name (const char *s)
{
  gsize len = strlen (s);

  if (len == 0 || len > 255 || !g_utf8_validate (s, len, NULL))
    return FALSE;
  for (const char *p = s; *p; p = g_utf8_next_char (p)) {
    gunichar c = g_utf8_get_char (p);

    if (g_unichar_iscntrl (c) || c == '[' || c == ']')
      return FALSE;
  }
  return TRUE;
}

static gboolean
load_shadowd (const Ctx *x, ShdConfig *c, GError **error)
{
  static const char *const keys[] = {
    "interval", "control", "state", "metrics-port", "metrics-address", "dry-run",
    "history-full-hours", "history-days", "qmp-timeout-ms", "add-children", "release",
    "release-origin", NULL
  };
  static const char *const release_modes[] = { "discard", "keep", NULL };
  const char *g = "shadowd";
  g_autoptr (GInetAddress) addr = NULL;
  guint port = c->metrics_port;

  if (!g_key_file_has_group (x->kf, g))
    return TRUE;
  if (!check_keys (x, g, keys, knob_keys, NULL, error) ||
      !get_double (x, g, "interval", 0.05, 3600, FALSE, &c->interval_s, error))
    return FALSE;
  if (!get_path (x, g, "control", &c->control, error) ||
      !get_path (x, g, "state", &c->state, error))
    return FALSE;
  if (strlen (c->control) >= 108)
    return fail (x, error, g, "control", "a UNIX socket path must be shorter than 108 bytes");
  if (!get_guint (x, g, "metrics-port", 0, 65535, &port, error) ||
      !get_string (x, g, "metrics-address", FALSE, &c->metrics_address, error) ||
      !get_bool (x, g, "dry-run", &c->dry_run, error) ||
      !get_bool (x, g, "add-children", &c->add_children, error) ||
      !get_choice (x, g, "release", release_modes, &c->release, error) ||
      !get_bool (x, g, "release-origin", &c->release_origin, error) ||
      !get_double (x, g, "history-full-hours", 0, 24 * 365, FALSE,
                   &c->history_full_hours, error) ||
      !get_double (x, g, "history-days", 0, 3650, FALSE, &c->history_days, error) ||
      !get_guint (x, g, "qmp-timeout-ms", 10, 600000, &c->qmp_timeout_ms, error) ||
      !get_knobs (x, g, &c->knobs, error))
    return FALSE;
  c->metrics_port = port;
  addr = g_inet_address_new_from_string (c->metrics_address);
  if (addr == NULL)
    return fail (x, error, g, "metrics-address", "'%s' is not an IP address",
                 c->metrics_address);
  return TRUE;
}

static gboolean
load_libvirt (const Ctx *x, ShdConfig *c, GError **error)
{
  static const char *const keys[] = { "uri", "tier-dirs", NULL };
  const char *g = "libvirt";
  g_autoptr (GError) e = NULL;
  g_auto (GStrv) uris = NULL;
  g_auto (GStrv) dirs = NULL;

  if (!g_key_file_has_group (x->kf, g))
    return TRUE;
  if (!check_keys (x, g, keys, NULL, NULL, error))
    return FALSE;
  uris = g_key_file_get_string_list (x->kf, g, "uri", NULL, &e);
  if (uris == NULL || uris[0] == NULL)
    return fail (x, error, g, "uri", "give at least one libvirt URI, e.g. qemu:///system "
                 "(several are separated by ';')");
  for (guint i = 0; uris[i]; i++)
    if (strstr (uris[i], "://") == NULL)
      return fail (x, error, g, "uri", "'%s' is not a libvirt URI", uris[i]);
  c->libvirt_uris = g_steal_pointer (&uris);
  dirs = g_key_file_get_string_list (x->kf, g, "tier-dirs", NULL, NULL);
  for (guint i = 0; dirs && dirs[i]; i++)
    if (!g_path_is_absolute (dirs[i]))
      return fail (x, error, g, "tier-dirs", "'%s' is not an absolute path", dirs[i]);
  c->libvirt_tier_dirs = g_steal_pointer (&dirs);
  return TRUE;
}

/* A size in bytes, with an optional unit: K, M, G, T (powers of 1024;
 * "KiB" ... and "KB" ... mean the same) */
static gboolean
get_size (const Ctx *x, const char *g, const char *k, double *out, GError **error)
{
  static const struct { const char *suffix; double mult; } units[] = {
    { "", 1 }, { "K", 1024.0 }, { "KB", 1024.0 }, { "KiB", 1024.0 },
    { "M", 1048576.0 }, { "MB", 1048576.0 }, { "MiB", 1048576.0 },
    { "G", 1073741824.0 }, { "GB", 1073741824.0 }, { "GiB", 1073741824.0 },
    { "T", 1099511627776.0 }, { "TB", 1099511627776.0 }, { "TiB", 1099511627776.0 },
  };
  g_autofree char *raw = NULL;
  char *endp;
  double v;

  if (!g_key_file_has_key (x->kf, g, k, NULL))
    return TRUE;
  raw = g_key_file_get_value (x->kf, g, k, NULL);
  g_strstrip (raw);
  v = g_ascii_strtod (raw, &endp);
  if (endp == raw || !isfinite (v) || v < 0)
    return fail (x, error, g, k, "'%s' is not a size (e.g. 2GiB)", raw);
  while (*endp == ' ')
    endp++;
  for (guint i = 0; i < G_N_ELEMENTS (units); i++)
    if (g_ascii_strcasecmp (endp, units[i].suffix) == 0) {
      *out = v * units[i].mult;
      return TRUE;
    }
  return fail (x, error, g, k, "'%s': unknown unit (K, M, G, T)", raw);
}

static gboolean
load_tier (const Ctx *x, ShdConfig *c, const char *g, GError **error)
{
  static const char *const keys[] = { "cost-gib-month", "max-iops", "latency-ms",
                                      "copy-mib-s", "keep-warm", NULL };
  ShdTierConfig *t;
  const char *name = g + strlen ("tier:");

  if (!valid_name (name))
    return fail (x, error, g, NULL, "'%s' is not a valid tier name "
                 "(letters, digits, '-', '_', '.')", name);
  if (!check_keys (x, g, keys, NULL, NULL, error))
    return FALSE;
  if (!g_key_file_has_key (x->kf, g, "cost-gib-month", NULL))
    return fail (x, error, g, NULL, "the key 'cost-gib-month' is missing");
  t = g_new0 (ShdTierConfig, 1);
  t->name = g_strdup (name);
  g_ptr_array_add (c->tiers, t);
  return get_double (x, g, "cost-gib-month", 0, 1e6, FALSE, &t->cost_gib_month, error) &&
         get_double (x, g, "max-iops", 0, 1e9, FALSE, &t->max_iops, error) &&
         get_double (x, g, "latency-ms", 0, 1e6, FALSE, &t->latency_ms, error) &&
         get_double (x, g, "copy-mib-s", 0, 1e7, FALSE, &t->copy_mib_s, error) &&
         get_size (x, g, "keep-warm", &t->keep_warm_bytes, error);
}

static gboolean
load_disk (const Ctx *x, ShdConfig *c, const char *g, GError **error)
{
  static const char *const keys[] = {
    "qmp", "node", "slo-latency-ms", "size-gib", "dry-run", "add-children", "chunk-size",
    "write-mode", "prewarm", "prewarm-speed", "read-from", "copy-on-read", "copy-compare",
    "instant-switch", "release", "metadata", "rbd-conf", "rbd-user", "rbd-key-secret",
    "origin", "release-origin", NULL
  };
  static const char *const tier_prefixes[] = { "tier.", "tier-rbd.", NULL };
  static const char *const write_modes[] = { "sync", "async", NULL };
  static const char *const prewarms[] = { "off", "sequential", "hot-first", NULL };
  static const char *const read_froms[] = { "active", "fastest", NULL };
  static const char *const release_modes[] = { "discard", "keep", NULL };
  const char *name = g + strlen ("disk:");
  g_auto (GStrv) all = NULL;
  ShdDiskConfig *d;
  guint64 v;

  if (!valid_disk_name (name))
    return fail (x, error, g, NULL, "'%s' is not a valid disk name "
                 "(text without control characters, '[' or ']', at most 255 bytes)", name);
  if (!check_keys (x, g, keys, knob_keys, tier_prefixes, error))
    return FALSE;
  d = g_rc_box_new0 (ShdDiskConfig);
  d->name = g_strdup (name);
  d->tiers = g_ptr_array_new_with_free_func (disk_tier_free);
  d->knobs = c->knobs;
  d->dry_run = c->dry_run;
  d->add_children = c->add_children;
  d->release = g_strdup (c->release);
  d->release_origin = c->release_origin;
  g_ptr_array_add (c->disks, d);

  if (!get_string (x, g, "qmp", TRUE, &d->qmp, error) ||
      !get_string (x, g, "node", TRUE, &d->node, error))
    return FALSE;
  if (strlen (d->qmp) >= 108)
    return fail (x, error, g, "qmp", "a UNIX socket path must be shorter than 108 bytes");
  if (!g_key_file_has_key (x->kf, g, "slo-latency-ms", NULL))
    return fail (x, error, g, NULL, "the key 'slo-latency-ms' is missing");
  if (!get_double (x, g, "slo-latency-ms", 0, 1e6, TRUE, &d->slo_latency_ms, error) ||
      !get_double (x, g, "size-gib", 0, 1e9, FALSE, &d->size_gib, error) ||
      !get_bool (x, g, "dry-run", &d->dry_run, error) ||
      !get_bool (x, g, "add-children", &d->add_children, error) ||
      !get_bool (x, g, "instant-switch", &d->instant_switch, error) ||
      !get_choice (x, g, "release", release_modes, &d->release, error) ||
      !get_bool (x, g, "release-origin", &d->release_origin, error) ||
      !get_string (x, g, "origin", FALSE, &d->origin, error) ||
      !get_knobs (x, g, &d->knobs, error))
    return FALSE;

  /* The node's own options: validated here, passed through on reopen. */
  if (!get_string (x, g, "chunk-size", FALSE, &d->chunk_size, error) ||
      !get_choice (x, g, "write-mode", write_modes, &d->write_mode, error) ||
      !get_choice (x, g, "prewarm", prewarms, &d->prewarm, error) ||
      !get_string (x, g, "prewarm-speed", FALSE, &d->prewarm_speed, error) ||
      !get_choice (x, g, "read-from", read_froms, &d->read_from, error) ||
      !get_node_bool (x, g, "copy-on-read", &d->copy_on_read, error) ||
      !get_node_bool (x, g, "copy-compare", &d->copy_compare, error) ||
      !get_string (x, g, "metadata", FALSE, &d->metadata, error))
    return FALSE;
  if (d->chunk_size) {
    if (!g_ascii_string_to_unsigned (d->chunk_size, 10, 4096, 64 << 20, &v, NULL) ||
        (v & (v - 1)) != 0)
      return fail (x, error, g, "chunk-size", "'%s' is not a power of two "
                   "from 4096 to 67108864", d->chunk_size);
  }
  if (d->prewarm_speed &&
      !g_ascii_string_to_unsigned (d->prewarm_speed, 10, 0, G_MAXINT64, &v, NULL))
    return fail (x, error, g, "prewarm-speed", "'%s' is not a byte rate "
                 "(a non-negative integer)", d->prewarm_speed);

  all = g_key_file_get_keys (x->kf, g, NULL, NULL);
  for (guint i = 0; all && all[i]; i++) {
    const char *tier = all[i] + strlen ("tier.");
    ShdDiskTier *dt;

    if (!g_str_has_prefix (all[i], "tier."))
      continue;
    if (shd_config_tier (c, tier) == NULL)
      return fail (x, error, g, all[i], "there is no [tier:%s] group", tier);
    dt = g_new0 (ShdDiskTier, 1);
    dt->tier = g_strdup (tier);
    g_ptr_array_add (d->tiers, dt);
    if (!get_string (x, g, all[i], TRUE, &dt->child, error))
      return FALSE;
    for (guint j = 0; j + 1 < d->tiers->len; j++) {
      const ShdDiskTier *o = d->tiers->pdata[j];

      if (strcmp (o->child, dt->child) == 0)
        return fail (x, error, g, all[i], "child '%s' already serves tier '%s'",
                     dt->child, o->tier);
    }
    if (strcmp (dt->child, d->node) == 0)
      return fail (x, error, g, all[i], "the child cannot be the shadow node itself");
  }
  for (guint i = 0; all && all[i]; i++) {
    const char *tier = all[i] + strlen ("tier-rbd.");
    g_autofree char *v = NULL;
    ShdDiskTier *dt = NULL;
    char *slash;

    if (!g_str_has_prefix (all[i], "tier-rbd."))
      continue;
    for (guint j = 0; j < d->tiers->len && !dt; j++)
      if (strcmp (((ShdDiskTier *) d->tiers->pdata[j])->tier, tier) == 0)
        dt = d->tiers->pdata[j];
    if (dt == NULL)
      return fail (x, error, g, all[i], "there is no 'tier.%s' naming the tier's node", tier);
    if (!get_string (x, g, all[i], TRUE, &v, error))
      return FALSE;
    slash = strchr (v, '/');
    if (slash == NULL || slash == v || slash[1] == '\0' || strchr (slash + 1, '/') ||
        strpbrk (v, "@: \t"))
      return fail (x, error, g, all[i], "'%s' is not POOL/IMAGE (an rbd image: no "
                   "snapshot, no options)", v);
    /* (a key given twice, in a group given twice, is listed twice) */
    g_free (dt->rbd_pool);
    g_free (dt->rbd_image);
    dt->rbd_pool = g_strndup (v, slash - v);
    dt->rbd_image = g_strdup (slash + 1);
  }
  if (!get_path (x, g, "rbd-conf", &d->rbd_conf, error) ||
      !get_string (x, g, "rbd-user", FALSE, &d->rbd_user, error) ||
      !get_string (x, g, "rbd-key-secret", FALSE, &d->rbd_key_secret, error))
    return FALSE;
  if (d->tiers->len == 0)
    return fail (x, error, g, NULL, "no tier: add 'tier.<name> = <child node>' "
                 "for each tier the disk has");
  if (d->origin) {
    gboolean found = FALSE;

    for (guint i = 0; i < d->tiers->len && !found; i++)
      found = strcmp (((ShdDiskTier *) d->tiers->pdata[i])->tier, d->origin) == 0;
    if (!found)
      return fail (x, error, g, "origin", "the disk has no tier '%s'", d->origin);
  }
  for (guint i = 0; i + 1 < c->disks->len; i++) {
    const ShdDiskConfig *o = c->disks->pdata[i];

    if (strcmp (o->qmp, d->qmp) == 0 && strcmp (o->node, d->node) == 0)
      return fail (x, error, g, "node", "node '%s' on %s is already managed as disk '%s'",
                   d->node, d->qmp, o->name);
  }
  return TRUE;
}

ShdDiskConfig *
shd_config_load_disk (ShdConfig *c, GKeyFile *kf, const char *group, const char *origin,
                      GError **error)
{
  Ctx x = { kf, NULL, 0, origin };
  guint before = c->disks->len;
  gboolean ok;

  if (!g_str_has_prefix (group, "disk:")) {
    g_set_error (error, SHD_CONFIG_ERROR, SHD_CONFIG_ERROR_INVALID,
                 "%s: [%s]: not a disk group", origin, group);
    return NULL;
  }
  /* load_disk appends to c->disks and checks against the disks already
   * there; the caller owns the result, so take it out again */
  ok = load_disk (&x, c, group, error);
  if (c->disks->len == before)
    return NULL;
  if (!ok) {
    g_ptr_array_remove_index (c->disks, before);
    return NULL;
  }
  return g_ptr_array_steal_index (c->disks, before);
}

gboolean
shd_config_add_tier (ShdConfig *c, const char *name, double cost_gib_month,
                     double max_iops, double latency_ms, GError **error)
{
  ShdTierConfig *t;

  if (!valid_name (name)) {
    g_set_error (error, SHD_CONFIG_ERROR, SHD_CONFIG_ERROR_INVALID,
                 "'%s' is not a valid tier name (letters, digits, '-', '_', '.')", name);
    return FALSE;
  }
  if (shd_config_tier (c, name))
    return TRUE;
  t = g_new0 (ShdTierConfig, 1);
  t->name = g_strdup (name);
  t->cost_gib_month = cost_gib_month;
  t->max_iops = max_iops;
  t->latency_ms = latency_ms;
  g_ptr_array_add (c->tiers, t);
  return TRUE;
}

ShdConfig *
shd_config_load_data (const char *data, gsize len, const char *path, GError **error)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GError) e = NULL;
  g_auto (GStrv) groups = NULL;
  g_autoptr (ShdConfig) c = g_new0 (ShdConfig, 1);
  Ctx x = { kf, data, len, path };

  c->path = g_strdup (path);
  c->interval_s = 1;
  c->control = g_strdup ("/run/shadowd/control.sock");
  c->state = g_strdup ("/var/lib/shadowd/history.db");
  c->metrics_port = 9477;
  c->metrics_address = g_strdup ("127.0.0.1");
  c->history_full_hours = 6;
  c->history_days = 28;
  c->qmp_timeout_ms = 5000;
  c->add_children = TRUE;
  c->release = g_strdup ("discard");
  shd_policy_knobs_init (&c->knobs);
  c->tiers = g_ptr_array_new_with_free_func (tier_free);
  c->disks = g_ptr_array_new_with_free_func (disk_free);

  if (!g_key_file_load_from_data (kf, data, len, G_KEY_FILE_NONE, &e)) {
    g_set_error (error, SHD_CONFIG_ERROR, SHD_CONFIG_ERROR_PARSE, "%s: %s",
                 path, e->message);
    return NULL;
  }
  groups = g_key_file_get_groups (kf, NULL);
  for (guint i = 0; groups[i]; i++) {
    if (strcmp (groups[i], "shadowd") != 0 && !g_str_has_prefix (groups[i], "tier:") &&
        !g_str_has_prefix (groups[i], "disk:") && strcmp (groups[i], "libvirt") != 0) {
      fail (&x, error, groups[i], NULL, "unknown group (expected [shadowd], "
            "[libvirt], [tier:NAME] or [disk:NAME])");
      return NULL;
    }
  }
  /* [shadowd] first: its policy knobs are the disks' defaults. */
  if (!load_shadowd (&x, c, error) || !load_libvirt (&x, c, error))
    return NULL;
  for (guint i = 0; groups[i]; i++)
    if (g_str_has_prefix (groups[i], "tier:") && !load_tier (&x, c, groups[i], error))
      return NULL;
  for (guint i = 0; groups[i]; i++)
    if (g_str_has_prefix (groups[i], "disk:") && !load_disk (&x, c, groups[i], error))
      return NULL;
  if (c->disks->len == 0 && c->libvirt_uris == NULL) {
    g_set_error (error, SHD_CONFIG_ERROR, SHD_CONFIG_ERROR_INVALID,
                 "%s: no [disk:NAME] group and no [libvirt] uri: nothing to manage", path);
    return NULL;
  }
  return g_steal_pointer (&c);
}

gboolean
shd_config_disk_policy (const ShdConfig *c, const ShdDiskConfig *d, ShdPolicyConfig *cfg,
                        GError **error)
{
  memset (cfg, 0, sizeof *cfg);
  if (d->tiers->len > SHD_POLICY_MAX_TIERS) {
    g_set_error (error, SHD_CONFIG_ERROR, SHD_CONFIG_ERROR_INVALID,
                 "disk %s: %u tiers, at most %u are supported", d->name,
                 d->tiers->len, SHD_POLICY_MAX_TIERS);
    return FALSE;
  }
  cfg->interval_s = c->interval_s;
  cfg->slo_latency_ms = d->slo_latency_ms;
  cfg->knobs = d->knobs;
  cfg->dry_run = d->dry_run;
  cfg->async_writes = d->write_mode && strcmp (d->write_mode, "async") == 0;
  cfg->add_children = d->add_children;
  cfg->instant_switch = d->instant_switch;
  cfg->release_origin = d->release_origin;
  cfg->origin = g_strdup (d->origin);
  cfg->size_bytes = (guint64) (d->size_gib * 1024 * 1024 * 1024);
  cfg->n_tiers = d->tiers->len;
  for (guint i = 0; i < d->tiers->len; i++) {
    const ShdDiskTier *dt = d->tiers->pdata[i];
    const ShdTierConfig *t = shd_config_tier (c, dt->tier);

    cfg->tiers[i].tier = g_strdup (dt->tier);
    cfg->tiers[i].child = g_strdup (dt->child);
    cfg->tiers[i].cost_gib_month = t->cost_gib_month;
    cfg->tiers[i].prior_max_iops = t->max_iops;
    cfg->tiers[i].prior_latency_ms = t->latency_ms;
    cfg->tiers[i].prior_copy_bps = t->copy_mib_s * 1024 * 1024;
    cfg->tiers[i].keep_warm_bytes = t->keep_warm_bytes;
  }
  return TRUE;
}

ShdConfig *
shd_config_load_file (const char *path, GError **error)
{
  g_autofree char *data = NULL;
  gsize len;

  if (!g_file_get_contents (path, &data, &len, error))
    return NULL;
  return shd_config_load_data (data, len, path, error);
}
