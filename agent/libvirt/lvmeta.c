/* Domain metadata and live domain XML; see lvmeta.h. */
#include "lvmeta.h"

#include <stdlib.h>
#include <string.h>

#define MAX_TARGET 8            /* keeps node names under QEMU's 31 bytes */

static void
tier_free (gpointer p)
{
  ShdLvTier *t = p;

  g_free (t->name);
  g_free (t->path);
  g_free (t->rbd);
  g_free (t->cost);
  g_free (t->max_iops);
  g_free (t->latency_ms);
  g_free (t);
}

void
shd_lv_move_free (ShdLvMove *m)
{
  if (m == NULL)
    return;
  g_free (m->tier);
  g_free (m->image);
  g_free (m->old);
  g_free (m->keep_as);
  g_free (m->domain);
  g_free (m->old_id);
  g_free (m->verify_speed);
  g_free (m);
}

void
shd_lv_disk_free (ShdLvDisk *d)
{
  if (d == NULL)
    return;
  shd_lv_move_free (d->move);
  g_free (d->target);
  g_ptr_array_unref (d->tiers);
  g_hash_table_unref (d->disk_attrs);
  g_hash_table_unref (d->policy_attrs);
  g_free (d);
}

/* "shadow:disk" -> "disk": namespaces are libvirt's business; the
 * element libvirt hands out is ours as a whole. */
static const char *
local_name (const char *name)
{
  const char *colon = strrchr (name, ':');

  return colon ? colon + 1 : name;
}

/* ---- the metadata element ---- */

typedef struct {
  GPtrArray *disks;
  ShdLvDisk *disk;              /* the open <disk>, or NULL */
  guint depth;
} MetaCtx;

static gboolean G_GNUC_PRINTF (3, 4)
meta_fail (GMarkupParseContext *pc, GError **error, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;
  int line = 0, col = 0;

  g_markup_parse_context_get_position (pc, &line, &col);
  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (error, G_MARKUP_ERROR, G_MARKUP_ERROR_INVALID_CONTENT,
               "shadow metadata, line %d: %s", line, msg);
  return FALSE;
}

static gboolean
valid_target (const char *s)
{
  if (!g_ascii_isalpha (*s) || strlen (s) > MAX_TARGET)
    return FALSE;
  for (; *s; s++)
    if (!g_ascii_isalnum (*s))
      return FALSE;
  return TRUE;
}

/* POOL/IMAGE: names QEMU passes to librbd as they are; the image name
 * may end in .meta only as the metadata image shadowd makes */
static gboolean
valid_rbd (const char *s)
{
  const char *slash = strchr (s, '/');

  if (slash == NULL || slash == s || slash[1] == 0 || strchr (slash + 1, '/') ||
      g_str_has_suffix (s, ".meta") || strlen (s) > 200)
    return FALSE;
  for (; *s; s++)
    if (!g_ascii_isalnum (*s) && !strchr ("._-/", *s))
      return FALSE;
  return TRUE;
}

static gboolean
parse_u64 (const char *s, guint64 *out)
{
  return g_ascii_string_to_unsigned (s, 10, 0, G_MAXINT64, out, NULL);
}

/* The attributes of <tier> */
typedef enum { ATTR_TEXT, ATTR_YES_NO, ATTR_COUNT } AttrKind;

typedef struct {
  const char *name;
  AttrKind kind;
  gsize offset;                 /* in ShdLvTier */
  const char *what;             /* ATTR_COUNT: in messages */
} TierAttr;

static const TierAttr tier_attrs[] = {
  { "name", ATTR_TEXT, G_STRUCT_OFFSET (ShdLvTier, name), NULL },
  { "path", ATTR_TEXT, G_STRUCT_OFFSET (ShdLvTier, path), NULL },
  { "rbd", ATTR_TEXT, G_STRUCT_OFFSET (ShdLvTier, rbd), NULL },
  { "origin", ATTR_YES_NO, G_STRUCT_OFFSET (ShdLvTier, origin), NULL },
  { "host-local", ATTR_YES_NO, G_STRUCT_OFFSET (ShdLvTier, host_local), NULL },
  { "cost-gib-month", ATTR_TEXT, G_STRUCT_OFFSET (ShdLvTier, cost), NULL },
  { "max-iops", ATTR_TEXT, G_STRUCT_OFFSET (ShdLvTier, max_iops), NULL },
  { "latency-ms", ATTR_TEXT, G_STRUCT_OFFSET (ShdLvTier, latency_ms), NULL },
  { "iops-limit", ATTR_COUNT, G_STRUCT_OFFSET (ShdLvTier, iops_limit), "a count" },
  { "bps-limit", ATTR_COUNT, G_STRUCT_OFFSET (ShdLvTier, bps_limit), "a byte rate" },
};

