/**
 * @file admit.h
 * admit: rate limiting and admission control, in process or across a fleet
 * through Redis.
 *
 * This is the only header users include. It needs only `<stddef.h>` and
 * `<stdint.h>`; libuv and hiredis types appear as incomplete structs.
 */
#ifndef ADMIT_H
#define ADMIT_H

#include "admit/common.h"
#include "admit/limiter.h"
#include "admit/semaphore.h"
#include "admit/keyed.h"
#include "admit/redis.h"
#include "admit/breaker.h"
#include "admit/guard.h"
#include "admit/admission.h"
#include "admit/health.h"
#include "admit/notify.h"

#endif /* ADMIT_H */
