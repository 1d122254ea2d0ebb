/* Deterministic synthetic series for the agent's unit tests. */
#pragma once

#include <glib.h>
#include <math.h>

/* Standard normal draw by Box-Muller; reproducible for a seeded GRand. */
static inline double
synth_gauss (GRand *r)
{
  double u1 = g_rand_double (r), u2 = g_rand_double (r);

  if (u1 < 1e-300)
    u1 = 1e-300;
  return sqrt (-2 * log (u1)) * cos (2 * G_PI * u2);
}

static inline const char *
synth_trace_dir (void)
{
  const char *d = g_getenv ("SHD_TRACE_DIR");

  return d ? d : "../shared/data/traces";
}
