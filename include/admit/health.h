/**
 * @file admit/health.h
 * Placeholder: filled in by its own issue.
 */
#ifndef ADMIT_HEALTH_H
#define ADMIT_HEALTH_H
#include "common.h"
#endif
