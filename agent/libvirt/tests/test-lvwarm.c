/* When shadowd keeps a libvirt disk's maps across a restart
 * (shd_lv_md_keep): metadata images built by hand, in the driver's format
 * (docs/shadow-metadata.md), against an origin file whose size and ctime
 * are stamped or not. */
#include "lvattach.h"

#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HDR 8192

typedef struct {
  char *dir;
  char *origin;
  char *md;
} Fixture;

static guint32
crc32c (const guint8 *p, gsize n)
{
  guint32 crc = 0xffffffff;

  for (gsize i = 0; i < n; i++) {
    crc ^= p[i];
    for (guint k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0x82f63b78 & (0u - (crc & 1)));
  }
  return ~crc;
}

static void
put32 (guint8 *p, guint32 v)
{
  for (guint i = 0; i < 4; i++)
    p[i] = (guint8) (v >> (8 * i));
}

static void
put64 (guint8 *p, guint64 v)
{
  put32 (p, (guint32) v);
  put32 (p + 4, (guint32) (v >> 32));
}

typedef struct {
  guint64 generation;
  gboolean in_use;
  guint32 active;               /* slot of the active child */
  gboolean origin_in_active;    /* the active slot is the origin's */
  gboolean stamped;
  gboolean torn;                /* a wrong checksum */
} Copy;

/* One header copy; slot 0 is the origin's (or another file's), slot 1 a tier's */
static void
make_copy (const Fixture *f, guint8 *h, const Copy *c)
{
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  const char *who = c->origin_in_active ? f->origin : "/elsewhere/other.img";
  guint8 id[32];
  gsize len = sizeof (id);
  struct stat st;
  guint8 *slot = h + 256 + c->active * 256;

  memset (h, 0, HDR);
  memcpy (h, "SHADOWMD", 8);
  put32 (h + 8, 2);
  put32 (h + 12, HDR);
  put64 (h + 16, c->generation);
  put64 (h + 24, c->in_use ? 1 : 0);
  put64 (h + 32, 65536);
  put32 (h + 56, 16);
  put32 (h + 60, c->active);
  put64 (h + 72, 16384);
  put32 (h + 80, 4096);
  put32 (h + 84, 32512);
  put32 (h + 88, 256);
  g_checksum_update (sum, (const guchar *) who, strlen (who));
  g_checksum_get_digest (sum, id, &len);
  g_assert_cmpint (g_stat (f->origin, &st), ==, 0);
  put32 (slot, 1 | 2 | 4 | (c->stamped ? 8 : 0));
  memcpy (slot + 16, id, 32);
  put32 (slot + 68, (guint32) st.st_ctim.tv_nsec);
  put64 (slot + 72, (guint64) st.st_ctim.tv_sec);
  put64 (slot + 80, (guint64) st.st_size);
  put32 (h + 92, crc32c (h, HDR) ^ (c->torn ? 1 : 0));
}

static void
write_md (const Fixture *f, const Copy *c0, const Copy *c1)
{
  g_autofree guint8 *buf = g_malloc0 (2 * HDR + 4096);

  if (c0)
    make_copy (f, buf, c0);
  if (c1)
    make_copy (f, buf + HDR, c1);
  g_assert_true (g_file_set_contents (f->md, (const char *) buf, 2 * HDR + 4096, NULL));
}

static gboolean
keep (const Fixture *f, const char *expect)
{
  g_autofree char *why = NULL;
  gboolean k = shd_lv_md_keep (f->md, f->origin, &why);

  if (k)
    g_assert_null (why);
  else if (expect)
    g_assert_nonnull (strstr (why, expect));
  return k;
}

static void
setup (Fixture *f, gconstpointer data)
{
  (void) data;
  f->dir = g_dir_make_tmp ("test-lvwarm-XXXXXX", NULL);
  g_assert_nonnull (f->dir);
  f->origin = g_build_filename (f->dir, "vda.qcow2", NULL);
  f->md = g_build_filename (f->dir, "vda.fast.meta", NULL);
  g_assert_true (g_file_set_contents (f->origin, "image", -1, NULL));
}

