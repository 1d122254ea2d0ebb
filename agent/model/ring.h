/* Fixed-capacity ring of doubles: the bounded per-disk history every
 * rolling statistic in the agent is built on. */
#pragma once

#include <glib.h>
#include <math.h>

typedef struct {
  double *v;
  guint cap;
  guint len;
  guint head;                   /* index of the oldest element */
} ShdRing;

static inline void
shd_ring_init (ShdRing *r, guint cap)
{
  g_assert (cap > 0);
  r->v = g_new0 (double, cap);
  r->cap = cap;
  r->len = 0;
  r->head = 0;
}

static inline void
shd_ring_clear (ShdRing *r)
{
  g_clear_pointer (&r->v, g_free);
  r->cap = r->len = r->head = 0;
}

static inline void
shd_ring_reset (ShdRing *r)
{
  r->len = 0;
  r->head = 0;
}

static inline gboolean
shd_ring_full (const ShdRing *r)
{
  return r->len == r->cap;
}

/* Appends x; returns the element it pushed out, or NAN when not full. */
static inline double
shd_ring_push (ShdRing *r, double x)
{
  double out = NAN;

  if (r->len < r->cap) {
    r->v[(r->head + r->len) % r->cap] = x;
    r->len++;
  } else {
    out = r->v[r->head];
    r->v[r->head] = x;
    r->head = (r->head + 1) % r->cap;
  }
  return out;
}

/* i = 0 is the oldest element. */
static inline double
shd_ring_get (const ShdRing *r, guint i)
{
  g_assert (i < r->len);
  return r->v[(r->head + i) % r->cap];
}

/* back = 0 is the newest element. */
static inline double
shd_ring_back (const ShdRing *r, guint back)
{
  g_assert (back < r->len);
  return r->v[(r->head + r->len - 1 - back) % r->cap];
}

/* Copies the contents, oldest first, into out (at least r->len long). */
static inline void
shd_ring_copy (const ShdRing *r, double *out)
{
  for (guint i = 0; i < r->len; i++)
    out[i] = r->v[(r->head + i) % r->cap];
}
