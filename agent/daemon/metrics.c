/* The Prometheus text exposition format; see metrics.h. */
#include "metrics.h"

#include <math.h>
#include <string.h>

typedef struct {
  const ShdMetricFamily *family;
  GString *samples;             /* rendered sample lines */
} Family;

struct _ShdMetrics {
  GPtrArray *families;          /* Family, in declaration order */
  GHashTable *by_name;          /* name -> Family */
};

static const char *const type_names[] = {
  [SHD_METRIC_GAUGE] = "gauge",
  [SHD_METRIC_COUNTER] = "counter",
};

const char *
shd_metric_type_name (ShdMetricType type)
{
  g_return_val_if_fail ((guint) type < G_N_ELEMENTS (type_names), NULL);
  return type_names[type];
}

static void
family_free (gpointer p)
{
  Family *f = p;

  g_string_free (f->samples, TRUE);
  g_free (f);
}

ShdMetrics *
shd_metrics_new (void)
{
  ShdMetrics *m = g_new0 (ShdMetrics, 1);

  m->families = g_ptr_array_new_with_free_func (family_free);
  m->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  return m;
}

void
shd_metrics_free (ShdMetrics *m)
{
  if (m == NULL)
    return;
  g_hash_table_unref (m->by_name);
  g_ptr_array_unref (m->families);
  g_free (m);
}

static gboolean
valid_name (const char *s, gboolean colon)
{
  if (!(g_ascii_isalpha (*s) || *s == '_' || (colon && *s == ':')))
    return FALSE;
  for (s++; *s; s++)
    if (!(g_ascii_isalnum (*s) || *s == '_' || (colon && *s == ':')))
      return FALSE;
  return TRUE;
}

void
shd_metrics_declare (ShdMetrics *m, const ShdMetricFamily *families, gsize n)
{
  for (gsize i = 0; i < n; i++) {
    Family *f;

    g_return_if_fail (valid_name (families[i].name, TRUE));
    g_return_if_fail (!g_hash_table_contains (m->by_name, families[i].name));
    g_return_if_fail (families[i].type != SHD_METRIC_COUNTER ||
                      g_str_has_suffix (families[i].name, "_total"));
    f = g_new0 (Family, 1);
    f->family = &families[i];
    f->samples = g_string_new (NULL);
    g_ptr_array_add (m->families, f);
    g_hash_table_insert (m->by_name, (gpointer) families[i].name, f);
  }
}

/* A label value: \ " and newline escaped, valid UTF-8 */
static void
append_label_value (GString *out, const char *v)
{
  g_autofree char *valid = g_utf8_make_valid (v, -1);

  for (const char *p = valid; *p; p++) {
    switch (*p) {
    case '\\': g_string_append (out, "\\\\"); break;
    case '"': g_string_append (out, "\\\""); break;
    case '\n': g_string_append (out, "\\n"); break;
    default: g_string_append_c (out, *p);
    }
  }
}

/* HELP text: \ and newline escaped */
static void
append_help (GString *out, const char *help)
{
  for (const char *p = help; *p; p++) {
    if (*p == '\\')
      g_string_append (out, "\\\\");
    else if (*p == '\n')
      g_string_append (out, "\\n");
    else
      g_string_append_c (out, *p);
  }
}

static void
append_value (GString *out, double v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (isnan (v))
    g_string_append (out, "NaN");
  else if (isinf (v))
    g_string_append (out, v > 0 ? "+Inf" : "-Inf");
  else
    g_string_append (out, g_ascii_dtostr (buf, sizeof buf, v));
}

void
shd_metrics_addv (ShdMetrics *m, const char *family, double value,
                  const char *const *labels)
{
  Family *f = g_hash_table_lookup (m->by_name, family);
  GString *out;

  g_return_if_fail (f != NULL);
  out = f->samples;
  g_string_append (out, family);
  if (labels && labels[0]) {
    g_string_append_c (out, '{');
    for (guint i = 0; labels[i]; i += 2) {
      g_return_if_fail (labels[i + 1] != NULL && valid_name (labels[i], FALSE));
      if (i > 0)
        g_string_append_c (out, ',');
      g_string_append_printf (out, "%s=\"", labels[i]);
      append_label_value (out, labels[i + 1]);
      g_string_append_c (out, '"');
    }
    g_string_append_c (out, '}');
  }
  g_string_append_c (out, ' ');
  append_value (out, value);
  g_string_append_c (out, '\n');
}

void
shd_metrics_add (ShdMetrics *m, const char *family, double value, ...)
{
  g_autoptr (GPtrArray) labels = g_ptr_array_new ();
  va_list ap;
  const char *s;

  va_start (ap, value);
  while ((s = va_arg (ap, const char *)) != NULL)
    g_ptr_array_add (labels, (gpointer) s);
  va_end (ap);
  g_return_if_fail (labels->len % 2 == 0);
  g_ptr_array_add (labels, NULL);
  shd_metrics_addv (m, family, value, (const char *const *) labels->pdata);
}

char *
shd_metrics_render (ShdMetrics *m)
{
  GString *out = g_string_new (NULL);

  for (guint i = 0; i < m->families->len; i++) {
    const Family *f = m->families->pdata[i];

    if (f->samples->len == 0)
      continue;
    g_string_append_printf (out, "# HELP %s ", f->family->name);
    append_help (out, f->family->help);
    g_string_append_printf (out, "\n# TYPE %s %s\n", f->family->name,
                            shd_metric_type_name (f->family->type));
    g_string_append_len (out, f->samples->str, f->samples->len);
  }
  return g_string_free (out, FALSE);
}
