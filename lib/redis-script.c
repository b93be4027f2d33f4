/* The embedded Lua scripts and their SHA-1 names. */
#include "redis-script.h"

#include <pthread.h>
#include <string.h>

/* The generated table is linked in only when the build generated it; a
 * build that compiles the lib sources directly (the fuzzers) has no
 * scripts, and
 * admit_redis_new() then reports ADMIT_ECONFIG. */
#if defined(__has_include)
#if __has_include("redis-lua.h")
#include "redis-lua.h"
#endif
#endif

static const char* const script_names[ADMIT__SCRIPT_COUNT] = {"limit", "sem",
                                                              "beat"};
static admit__script_t scripts[ADMIT__SCRIPT_COUNT];
static int scripts_ok;
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static void scripts_init(void) {
#ifdef ADMIT__HAVE_LUA
  if (admit__script_nsrcs != ADMIT__SCRIPT_COUNT) return;
  for (int i = 0; i < ADMIT__SCRIPT_COUNT; i++) {
    const admit__script_src_t* s = &admit__script_srcs[i];
    if (strcmp(s->name, script_names[i]) != 0) return;
    scripts[i].text = s->text;
    scripts[i].len = s->len;
    admit__sha1_hex(s->text, s->len, scripts[i].sha);
  }
  scripts_ok = 1;
#else
  (void)script_names;
#endif
}

const admit__script_t* admit__scripts(void) {
  pthread_once(&scripts_once, scripts_init);
  return scripts_ok ? scripts : NULL;
}
