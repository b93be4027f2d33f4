/**
 * @file admit/redis.h
 * Placeholder: filled in by its own issue.
 */
#ifndef ADMIT_REDIS_H
#define ADMIT_REDIS_H
#include "common.h"
#endif
