/* JSON helpers; see jsonutil.h. */
#include "jsonutil.h"

#include <math.h>

void
shd_json_set_num (JsonObject *o, const char *name, double v)
{
  if (isfinite (v))
    json_object_set_double_member (o, name, v);
  else
    json_object_set_null_member (o, name);
}

void
shd_json_set_str (JsonObject *o, const char *name, const char *v)
{
  if (v)
    json_object_set_string_member (o, name, v);
  else
    json_object_set_null_member (o, name);
}