static const TierAttr *
tier_attr (const char *name)
{
  for (guint i = 0; i < G_N_ELEMENTS (tier_attrs); i++)
    if (strcmp (name, tier_attrs[i].name) == 0)
      return &tier_attrs[i];
  return NULL;
}

static char *
tier_attr_names (void)
{
  GString *s = g_string_new (NULL);

  for (guint i = 0; i < G_N_ELEMENTS (tier_attrs); i++)
    g_string_append_printf (s, "%s%s", i ? ", " : "", tier_attrs[i].name);
  return g_string_free (s, FALSE);
}

static gboolean
parse_tier (GMarkupParseContext *pc, ShdLvDisk *d, const char **names, const char **values,
            GError **error)
{
  ShdLvTier *t = g_new0 (ShdLvTier, 1);

  g_ptr_array_add (d->tiers, t);
  for (guint i = 0; names[i]; i++) {
    const TierAttr *a = tier_attr (names[i]);
    gpointer field;

    if (a == NULL) {
      g_autofree char *known = tier_attr_names ();

      return meta_fail (pc, error, "<tier> has no attribute '%s' (%s)", names[i], known);
    }
    field = G_STRUCT_MEMBER_P (t, a->offset);
    switch (a->kind) {
    case ATTR_TEXT:
      *(char **) field = g_strdup (values[i]);
      break;
    case ATTR_YES_NO:
      if (strcmp (values[i], "yes") != 0 && strcmp (values[i], "no") != 0)
        return meta_fail (pc, error, "<tier %s> is yes or no, not '%s'", a->name, values[i]);
      *(gboolean *) field = strcmp (values[i], "yes") == 0;
      break;
    case ATTR_COUNT:
      if (!parse_u64 (values[i], field))
        return meta_fail (pc, error, "<tier %s> '%s' is not %s", a->name, values[i], a->what);
      break;
    }
  }
  if (t->name == NULL)
    return meta_fail (pc, error, "a <tier> of disk %s has no name", d->target);
  if (t->origin && (t->path || t->rbd))
    return meta_fail (pc, error, "tier %s: the origin tier is the disk's own image and "
                      "takes no %s", t->name, t->path ? "path" : "rbd image");
  if (t->path && t->rbd)
    return meta_fail (pc, error, "tier %s: give a path or an rbd image, not both", t->name);
  if (t->rbd && !valid_rbd (t->rbd))
    return meta_fail (pc, error, "tier %s: rbd '%s' is not POOL/IMAGE (letters, digits, "
                      "'.', '_' and '-'; no snapshot, no namespace)", t->name, t->rbd);
  if (!t->origin && t->path == NULL && t->rbd == NULL)
    return meta_fail (pc, error, "tier %s: give its image's path or rbd image, or origin=\"yes\" for "
                      "the disk's own image", t->name);
  if (t->host_local && t->path == NULL)
    return meta_fail (pc, error, "tier %s: host-local=\"yes\" is for a tier with a path",
                      t->name);
  if (t->path && !g_path_is_absolute (t->path))
    return meta_fail (pc, error, "tier %s: path '%s' is not absolute", t->name, t->path);
  if (t->path && (strstr (t->path, "/../") || g_str_has_suffix (t->path, "/..")))
    return meta_fail (pc, error, "tier %s: path '%s' has '..' in it", t->name, t->path);
  return TRUE;
}

/* <move>: written by shadowd itself (lvmove.c), checked all the same */
static gboolean
parse_move (GMarkupParseContext *pc, ShdLvDisk *d, const char **names, const char **values,
            GError **error)
{
  ShdLvMove *m;

  if (d->move)
    return meta_fail (pc, error, "disk %s has two <move>", d->target);
  m = d->move = g_new0 (ShdLvMove, 1);
  for (guint i = 0; names[i]; i++) {
    char **field = strcmp (names[i], "tier") == 0 ? &m->tier :
                   strcmp (names[i], "image") == 0 ? &m->image :
                   strcmp (names[i], "old") == 0 ? &m->old :
                   strcmp (names[i], "keep-as") == 0 ? &m->keep_as :
                   strcmp (names[i], "domain") == 0 ? &m->domain :
                   strcmp (names[i], "old-id") == 0 ? &m->old_id :
                   strcmp (names[i], "verify-speed") == 0 ? &m->verify_speed : NULL;

    if (field == NULL)
      return meta_fail (pc, error, "<move> has no attribute '%s' (tier, image, old, domain, "
                        "old-id, keep-as, verify-speed)",
                        names[i]);
    g_free (*field);
    *field = g_strdup (values[i]);
  }
  if (m->tier == NULL || m->image == NULL || m->old == NULL)
    return meta_fail (pc, error, "disk %s: <move> needs tier, image and old", d->target);
  if (!g_path_is_absolute (m->image) || !g_path_is_absolute (m->old) ||
      (m->keep_as && !g_path_is_absolute (m->keep_as)))
    return meta_fail (pc, error, "disk %s: <move> paths must be absolute", d->target);
  return TRUE;
}

