/* Where a worker's token sequences come from. Sequence number i is a pure function of the data
 * source and i, so a global batch split over N workers covers exactly the sequences one worker
 * would see. The embedded demo task today; datasets (issue 5) plug in here. */
#ifndef LORAPS_WORKER_DATA_H
#define LORAPS_WORKER_DATA_H

#include "error.h"
#include "job.h"

#include <stdint.h>

typedef struct worker_data worker_data;

int worker_data_open(worker_data **out, const job *j, int vocab_size, lp_err *err);
/* Sequences [first, first + n) of T tokens: inputs and targets of n*T each (target -1 = ignored).
 */
void worker_data_batch(worker_data *d, uint64_t first, int n, int T, int *inputs, int *targets);
const char *worker_data_name(const worker_data *d);
void worker_data_free(worker_data *d);

#endif
