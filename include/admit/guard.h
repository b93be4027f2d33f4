/**
 * @file admit/guard.h
 * Placeholder: filled in by its own issue.
 */
#ifndef ADMIT_GUARD_H
#define ADMIT_GUARD_H
#include "common.h"
#endif
