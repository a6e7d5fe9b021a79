#ifndef CRABBITMQ_BASELINE_H
#define CRABBITMQ_BASELINE_H
int crmq_baseline_version(void);
#endif
