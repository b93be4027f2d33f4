/* Run-time version, so programs can detect a header/library mismatch. */
#include "internal.h"

#define ADMIT__STR2(x) #x
#define ADMIT__STR(x) ADMIT__STR2(x)

unsigned admit_version(void) { return ADMIT_VERSION_HEX; }

const char* admit_version_string(void) {
  return ADMIT__STR(ADMIT_VERSION_MAJOR) "." ADMIT__STR(
      ADMIT_VERSION_MINOR) "." ADMIT__STR(ADMIT_VERSION_PATCH);
}