static void
meta_start (GMarkupParseContext *pc, const char *element, const char **names,
            const char **values, gpointer data, GError **error)
{
  MetaCtx *x = data;
  const char *el = local_name (element);

  x->depth++;
  if (x->depth == 1) {
    if (strcmp (el, "shadowtier") != 0)
      meta_fail (pc, error, "the root element is <%s>, expected <shadowtier>", el);
    return;
  }
  if (x->depth == 2) {
    ShdLvDisk *d;

    if (strcmp (el, "disk") != 0) {
      meta_fail (pc, error, "unexpected <%s> in <shadowtier> (only <disk>)", el);
      return;
    }
    d = g_new0 (ShdLvDisk, 1);
    d->tiers = g_ptr_array_new_with_free_func (tier_free);
    d->disk_attrs = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    d->policy_attrs = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    g_ptr_array_add (x->disks, d);
    x->disk = d;
    for (guint i = 0; names[i]; i++) {
      if (strcmp (names[i], "target") == 0)
        d->target = g_strdup (values[i]);
      else if (!g_str_has_prefix (names[i], "xmlns"))
        g_hash_table_insert (d->disk_attrs, g_strdup (names[i]), g_strdup (values[i]));
    }
    if (d->target == NULL)
      meta_fail (pc, error, "a <disk> has no target (the disk's target dev, e.g. vda)");
    else if (!valid_target (d->target))
      meta_fail (pc, error, "disk target '%s' is not a target dev name "
                 "(a letter, then letters and digits, at most %d)", d->target, MAX_TARGET);
    else
      for (guint i = 0; i + 1 < x->disks->len; i++)
        if (strcmp (((ShdLvDisk *) x->disks->pdata[i])->target, d->target) == 0)
          meta_fail (pc, error, "disk %s is described twice", d->target);
    return;
  }
  if (x->depth == 3 && strcmp (el, "tier") == 0) {
    parse_tier (pc, x->disk, names, values, error);
    return;
  }
  if (x->depth == 3 && strcmp (el, "policy") == 0) {
    for (guint i = 0; names[i]; i++)
      g_hash_table_insert (x->disk->policy_attrs, g_strdup (names[i]), g_strdup (values[i]));
    return;
  }
  if (x->depth == 3 && strcmp (el, "move") == 0) {
    parse_move (pc, x->disk, names, values, error);
    return;
  }
  meta_fail (pc, error, "unexpected <%s>%s", el,
             x->depth == 3 ? " in <disk> (only <tier>, <policy> and <move>)" : "");
}

static void
meta_end (GMarkupParseContext *pc, const char *element, gpointer data, GError **error)
{
  MetaCtx *x = data;
  ShdLvDisk *d = x->disk;
  guint origins = 0;

  (void) element;
  if (x->depth-- != 2 || d == NULL)
    return;
  x->disk = NULL;
  for (guint i = 0; i < d->tiers->len; i++) {
    ShdLvTier *t = d->tiers->pdata[i];

    origins += t->origin;
    for (guint j = 0; j < i; j++) {
      ShdLvTier *o = d->tiers->pdata[j];

      if (strcmp (o->name, t->name) == 0)
        meta_fail (pc, error, "disk %s: tier %s is given twice", d->target, t->name);
      else if (t->path && o->path && strcmp (o->path, t->path) == 0)
        meta_fail (pc, error, "disk %s: tiers %s and %s have the same image %s",
                   d->target, o->name, t->name, t->path);
      else if (t->rbd && o->rbd && strcmp (o->rbd, t->rbd) == 0)
        meta_fail (pc, error, "disk %s: tiers %s and %s have the same rbd image %s",
                   d->target, o->name, t->name, t->rbd);
    }
  }
  if (*error)
    return;
  if (origins != 1)
    meta_fail (pc, error, "disk %s: exactly one tier must be origin=\"yes\" (the disk's "
               "own image), found %u", d->target, origins);
  else if (d->tiers->len < 2)
    meta_fail (pc, error, "disk %s: give at least one tier besides the origin", d->target);
  else if (d->tiers->len > 8)
    meta_fail (pc, error, "disk %s: at most 8 tiers", d->target);
}

