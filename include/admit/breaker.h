/**
 * @file admit/breaker.h
 * Placeholder: filled in by its own issue.
 */
#ifndef ADMIT_BREAKER_H
#define ADMIT_BREAKER_H
#include "common.h"
#endif
