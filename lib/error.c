/* Error names and messages, generated from ADMIT_ERRNO_MAP. */
#include "internal.h"

const char* admit_strerror(int err) {
  switch (err) {
    case ADMIT_OK:
      return "success";
#define ADMIT__ERRNO_MSG(name, value, msg) \
  case ADMIT_##name:                       \
    return msg;
    ADMIT_ERRNO_MAP(ADMIT__ERRNO_MSG)
#undef ADMIT__ERRNO_MSG
  }
  return "unknown error";
}

const char* admit_err_name(int err) {
  switch (err) {
    case ADMIT_OK:
      return "ADMIT_OK";
#define ADMIT__ERRNO_NAME(name, value, msg) \
  case ADMIT_##name:                        \
    return "ADMIT_" #name;
    ADMIT_ERRNO_MAP(ADMIT__ERRNO_NAME)
#undef ADMIT__ERRNO_NAME
  }
  return "ADMIT_UNKNOWN";
}
