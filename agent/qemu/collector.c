/* query-blockstats for a shadow node: parsing and rates. */
#include "collector.h"

#include <math.h>

G_DEFINE_QUARK (shd-collector-error-quark, shd_collector_error)

/* ---- parsing ---- */

static gboolean
get_u64 (JsonObject *o, const char *member, const char *where, guint64 *out,
         GError **error)
{
  JsonNode *n = json_object_get_member (o, member);

  if (n && JSON_NODE_HOLDS_VALUE (n)) {
    GType t = json_node_get_value_type (n);
    if (t == G_TYPE_INT64 && json_node_get_int (n) >= 0) {
      *out = json_node_get_int (n);
      return TRUE;
    }
    if (t == G_TYPE_DOUBLE && json_node_get_double (n) >= 0 &&
        json_node_get_double (n) < 1.8e19) {
      /* Counters beyond 2^63 arrive as doubles from json-glib. */
      *out = (guint64) json_node_get_double (n);
      return TRUE;
    }
  }
  g_set_error (error, SHD_COLLECTOR_ERROR, SHD_COLLECTOR_ERROR_MALFORMED,
               "%s: '%s' %s", where, member,
               n ? "is not a non-negative integer" : "is missing");
  return FALSE;
}

static gboolean
get_str (JsonObject *o, const char *member, const char *where, char **out,
         GError **error)
{
  JsonNode *n = json_object_get_member (o, member);

  if (n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING) {
    *out = g_strdup (json_node_get_string (n));
    return TRUE;
  }
  g_set_error (error, SHD_COLLECTOR_ERROR, SHD_COLLECTOR_ERROR_MALFORMED,
               "%s: '%s' %s", where, member, n ? "is not a string" : "is missing");
  return FALSE;
}

static gboolean
get_counters (JsonObject *o, const char *where, ShdIoCounters *c, GError **error)
{
  return get_u64 (o, "rd-operations", where, &c->rd_ops, error) &&
         get_u64 (o, "rd-bytes", where, &c->rd_bytes, error) &&
         get_u64 (o, "rd-total-time-ns", where, &c->rd_time_ns, error) &&
         get_u64 (o, "wr-operations", where, &c->wr_ops, error) &&
         get_u64 (o, "wr-bytes", where, &c->wr_bytes, error) &&
         get_u64 (o, "wr-total-time-ns", where, &c->wr_time_ns, error) &&
         get_u64 (o, "flush-operations", where, &c->flush_ops, error);
}

static void
child_sample_free (ShdChildSample *c)
{
  g_free (c->node_name);
  g_free (c->state);
  g_free (c);
}

void
shd_shadow_sample_free (ShdShadowSample *s)
{
  if (s == NULL)
    return;
  g_free (s->node_name);
  g_free (s->active);
  g_free (s->metadata);
  g_clear_pointer (&s->children, g_ptr_array_unref);
  g_free (s);
}

/* Depth-first over the entries and their parent/backing chains. */
static JsonObject *
find_node (JsonNode *n, const char *node_name, guint depth)
{
  JsonObject *o;
  const char *name;

  if (n == NULL || depth > 16)
    return NULL;
  if (JSON_NODE_HOLDS_ARRAY (n)) {
    JsonArray *a = json_node_get_array (n);
    for (guint i = 0; i < json_array_get_length (a); i++) {
      JsonObject *hit = find_node (json_array_get_element (a, i), node_name, depth + 1);
      if (hit)
        return hit;
    }
    return NULL;
  }
  if (!JSON_NODE_HOLDS_OBJECT (n))
    return NULL;
  o = json_node_get_object (n);
  name = json_object_get_string_member_with_default (o, "node-name", NULL);
  if (g_strcmp0 (name, node_name) == 0)
    return o;
  {
    JsonObject *hit = find_node (json_object_get_member (o, "parent"), node_name, depth + 1);
    return hit ? hit : find_node (json_object_get_member (o, "backing"), node_name, depth + 1);
  }
}