static void
meta_text (GMarkupParseContext *pc, const char *text, gsize len, gpointer data,
           GError **error)
{
  (void) data;
  for (gsize i = 0; i < len; i++)
    if (!g_ascii_isspace (text[i])) {
      meta_fail (pc, error, "unexpected text '%.*s'", (int) MIN (len, 40), text);
      return;
    }
}

GPtrArray *
shd_lv_meta_parse (const char *xml, GError **error)
{
  static const GMarkupParser parser = { meta_start, meta_end, meta_text, NULL, NULL };
  g_autoptr (GPtrArray) disks = g_ptr_array_new_with_free_func ((GDestroyNotify) shd_lv_disk_free);
  MetaCtx x = { disks, NULL, 0 };
  g_autoptr (GMarkupParseContext) pc =
    g_markup_parse_context_new (&parser, G_MARKUP_PREFIX_ERROR_POSITION, &x, NULL);

  if (!g_markup_parse_context_parse (pc, xml, -1, error) ||
      !g_markup_parse_context_end_parse (pc, error))
    return NULL;
  if (disks->len == 0) {
    g_set_error (error, G_MARKUP_ERROR, G_MARKUP_ERROR_INVALID_CONTENT,
                 "shadow metadata: no <disk>");
    return NULL;
  }
  return g_steal_pointer (&disks);
}

/* ---- writing it back ---- */

