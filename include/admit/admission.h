/**
 * @file admit/admission.h
 * Placeholder: filled in by its own issue.
 */
#ifndef ADMIT_ADMISSION_H
#define ADMIT_ADMISSION_H
#include "common.h"
#endif
