/* baatt_version: the version this library was built as, from the header's BAATT_VERSION_*. */
#include "baatt.h"

#define BAATT_STR_(x) #x
#define BAATT_STR(x) BAATT_STR_(x)

const char *baatt_version(void)
{
    return BAATT_STR(BAATT_VERSION_MAJOR) "." BAATT_STR(BAATT_VERSION_MINOR) "." BAATT_STR(BAATT_VERSION_PATCH);
}
