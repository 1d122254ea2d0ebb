/* Reading one numeric column of a CSV file (header row, comma-separated,
 * RFC 4180 quoting), for backtests on recorded load. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define SHD_CSV_ERROR (shd_csv_error_quark ())
GQuark shd_csv_error_quark (void);

typedef enum {
  SHD_CSV_ERROR_EMPTY,          /* no header row */
  SHD_CSV_ERROR_SYNTAX,         /* unterminated quote, junk after a quote */
  SHD_CSV_ERROR_NO_COLUMN,      /* the header has no such column */
  SHD_CSV_ERROR_SHORT_ROW,      /* a row ends before the column */
  SHD_CSV_ERROR_NOT_NUMERIC,    /* a cell is not a finite number */
  SHD_CSV_ERROR_NO_DATA,        /* a header and nothing else */
} ShdCsvError;

/* Values of `column`, one per data row, in file order.  Blank lines are
 * skipped.  Errors name the file, line and column. */
GArray *shd_csv_read_column (const char *path, const char *column, GError **error);
/* The same on text already in memory; `name` labels errors. */
GArray *shd_csv_parse_column (const char *text, gsize len, const char *name,
                              const char *column, GError **error);

G_END_DECLS
