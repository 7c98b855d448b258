/* Step timing hooks, force-included (-include tvmq_profile.h) into model.c before its own empty defaults.
 *
 * Every TVMQ_STEP_BEGIN/END becomes one out-of-line call to tvmq_prof_mark(id); the harness turns the recorded
 * SysTick edges into instruction counts (see harness.c). Ids: 2*i for BEGIN(i), 2*i+1 for END(i).
 */
#ifndef TVMQ_PROFILE_H
#define TVMQ_PROFILE_H

#include <stdint.h>

#define TVMQ_MARK_START 0xFFFF0001u /* just before the model's run function */
#define TVMQ_MARK_END 0xFFFF0002u   /* just after it returns */
#define TVMQ_MARK_CAL 0xFFFF0003u   /* calibration of the measurement itself */

void tvmq_prof_mark(uint32_t id);

#define TVMQ_STEP_BEGIN(i) tvmq_prof_mark(2u * (uint32_t)(i))
#define TVMQ_STEP_END(i) tvmq_prof_mark(2u * (uint32_t)(i) + 1u)

#endif
