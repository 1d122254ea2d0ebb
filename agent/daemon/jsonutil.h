/* Small helpers for building JSON answers with json-glib. */
#pragma once

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* name: v, or null when v is not finite */
void shd_json_set_num (JsonObject *o, const char *name, double v);
/* name: v, or null when v is NULL */
void shd_json_set_str (JsonObject *o, const char *name, const char *v);

G_END_DECLS