ShdShadowSample *
shd_shadow_sample_parse (JsonNode *reply, const char *node_name, gint64 time_us,
                         GError **error)
{
  g_autoptr (ShdShadowSample) s = g_new0 (ShdShadowSample, 1);
  g_autofree char *where = g_strdup_printf ("node '%s'", node_name);
  JsonObject *entry = find_node (reply, node_name, 0), *ds;
  JsonNode *n;
  JsonArray *children;

  if (entry == NULL) {
    g_set_error (error, SHD_COLLECTOR_ERROR, SHD_COLLECTOR_ERROR_NO_NODE,
                 "no node '%s' in query-blockstats", node_name);
    return NULL;
  }
  n = json_object_get_member (entry, "driver-specific");
  if (n == NULL || !JSON_NODE_HOLDS_OBJECT (n) ||
      g_strcmp0 (json_object_get_string_member_with_default (json_node_get_object (n),
                                                             "driver", NULL), "shadow") != 0) {
    g_set_error (error, SHD_COLLECTOR_ERROR, SHD_COLLECTOR_ERROR_NOT_SHADOW,
                 "node '%s' has no shadow statistics (is it a shadow node?)", node_name);
    return NULL;
  }
  ds = json_node_get_object (n);
  s->time_us = time_us;
  s->node_name = g_strdup (node_name);
  if (!get_str (ds, "active", where, &s->active, error) ||
      (json_object_has_member (ds, "metadata") &&
       !get_str (ds, "metadata", where, &s->metadata, error)) ||
      !get_counters (ds, where, &s->io, error))
    return NULL;
  n = json_object_get_member (ds, "children");
  if (n == NULL || !JSON_NODE_HOLDS_ARRAY (n)) {
    g_set_error (error, SHD_COLLECTOR_ERROR, SHD_COLLECTOR_ERROR_MALFORMED,
                 "%s: 'children' %s", where, n ? "is not an array" : "is missing");
    return NULL;
  }
  children = json_node_get_array (n);
  s->children = g_ptr_array_new_with_free_func ((GDestroyNotify) child_sample_free);
  for (guint i = 0; i < json_array_get_length (children); i++) {
    JsonNode *cn = json_array_get_element (children, i);
    g_autofree char *cwhere = g_strdup_printf ("node '%s' child %u", node_name, i);
    ShdChildSample *c;
    JsonObject *co;

    if (!JSON_NODE_HOLDS_OBJECT (cn)) {
      g_set_error (error, SHD_COLLECTOR_ERROR, SHD_COLLECTOR_ERROR_MALFORMED,
                   "%s is not an object", cwhere);
      return NULL;
    }
    co = json_node_get_object (cn);
    c = g_new0 (ShdChildSample, 1);
    g_ptr_array_add (s->children, c);
    if (!get_str (co, "node-name", cwhere, &c->node_name, error) ||
        !get_str (co, "state", cwhere, &c->state, error) ||
        !get_u64 (co, "valid-bytes", cwhere, &c->valid_bytes, error) ||
        !get_u64 (co, "failed-operations", cwhere, &c->failed_ops, error) ||
        !get_u64 (co, "copied-bytes", cwhere, &c->copied_bytes, error) ||
        (json_object_has_member (co, "compared-bytes") &&
         !get_u64 (co, "compared-bytes", cwhere, &c->compared_bytes, error)) ||
        !get_counters (co, cwhere, &c->io, error))
      return NULL;
  }
  return g_steal_pointer (&s);
}

const ShdChildSample *
shd_shadow_sample_child (const ShdShadowSample *s, const char *node_name)
{
  for (guint i = 0; i < s->children->len; i++) {
    const ShdChildSample *c = s->children->pdata[i];
    if (g_strcmp0 (c->node_name, node_name) == 0)
      return c;
  }
  return NULL;
}

/* ---- rates ---- */

static gboolean
counters_monotonic (const ShdIoCounters *a, const ShdIoCounters *b)
{
  return b->rd_ops >= a->rd_ops && b->rd_bytes >= a->rd_bytes &&
         b->rd_time_ns >= a->rd_time_ns && b->wr_ops >= a->wr_ops &&
         b->wr_bytes >= a->wr_bytes && b->wr_time_ns >= a->wr_time_ns &&
         b->flush_ops >= a->flush_ops;
}

static double
ratio (guint64 num, guint64 den, double scale)
{
  return den ? (double) num / den * scale : NAN;
}

static void
io_rates (const ShdIoCounters *a, const ShdIoCounters *b, double dt, ShdIoRates *r)
{
  guint64 drd = b->rd_ops - a->rd_ops, dwr = b->wr_ops - a->wr_ops;
  guint64 drt = b->rd_time_ns - a->rd_time_ns, dwt = b->wr_time_ns - a->wr_time_ns;

  r->read_iops = drd / dt;
  r->write_iops = dwr / dt;
  r->flush_iops = (b->flush_ops - a->flush_ops) / dt;
  r->read_bps = (b->rd_bytes - a->rd_bytes) / dt;
  r->write_bps = (b->wr_bytes - a->wr_bytes) / dt;
  r->read_latency_ms = ratio (drt, drd, 1e-6);
  r->write_latency_ms = ratio (dwt, dwr, 1e-6);
  r->latency_ms = ratio (drt + dwt, drd + dwr, 1e-6);
  /* Little's law: time spent in requests per unit of wall time. */
  r->queue_depth = (drt + dwt) * 1e-9 / dt;
}

