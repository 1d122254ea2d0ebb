/* Whether a disk should move to one tier for good (shadowctl move): the
 * policy never does that itself, it recommends it.
 *
 * A disk that spent at least SHD_RECOMMEND_SHARE of the window on one
 * tier, over at least SHD_RECOMMEND_MIN_S of measured time, is better
 * served there for good: the other copies it keeps (the disk's own image
 * at least) cost without serving.  Pure: the shares come from the
 * history (daemon), the costs from the configuration. */
#pragma once

#include "policy.h"

G_BEGIN_DECLS

#define SHD_RECOMMEND_SHARE 0.9
#define SHD_RECOMMEND_MIN_S (24 * 3600.0)

typedef struct {
  gboolean recommended;
  int tier;                     /* the tier most of the time; -1: no data */
  double share;                 /* of the measured time on it */
  double measured_s;            /* time with samples in the window */
  double others_cost_month;     /* what the other tiers' copies cost a month,
                                   per GiB of disk */
  char reason[256];
} ShdRecommendation;

/* seconds[i]: time tier i served in the window; n the tiers of cfg;
 * moved_to: the tier the disk moved to for good (nothing to recommend;
 * out names that tier, whatever served most of the window), or -1. */
void shd_recommend (const ShdPolicyConfig *cfg, const double *seconds, guint n,
                    int moved_to, ShdRecommendation *out);

G_END_DECLS