static int
compare_strings (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static void
append_attrs (GString *s, GHashTable *h)
{
  g_autofree gpointer *keys = (gpointer *) g_hash_table_get_keys_as_array (h, NULL);
  guint n = g_hash_table_size (h);

  qsort (keys, n, sizeof (gpointer), compare_strings);
  for (guint i = 0; i < n; i++) {
    g_autofree char *a = g_markup_printf_escaped (" %s=\"%s\"", (char *) keys[i],
                                                  (char *) g_hash_table_lookup (h, keys[i]));

    g_string_append (s, a);
  }
}

static void
append_attr (GString *s, const char *name, const char *value)
{
  g_autofree char *a = NULL;

  if (value == NULL)
    return;
  a = g_markup_printf_escaped (" %s=\"%s\"", name, value);
  g_string_append (s, a);
}

char *
shd_lv_meta_format (GPtrArray *disks)
{
  GString *s = g_string_new ("<shadowtier>\n");

  for (guint i = 0; i < disks->len; i++) {
    ShdLvDisk *d = disks->pdata[i];

    g_string_append (s, "  <disk");
    append_attr (s, "target", d->target);
    append_attrs (s, d->disk_attrs);
    g_string_append (s, ">\n");
    for (guint j = 0; j < d->tiers->len; j++) {
      ShdLvTier *t = d->tiers->pdata[j];

      g_string_append (s, "    <tier");
      for (guint a = 0; a < G_N_ELEMENTS (tier_attrs); a++) {
        gpointer field = G_STRUCT_MEMBER_P (t, tier_attrs[a].offset);
        g_autofree char *num = NULL;

        switch (tier_attrs[a].kind) {
        case ATTR_TEXT:
          append_attr (s, tier_attrs[a].name, *(char **) field);
          break;
        case ATTR_YES_NO:
          if (*(gboolean *) field)
            append_attr (s, tier_attrs[a].name, "yes");
          break;
        case ATTR_COUNT:
          if (*(guint64 *) field) {
            num = g_strdup_printf ("%" G_GUINT64_FORMAT, *(guint64 *) field);
            append_attr (s, tier_attrs[a].name, num);
          }
          break;
        }
      }
      g_string_append (s, "/>\n");
    }
    if (g_hash_table_size (d->policy_attrs) > 0) {
      g_string_append (s, "    <policy");
      append_attrs (s, d->policy_attrs);
      g_string_append (s, "/>\n");
    }
    if (d->move) {
      g_string_append (s, "    <move");
      append_attr (s, "tier", d->move->tier);
      append_attr (s, "image", d->move->image);
      append_attr (s, "old", d->move->old);
      append_attr (s, "keep-as", d->move->keep_as);
      append_attr (s, "domain", d->move->domain);
      append_attr (s, "old-id", d->move->old_id);
      append_attr (s, "verify-speed", d->move->verify_speed);
      g_string_append (s, "/>\n");
    }
    g_string_append (s, "  </disk>\n");
  }
  g_string_append (s, "</shadowtier>\n");
  return g_string_free (s, FALSE);
}

ShdLvTier *
shd_lv_disk_tier (const ShdLvDisk *d, const char *name)
{
  for (guint i = 0; d && i < d->tiers->len; i++)
    if (strcmp (((ShdLvTier *) d->tiers->pdata[i])->name, name) == 0)
      return d->tiers->pdata[i];
  return NULL;
}

gboolean
shd_lv_disk_moved_to (ShdLvDisk *d, const char *tier)
{
  ShdLvTier *to = shd_lv_disk_tier (d, tier);

  g_clear_pointer (&d->move, shd_lv_move_free);
  if (to && !to->origin) {
    for (guint i = 0; i < d->tiers->len; i++)
      if (((ShdLvTier *) d->tiers->pdata[i])->origin) {
        g_ptr_array_remove_index (d->tiers, i);
        break;
      }
    g_clear_pointer (&to->path, g_free);
    g_clear_pointer (&to->rbd, g_free);
    to->host_local = FALSE;
    to->origin = TRUE;
  }
  return d->tiers->len >= 2;
}

/* ---- names ---- */

char *
shd_lv_node_shadow (const char *target)
{
  return g_strdup_printf ("shd-%s", target);
}

char *
shd_lv_node_base (const char *target)
{
  return g_strdup_printf ("shd-%s-base", target);
}

char *
shd_lv_node_tier (const char *target, guint index, gboolean throttle)
{
  return g_strdup_printf ("shd-%s-%c%u", target, throttle ? 't' : 'f', index);
}

char *
shd_lv_node_meta (const char *target)
{
  return g_strdup_printf ("shd-%s-md", target);
}

char *
shd_lv_meta_image (const ShdLvDisk *d, gboolean *rbd)
{
  *rbd = FALSE;
  for (guint i = 0; i < d->tiers->len; i++) {
    const ShdLvTier *t = d->tiers->pdata[i];

    if (!t->origin) {
      *rbd = t->rbd != NULL;
      return g_strdup_printf ("%s.meta", t->rbd ? t->rbd : t->path);
    }
  }
  return NULL;
}

char *
shd_lv_meta_path (const ShdLvDisk *d)
{
  gboolean rbd;
  g_autofree char *img = shd_lv_meta_image (d, &rbd);

  return rbd ? NULL : g_steal_pointer (&img);
}

char **
shd_lv_disk_local_images (const ShdLvDisk *d)
{
  g_autoptr (GStrvBuilder) b = g_strv_builder_new ();
  const ShdLvTier *first = NULL;

  for (guint i = 0; i < d->tiers->len; i++) {
    const ShdLvTier *t = d->tiers->pdata[i];

    if (t->origin)
      continue;
    first = first ? first : t;
    if (t->host_local)
      g_strv_builder_add (b, t->path);
  }
  /* the metadata image is next to the first tier's */
  if (first && first->host_local) {
    g_autofree char *md = shd_lv_meta_path (d);

    g_strv_builder_add (b, md);
  }
  return g_strv_builder_end (b);
}

gboolean
shd_lv_disk_on_rbd (const ShdLvDisk *d)
{
  for (guint i = 0; i < d->tiers->len; i++)
    if (((const ShdLvTier *) d->tiers->pdata[i])->rbd)
      return TRUE;
  return FALSE;
}

char *
shd_lv_throttle_group (const char *target, guint index)
{
  return g_strdup_printf ("shd-%s-g%u", target, index);
}

char *
shd_lv_disk_name (const char *domain, const char *target)
{
  return g_strdup_printf ("%s.%s", domain, target);
}

static const char *
attr (GHashTable *h, const char *k)
{
  return g_hash_table_lookup (h, k);
}

/* The keys are GVariant text: every string quoted and escaped, every
 * field in its place, so that two different descriptions never give the
 * same key (pasting "name,path|" together made a path with ",0,0,0|" in
 * it look like two tiers). */
static char *
print_key (GVariant *v)
{
  g_autoptr (GVariant) sunk = g_variant_ref_sink (v);

  return g_variant_print (sunk, FALSE);
}

static GVariant *
layout_variant (const ShdLvDisk *d)
{
  GVariantBuilder tiers;

  g_variant_builder_init (&tiers, G_VARIANT_TYPE ("a(smsmsbtt)"));
  for (guint i = 0; i < d->tiers->len; i++) {
    const ShdLvTier *t = d->tiers->pdata[i];

    g_variant_builder_add (&tiers, "(smsmsbtt)", t->name, t->path, t->rbd, t->origin,
                           t->iops_limit, t->bps_limit);
  }
  /* the rbd settings name the cluster the images are on */
  return g_variant_new ("(sa(smsmsbtt)msmsmsms)", d->target, &tiers,
                        attr (d->disk_attrs, "chunk-size"), attr (d->disk_attrs, "rbd-conf"),
                        attr (d->disk_attrs, "rbd-user"), attr (d->disk_attrs, "rbd-key-secret"));
}

char *
shd_lv_disk_layout_key (const ShdLvDisk *d)
{
  return print_key (layout_variant (d));
}

/* A table's pairs, sorted by name */
static GVariant *
sorted_attrs (GHashTable *h)
{
  g_autoptr (GList) keys = g_list_sort (g_hash_table_get_keys (h), (GCompareFunc) strcmp);
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE ("a{ss}"));
  for (GList *l = keys; l; l = l->next)
    g_variant_builder_add (&b, "{ss}", (const char *) l->data,
                           (const char *) g_hash_table_lookup (h, l->data));
  return g_variant_builder_end (&b);
}

