/* The CSV column reader: quoting, line endings and clear errors. */
#include "csv.h"

#include <glib/gstdio.h>

static GArray *
parse (const char *text, const char *column, GError **error)
{
  return shd_csv_parse_column (text, strlen (text), "t.csv", column, error);
}

static void
test_basic (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) v = parse ("a,b,c\n1,2,3\n4,5.5,6\n\n7,-8e2,9\n", "b", &error);

  g_assert_no_error (error);
  g_assert_cmpuint (v->len, ==, 3);
  g_assert_cmpfloat (g_array_index (v, double, 0), ==, 2);
  g_assert_cmpfloat (g_array_index (v, double, 1), ==, 5.5);
  g_assert_cmpfloat (g_array_index (v, double, 2), ==, -800);
}

static void
test_quotes_crlf_bom (void)
{
  g_autoptr (GError) error = NULL;
  const char *text = "\xef\xbb\xbf" "\"id\",\"load, iops\",note\r\n"
                     "1,\" 10 \",\"say \"\"hi\"\"\"\r\n"
                     "2,20,\"two\nlines\"\r\n"
                     "3,30,x";
  g_autoptr (GArray) v = parse (text, "load, iops", &error);

  g_assert_no_error (error);
  g_assert_cmpuint (v->len, ==, 3);
  g_assert_cmpfloat (g_array_index (v, double, 0), ==, 10);
  g_assert_cmpfloat (g_array_index (v, double, 2), ==, 30);
}

static void
test_errors (void)
{
  struct { const char *text, *column; int code; const char *msg; } cases[] = {
    { "", "a", SHD_CSV_ERROR_EMPTY, "empty" },
    { "a,b\n1,2\n", "z", SHD_CSV_ERROR_NO_COLUMN, "t.csv:1: no column 'z'" },
    { "a,b\n1,2\n3\n", "b", SHD_CSV_ERROR_SHORT_ROW, "t.csv:3:" },
    { "a,b\n1,2\n3,x7\n", "b", SHD_CSV_ERROR_NOT_NUMERIC, "t.csv:3: column 'b': 'x7'" },
    { "a,b\n1,\n", "b", SHD_CSV_ERROR_NOT_NUMERIC, "t.csv:2:" },
    { "a,b\n1,nan\n", "b", SHD_CSV_ERROR_NOT_NUMERIC, "'nan' is not a number" },
    { "a,b\n1,\"2\n", "b", SHD_CSV_ERROR_SYNTAX, "unterminated" },
    { "a,b\n1,\"2\"x\n", "b", SHD_CSV_ERROR_SYNTAX, "after a closing quote" },
    { "a,b\n", "b", SHD_CSV_ERROR_NO_DATA, "no data rows" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (GArray) v = parse (cases[i].text, cases[i].column, &error);

    g_assert_null (v);
    g_assert_error (error, SHD_CSV_ERROR, cases[i].code);
    if (strstr (error->message, cases[i].msg) == NULL)
      g_error ("case %u: '%s' lacks '%s'", i, error->message, cases[i].msg);
  }
}

static void
test_file (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("shd-csv-XXXXXX", &error);
  g_autofree char *path = g_build_filename (dir, "x.csv", NULL);
  g_autoptr (GArray) v = NULL;

  g_assert_no_error (error);
  v = shd_csv_read_column (path, "a", &error);
  g_assert_null (v);
  g_assert_error (error, G_FILE_ERROR, G_FILE_ERROR_NOENT);
  g_clear_error (&error);
  g_assert_true (g_file_set_contents (path, "a\n1\n2\n", -1, &error));
  v = shd_csv_read_column (path, "a", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (v->len, ==, 2);
  g_unlink (path);
  g_rmdir (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/csv/basic", test_basic);
  g_test_add_func ("/csv/quotes-crlf-bom", test_quotes_crlf_bom);
  g_test_add_func ("/csv/errors", test_errors);
  g_test_add_func ("/csv/file", test_file);
  return g_test_run ();
}