static void
teardown (Fixture *f, gconstpointer data)
{
  (void) data;
  g_unlink (f->origin);
  g_unlink (f->md);
  g_rmdir (f->dir);
  g_free (f->dir);
  g_free (f->origin);
  g_free (f->md);
}

static const Copy clean = { 4, FALSE, 0, TRUE, TRUE, FALSE };

static void
test_nothing_recorded (Fixture *f, gconstpointer data)
{
  (void) data;
  g_assert_true (g_file_set_contents (f->md, "", 0, NULL));
  g_assert_false (keep (f, "no maps recorded yet"));
  write_md (f, NULL, NULL);     /* zeroes */
  g_assert_false (keep (f, "no maps recorded yet"));
}

static void
test_clean (Fixture *f, gconstpointer data)
{
  Copy older = clean;

  (void) data;
  older.generation = 3;
  older.in_use = TRUE;
  write_md (f, &older, &clean);
  g_assert_true (keep (f, NULL));
  /* the copies alternate: the newer one counts, wherever it is */
  write_md (f, &clean, &older);
  g_assert_true (keep (f, NULL));
}

static void
test_unclean (Fixture *f, gconstpointer data)
{
  Copy c = clean, older = clean;

  (void) data;
  c.in_use = TRUE;
  c.stamped = FALSE;
  older.generation = 3;
  write_md (f, &older, &c);
  g_assert_false (keep (f, "not stopped cleanly"));
  c.stamped = TRUE;             /* even with a stamp left over */
  write_md (f, &older, &c);
  g_assert_false (keep (f, "not stopped cleanly"));
}

static void
test_torn (Fixture *f, gconstpointer data)
{
  Copy newer = clean, older = clean, bad = clean;

  (void) data;
  /* a torn newer copy: the older intact one is current (the driver, too,
   * writes nothing to a child before its in-use header is complete) */
  newer.generation = 5;
  newer.in_use = TRUE;
  newer.torn = TRUE;
  write_md (f, &older, &newer);
  g_assert_true (keep (f, NULL));
  bad.torn = TRUE;
  write_md (f, &bad, &newer);
  g_assert_false (keep (f, "not an intact version 2 header"));
}

static void
test_other_active (Fixture *f, gconstpointer data)
{
  Copy c = clean;

  (void) data;
  c.origin_in_active = FALSE;
  write_md (f, &c, NULL);
  g_assert_false (keep (f, "was not the active tier"));
  c = clean;
  c.active = 3;                 /* an empty slot */
  write_md (f, &c, NULL);
  g_assert_true (keep (f, NULL));       /* slot 3 is the origin's here */
  c.active = 16;
  write_md (f, &c, NULL);
  g_assert_false (keep (f, "names no active tier"));
}

static void
test_not_stamped (Fixture *f, gconstpointer data)
{
  Copy c = clean;

  (void) data;
  c.stamped = FALSE;
  write_md (f, &c, NULL);
  g_assert_false (keep (f, "no size and ctime recorded"));
}

static void
test_origin_changed (Fixture *f, gconstpointer data)
{
  (void) data;
  write_md (f, &clean, NULL);
  g_assert_true (keep (f, NULL));
  /* a mode change: same size, a new ctime (past the clock's tick) */
  g_usleep (20000);
  g_assert_cmpint (g_chmod (f->origin, 0640), ==, 0);
  g_assert_false (keep (f, "changed while the shadow was out"));
  write_md (f, &clean, NULL);
  g_assert_true (keep (f, NULL));
  /* a write that changes the size */
  g_usleep (20000);
  g_assert_true (g_file_set_contents (f->origin, "image, written", -1, NULL));
  g_assert_false (keep (f, "changed while the shadow was out"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
#define ADD(name, fn) g_test_add ("/lvwarm/" name, Fixture, NULL, setup, fn, teardown)
  ADD ("nothing-recorded", test_nothing_recorded);
  ADD ("clean", test_clean);
  ADD ("unclean", test_unclean);
  ADD ("torn", test_torn);
  ADD ("other-active", test_other_active);
  ADD ("not-stamped", test_not_stamped);
  ADD ("origin-changed", test_origin_changed);
  return g_test_run ();
}