char *
shd_lv_disk_full_key (const ShdLvDisk *d)
{
  GVariantBuilder tiers;

  g_variant_builder_init (&tiers, G_VARIANT_TYPE ("a(smsmsms)"));
  for (guint i = 0; i < d->tiers->len; i++) {
    const ShdLvTier *t = d->tiers->pdata[i];

    g_variant_builder_add (&tiers, "(smsmsms)", t->name, t->cost, t->max_iops, t->latency_ms);
  }
  return print_key (g_variant_new ("(@(sa(smsmsbtt)msmsmsms)@a{ss}@a{ss}a(smsmsms))",
                                   layout_variant (d), sorted_attrs (d->disk_attrs),
                                   sorted_attrs (d->policy_attrs), &tiers));
}

/* The origin first: the child that serves I/O at insertion. */
static guint
tier_index (const ShdLvDisk *d, const ShdLvTier *t)
{
  guint n = 1;

  if (t->origin)
    return 0;
  for (guint i = 0; i < d->tiers->len; i++) {
    const ShdLvTier *o = d->tiers->pdata[i];

    if (o == t)
      return n;
    if (!o->origin)
      n++;
  }
  g_return_val_if_reached (0);
}

/* copy-compare: as the metadata says, else on for a sync disk.  A cold
 * start keeps the tier images' bytes, and the copy then writes only what
 * changed (docs/libvirt.md, "Warm restarts"); write-back's copies go to
 * chunks that differ, where a compare would only read in vain. */
gboolean
shd_lv_disk_copy_compare (const ShdLvDisk *d)
{
  const char *cc = attr (d->disk_attrs, "copy-compare");

  if (cc)
    return strcmp (cc, "true") == 0;
  return g_strcmp0 (attr (d->disk_attrs, "write-mode"), "async") != 0;
}

