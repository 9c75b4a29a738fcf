// The scenarios (scenarios.c), each filling in its result.
#ifndef SCENARIOS_H
#define SCENARIOS_H

#include "soak.h"

void scenario_connections(result_t *r);
void scenario_cycles(result_t *r);
void scenario_emfile(result_t *r);
void scenario_slowloris(result_t *r);
void scenario_lineflood(result_t *r);
void scenario_cqoverflow(result_t *r);
void scenario_enobufs(result_t *r);

#endif
