#include "baseline.h"
int crmq_baseline_version(void) { return 1; }