ShdDiskConfig *
shd_lv_disk_config (ShdConfig *c, const char *domain, const ShdLvDisk *d, GError **error)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autofree char *name = shd_lv_disk_name (domain, d->target);
  g_autofree char *group = g_strdup_printf ("disk:%s", name);
  g_autofree char *origin = g_strdup_printf ("domain %s metadata", domain);
  g_autofree char *node = shd_lv_node_shadow (d->target);
  const char *wm = attr (d->disk_attrs, "write-mode");
  GHashTableIter it;
  gpointer k, v;
  ShdDiskConfig *dc;

  if (wm && strcmp (wm, "sync") != 0 && strcmp (wm, "async") != 0) {
    g_set_error (error, SHD_CONFIG_ERROR, SHD_CONFIG_ERROR_INVALID,
                 "%s: disk %s: write-mode must be sync or async", origin, d->target);
    return NULL;
  }
  /* write-back needs the maps: they say which tier holds the newer data
   * until the image is settled (docs/libvirt.md, "Write-back"); the
   * parser already wants a tier with a path, this keeps it so */
  g_autofree char *md_path = shd_lv_meta_path (d);

  if (wm && strcmp (wm, "async") == 0 && shd_lv_disk_on_rbd (d)) {
    /* RBD tiers always start cold after a restart, which would drop the
     * newer data write-back leaves on them; the hook settles from files */
    g_set_error (error, SHD_CONFIG_ERROR, SHD_CONFIG_ERROR_INVALID,
                 "%s: disk %s: write-mode async is not supported with rbd tiers; use sync",
                 origin, d->target);
    return NULL;
  }
  if (wm && strcmp (wm, "async") == 0 && md_path == NULL) {
    g_set_error (error, SHD_CONFIG_ERROR, SHD_CONFIG_ERROR_INVALID,
                 "%s: disk %s: write-mode async needs a tier with a path (its metadata "
                 "image records where the newest data is)", origin, d->target);
    return NULL;
  }
  /* Tiers: a [tier:NAME] of the file, or one the metadata defines. */
  for (guint i = 0; i < d->tiers->len; i++) {
    const ShdLvTier *t = d->tiers->pdata[i];
    double cost = 0, iops = 0, lat = 0;

    if (shd_config_tier (c, t->name))
      continue;
    if (t->cost == NULL) {
      g_set_error (error, SHD_CONFIG_ERROR, SHD_CONFIG_ERROR_INVALID,
                   "%s: disk %s: tier '%s' is unknown: define [tier:%s] in the "
                   "configuration or give the tier a cost-gib-month", origin, d->target,
                   t->name, t->name);
      return NULL;
    }
    {
      char *end = NULL;

      cost = g_ascii_strtod (t->cost, &end);
      if (end == t->cost || *end || !(cost >= 0 && cost <= 1e6)) {
        g_set_error (error, SHD_CONFIG_ERROR, SHD_CONFIG_ERROR_INVALID,
                     "%s: disk %s: tier %s: cost-gib-month '%s' is not a number "
                     "from 0 to 1e6", origin, d->target, t->name, t->cost);
        return NULL;
      }
      if (t->max_iops)
        iops = g_ascii_strtod (t->max_iops, NULL);
      if (t->latency_ms)
        lat = g_ascii_strtod (t->latency_ms, NULL);
    }
    if (!shd_config_add_tier (c, t->name, cost, MAX (iops, 0), MAX (lat, 0), error)) {
      g_prefix_error (error, "%s: disk %s: ", origin, d->target);
      return NULL;
    }
  }
  g_key_file_set_string (kf, group, "qmp", "libvirt");
  g_key_file_set_string (kf, group, "node", node);
  g_key_file_set_string (kf, group, "write-mode", wm ? wm : "sync");
  g_key_file_set_string (kf, group, "add-children", "false");
  /* (a value given in the metadata is checked by the configuration) */
  g_key_file_set_string (kf, group, "copy-compare",
                         shd_lv_disk_copy_compare (d) ? "true" : "false");
  {
    gboolean rbd;
    g_autofree char *md = shd_lv_meta_image (d, &rbd);
    g_autofree char *md_node = shd_lv_node_meta (d->target);

    if (md)
      g_key_file_set_string (kf, group, "metadata", md_node);
  }
  g_hash_table_iter_init (&it, d->disk_attrs);
  while (g_hash_table_iter_next (&it, &k, &v))
    if (strcmp (k, "write-mode") != 0)
      g_key_file_set_string (kf, group, k, v);
  g_hash_table_iter_init (&it, d->policy_attrs);
  while (g_hash_table_iter_next (&it, &k, &v))
    g_key_file_set_string (kf, group, k, v);
  for (guint i = 0; i < d->tiers->len; i++) {
    const ShdLvTier *t = d->tiers->pdata[i];
    guint idx = tier_index (d, t);
    g_autofree char *key = g_strdup_printf ("tier.%s", t->name);
    g_autofree char *child = NULL;

    if (t->origin && t->iops_limit == 0 && t->bps_limit == 0)
      child = shd_lv_node_base (d->target);
    else
      child = shd_lv_node_tier (d->target, idx, t->iops_limit || t->bps_limit);
    g_key_file_set_string (kf, group, key, child);
    /* the domain's own image: never released (release-origin) */
    if (t->origin)
      g_key_file_set_string (kf, group, "origin", t->name);
  }
  dc = shd_config_load_disk (c, kf, group, origin, error);
  if (dc) {
    g_free (dc->qmp);
    dc->qmp = g_strdup_printf ("libvirt:%s", domain);
  }
  return dc;
}

/* ---- the live domain XML ---- */

typedef struct {
  GPtrArray *disks;
  ShdLvDomDisk *disk;
  GQueue stack;                 /* element local names */
} DomCtx;

