/* A number in a JSON report built with json-glib, null when not finite
 * (JSON has no NaN or infinity): the backtest's and the simulation's. */
#pragma once

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

void shd_json_builder_add_num (JsonBuilder *b, const char *member, double v);

G_END_DECLS
