/* Numbers in JSON reports; see jsonnum.h. */
#include "jsonnum.h"

#include <math.h>

void
shd_json_builder_add_num (JsonBuilder *b, const char *member, double v)
{
  json_builder_set_member_name (b, member);
  if (isfinite (v))
    json_builder_add_double_value (b, v);
  else
    json_builder_add_null_value (b);
}