ShdLvDomDisk *
shd_lv_dom_disk_copy (const ShdLvDomDisk *s)
{
  ShdLvDomDisk *d;

  if (s == NULL)
    return NULL;
  d = g_new0 (ShdLvDomDisk, 1);
  d->target = g_strdup (s->target);
  d->alias = g_strdup (s->alias);
  d->source = g_strdup (s->source);
  d->protocol = g_strdup (s->protocol);
  d->type = g_strdup (s->type);
  d->format = g_strdup (s->format);
  d->discard = g_strdup (s->discard);
  d->io = g_strdup (s->io);
  d->device = g_strdup (s->device);
  return d;
}

void
shd_lv_dom_disk_free (ShdLvDomDisk *d)
{
  if (d == NULL)
    return;
  g_free (d->target);
  g_free (d->alias);
  g_free (d->source);
  g_free (d->protocol);
  g_free (d->type);
  g_free (d->format);
  g_free (d->discard);
  g_free (d->io);
  g_free (d->device);
  g_free (d);
}

static const char *
find_attr (const char **names, const char **values, const char *name)
{
  for (guint i = 0; names[i]; i++)
    if (strcmp (names[i], name) == 0)
      return values[i];
  return NULL;
}

static void
set_from (char **field, const char **names, const char **values, const char *name)
{
  const char *v = find_attr (names, values, name);

  if (v && *field == NULL)
    *field = g_strdup (v);
}

static void
dom_start (GMarkupParseContext *pc, const char *element, const char **names,
           const char **values, gpointer data, GError **error)
{
  DomCtx *x = data;
  const char *parent = g_queue_peek_tail (&x->stack);
  guint depth = x->stack.length;

  (void) pc;
  (void) error;
  g_queue_push_tail (&x->stack, (gpointer) g_intern_string (element));
  /* domain/devices/disk */
  if (depth == 2 && strcmp (element, "disk") == 0 && g_strcmp0 (parent, "devices") == 0) {
    x->disk = g_new0 (ShdLvDomDisk, 1);
    set_from (&x->disk->type, names, values, "type");
    set_from (&x->disk->device, names, values, "device");
    g_ptr_array_add (x->disks, x->disk);
    return;
  }
  if (x->disk == NULL || depth != 3)
    return;
  if (strcmp (element, "target") == 0)
    set_from (&x->disk->target, names, values, "dev");
  else if (strcmp (element, "alias") == 0)
    set_from (&x->disk->alias, names, values, "name");
  else if (strcmp (element, "source") == 0) {
    set_from (&x->disk->source, names, values, "file");
    set_from (&x->disk->source, names, values, "dev");
    /* <disk type='network'>: <source protocol='rbd' name='POOL/IMAGE'> */
    set_from (&x->disk->source, names, values, "name");
    set_from (&x->disk->protocol, names, values, "protocol");
  } else if (strcmp (element, "driver") == 0) {
    set_from (&x->disk->format, names, values, "type");
    set_from (&x->disk->discard, names, values, "discard");
    set_from (&x->disk->io, names, values, "io");
  }
}

static void
dom_end (GMarkupParseContext *pc, const char *element, gpointer data, GError **error)
{
  DomCtx *x = data;

  (void) pc;
  (void) error;
  g_queue_pop_tail (&x->stack);
  if (x->stack.length == 2 && strcmp (element, "disk") == 0)
    x->disk = NULL;
}

GPtrArray *
shd_lv_domain_disks (const char *xml, GError **error)
{
  static const GMarkupParser parser = { dom_start, dom_end, NULL, NULL, NULL };
  g_autoptr (GPtrArray) disks = g_ptr_array_new_with_free_func ((GDestroyNotify) shd_lv_dom_disk_free);
  DomCtx x = { disks, NULL, G_QUEUE_INIT };
  g_autoptr (GMarkupParseContext) pc =
    g_markup_parse_context_new (&parser, G_MARKUP_PREFIX_ERROR_POSITION, &x, NULL);
  gboolean ok;

  ok = g_markup_parse_context_parse (pc, xml, -1, error) &&
       g_markup_parse_context_end_parse (pc, error);
  g_queue_clear (&x.stack);
  return ok ? g_steal_pointer (&disks) : NULL;
}

const ShdLvDomDisk *
shd_lv_domain_disk (GPtrArray *disks, const char *target)
{
  for (guint i = 0; i < disks->len; i++) {
    const ShdLvDomDisk *d = disks->pdata[i];

    if (g_strcmp0 (d->target, target) == 0)
      return d;
  }
  return NULL;
}
