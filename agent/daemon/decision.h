/* A decision of the policy (policy.h) as the daemon reports it: as JSON
 * for the control socket and the history, and as a journal entry with its
 * numbers in fields (SHADOWD_LOAD, SHADOWD_FORECAST, ...). */
#pragma once

#include "policy.h"

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* NaN and infinities become null. */
JsonNode *shd_decision_to_json (const ShdDecision *d, const ShdPolicy *p, gint64 wall_ms);
/* from and to: tier names or NULL. */
void shd_decision_log (const char *disk, const ShdDecision *d, const char *from,
                       const char *to);

G_END_DECLS
