/* What the forecasting models share inside the model layer: the class
 * table every model fills in, and the instance header.  Not for other
 * layers: they use forecast.h. */
#pragma once

#include "forecast.h"
#include "ring.h"

G_BEGIN_DECLS

typedef struct {
  const char *name;
  void (*update) (ShdModel *m, double y);
  /* h >= 1 steps ahead; FALSE while the model cannot forecast */
  gboolean (*point) (const ShdModel *m, guint h, double *out);
  void (*finalize) (ShdModel *m);
} ShdModelClass;

struct _ShdModel {
  const ShdModelClass *klass;
  ShdRing resid;                /* one-step residuals, for the interval */
};

void shd_model_init (ShdModel *m, const ShdModelClass *klass);

static inline gboolean
shd_model_point (const ShdModel *m, guint h, double *out)
{
  return m->klass->point (m, h, out);
}

G_END_DECLS