static void
io_rates_invalid (ShdIoRates *r)
{
  r->read_iops = r->write_iops = r->flush_iops = NAN;
  r->read_bps = r->write_bps = NAN;
  r->read_latency_ms = r->write_latency_ms = r->latency_ms = NAN;
  r->queue_depth = NAN;
}

static void
child_rates_free (ShdChildRates *c)
{
  g_free (c->node_name);
  g_free (c->state);
  g_free (c);
}

void
shd_shadow_rates_free (ShdShadowRates *r)
{
  if (r == NULL)
    return;
  g_free (r->active);
  g_clear_pointer (&r->children, g_ptr_array_unref);
  g_free (r);
}

ShdShadowRates *
shd_shadow_rates_compute (const ShdShadowSample *prev, const ShdShadowSample *cur)
{
  ShdShadowRates *r = g_new0 (ShdShadowRates, 1);
  double dt = (cur->time_us - prev->time_us) / 1e6;

  r->interval_s = dt;
  r->active = g_strdup (cur->active);
  r->active_changed = g_strcmp0 (prev->active, cur->active) != 0;
  r->reset = !counters_monotonic (&prev->io, &cur->io);
  r->valid = dt > 0 && !r->reset;
  if (r->valid)
    io_rates (&prev->io, &cur->io, dt, &r->io);
  else
    io_rates_invalid (&r->io);
  r->children = g_ptr_array_new_with_free_func ((GDestroyNotify) child_rates_free);
  for (guint i = 0; i < cur->children->len; i++) {
    const ShdChildSample *c = cur->children->pdata[i];
    const ShdChildSample *p = shd_shadow_sample_child (prev, c->node_name);
    ShdChildRates *cr = g_new0 (ShdChildRates, 1);

    cr->node_name = g_strdup (c->node_name);
    cr->state = g_strdup (c->state);
    cr->valid_bytes = c->valid_bytes;
    if (p && !(counters_monotonic (&p->io, &c->io) && c->failed_ops >= p->failed_ops &&
               c->copied_bytes >= p->copied_bytes && c->compared_bytes >= p->compared_bytes))
      r->reset = TRUE;
    cr->valid = dt > 0 && p != NULL && !r->reset;
    if (cr->valid) {
      io_rates (&p->io, &c->io, dt, &cr->io);
      cr->failed_per_s = (c->failed_ops - p->failed_ops) / dt;
      /* the copy's progress: what it wrote and what it found identical */
      cr->copy_bps = (c->copied_bytes - p->copied_bytes +
                      c->compared_bytes - p->compared_bytes) / dt;
    } else {
      io_rates_invalid (&cr->io);
      cr->failed_per_s = cr->copy_bps = NAN;
    }
    g_ptr_array_add (r->children, cr);
  }
  /* A reset seen only on a child still means the whole node restarted. */
  if (r->reset && r->valid) {
    r->valid = FALSE;
    io_rates_invalid (&r->io);
    for (guint i = 0; i < r->children->len; i++) {
      ShdChildRates *cr = r->children->pdata[i];
      cr->valid = FALSE;
      io_rates_invalid (&cr->io);
      cr->failed_per_s = cr->copy_bps = NAN;
    }
  }
  return r;
}

const ShdChildRates *
shd_shadow_rates_child (const ShdShadowRates *r, const char *node_name)
{
  for (guint i = 0; i < r->children->len; i++) {
    const ShdChildRates *c = r->children->pdata[i];
    if (g_strcmp0 (c->node_name, node_name) == 0)
      return c;
  }
  return NULL;
}

/* ---- collector ---- */

struct _ShdCollector {
  char *node_name;
  ShdShadowSample *last;
};

ShdCollector *
shd_collector_new (const char *node_name)
{
  ShdCollector *c = g_new0 (ShdCollector, 1);

  c->node_name = g_strdup (node_name);
  return c;
}

void
shd_collector_free (ShdCollector *c)
{
  if (c == NULL)
    return;
  g_free (c->node_name);
  shd_shadow_sample_free (c->last);
  g_free (c);
}

void
shd_collector_reset (ShdCollector *c)
{
  g_clear_pointer (&c->last, shd_shadow_sample_free);
}

const ShdShadowSample *
shd_collector_last (const ShdCollector *c)
{
  return c->last;
}

ShdShadowRates *
shd_collector_push (ShdCollector *c, JsonNode *reply, gint64 time_us, GError **error)
{
  ShdShadowSample *s = shd_shadow_sample_parse (reply, c->node_name, time_us, error);
  ShdShadowRates *r = NULL;

  if (s == NULL)
    return NULL;
  if (c->last)
    r = shd_shadow_rates_compute (c->last, s);
  shd_shadow_sample_free (c->last);
  c->last = s;
  return r;
}
