/* A small CSV reader: enough of RFC 4180 for recorded traces. */
#include "csv.h"

#include <math.h>
#include <string.h>

G_DEFINE_QUARK (shd-csv-error-quark, shd_csv_error)

typedef struct {
  const char *p, *end;
  guint line;                   /* 1-based line of the current record */
  const char *name;
} Reader;

/* Parses the next record into fields (a GPtrArray of strings).  Returns
 * FALSE at end of input.  Quoted fields may span lines. */
static gboolean
next_record (Reader *r, GPtrArray *fields, guint *record_line, GError **error)
{
  g_autoptr (GString) cell = g_string_new (NULL);

  g_ptr_array_set_size (fields, 0);
  if (r->p >= r->end)
    return FALSE;
  *record_line = r->line;
  for (;;) {
    gboolean quoted = FALSE;

    g_string_truncate (cell, 0);
    if (r->p < r->end && *r->p == '"') {
      quoted = TRUE;
      r->p++;
      for (;;) {
        if (r->p >= r->end) {
          g_set_error (error, SHD_CSV_ERROR, SHD_CSV_ERROR_SYNTAX,
                       "%s:%u: unterminated quoted field", r->name, *record_line);
          return FALSE;
        }
        if (*r->p == '"') {
          if (r->p + 1 < r->end && r->p[1] == '"') {
            g_string_append_c (cell, '"');
            r->p += 2;
            continue;
          }
          r->p++;
          break;
        }
        if (*r->p == '\n')
          r->line++;
        g_string_append_c (cell, *r->p++);
      }
    }
    while (r->p < r->end && *r->p != ',' && *r->p != '\n' && *r->p != '\r') {
      if (quoted) {
        g_set_error (error, SHD_CSV_ERROR, SHD_CSV_ERROR_SYNTAX,
                     "%s:%u: text after a closing quote", r->name, r->line);
        return FALSE;
      }
      g_string_append_c (cell, *r->p++);
    }
    g_ptr_array_add (fields, g_strdup (cell->str));
    if (r->p >= r->end)
      return TRUE;
    if (*r->p == ',') {
      r->p++;
      continue;
    }
    if (*r->p == '\r')
      r->p++;
    if (r->p < r->end && *r->p == '\n')
      r->p++;
    r->line++;
    return TRUE;
  }
}

static gboolean
blank_record (GPtrArray *fields)
{
  return fields->len == 1 && *g_strstrip ((char *) fields->pdata[0]) == '\0';
}

static gboolean
parse_number (const char *cell, double *out)
{
  g_autofree char *s = g_strstrip (g_strdup (cell));
  char *end;

  if (*s == '\0')
    return FALSE;
  *out = g_ascii_strtod (s, &end);
  return *end == '\0' && isfinite (*out);
}

GArray *
shd_csv_parse_column (const char *text, gsize len, const char *name,
                      const char *column, GError **error)
{
  Reader r = { text, text + len, 1, name };
  g_autoptr (GPtrArray) fields = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GArray) values = g_array_new (FALSE, FALSE, sizeof (double));
  guint line = 0, col = G_MAXUINT;
  GError *local = NULL;

  /* Skip a UTF-8 byte order mark: spreadsheets like to write one. */
  if (len >= 3 && memcmp (text, "\xef\xbb\xbf", 3) == 0)
    r.p += 3;
  do {
    if (!next_record (&r, fields, &line, &local)) {
      if (local)
        g_propagate_error (error, local);
      else
        g_set_error (error, SHD_CSV_ERROR, SHD_CSV_ERROR_EMPTY,
                     "%s: empty file, expected a header row", name);
      return NULL;
    }
  } while (blank_record (fields));
  for (guint i = 0; i < fields->len; i++) {
    if (strcmp (g_strstrip ((char *) fields->pdata[i]), column) == 0) {
      col = i;
      break;
    }
  }
  if (col == G_MAXUINT) {
    g_autoptr (GString) names = g_string_new (NULL);
    for (guint i = 0; i < fields->len && i < 8; i++)
      g_string_append_printf (names, "%s'%s'", i ? ", " : "",
                              (char *) fields->pdata[i]);
    if (fields->len > 8)
      g_string_append_printf (names, ", ... (%u columns)", fields->len);
    g_set_error (error, SHD_CSV_ERROR, SHD_CSV_ERROR_NO_COLUMN,
                 "%s:%u: no column '%s' in the header (%s)", name, line,
                 column, names->str);
    return NULL;
  }
  while (next_record (&r, fields, &line, &local)) {
    double v;

    if (blank_record (fields))
      continue;
    if (col >= fields->len) {
      g_set_error (error, SHD_CSV_ERROR, SHD_CSV_ERROR_SHORT_ROW,
                   "%s:%u: row has %u fields, column '%s' is field %u",
                   name, line, fields->len, column, col + 1);
      return NULL;
    }
    if (!parse_number (fields->pdata[col], &v)) {
      g_set_error (error, SHD_CSV_ERROR, SHD_CSV_ERROR_NOT_NUMERIC,
                   "%s:%u: column '%s': '%s' is not a number", name, line,
                   column, (char *) fields->pdata[col]);
      return NULL;
    }
    g_array_append_val (values, v);
  }
  if (local) {
    g_propagate_error (error, local);
    return NULL;
  }
  if (values->len == 0) {
    g_set_error (error, SHD_CSV_ERROR, SHD_CSV_ERROR_NO_DATA,
                 "%s: no data rows after the header", name);
    return NULL;
  }
  return g_steal_pointer (&values);
}

GArray *
shd_csv_read_column (const char *path, const char *column, GError **error)
{
  g_autofree char *text = NULL;
  gsize len;

  if (!g_file_get_contents (path, &text, &len, error))
    return NULL;
  return shd_csv_parse_column (text, len, path, column, error);
}
