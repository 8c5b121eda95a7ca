/* The job's settings on the wire: the server's job as Welcome's JobSpec, and back on the worker.
 * Both directions walk job.c's table of keys and find each key's JobSpec field by name through
 * protobuf-c's descriptor, so a new setting is a row in job.c and a field in loraps.proto. Keys
 * without a field (save_every, keep_checkpoints: the server's own) do not travel. */
#ifndef LORAPS_JOBSPEC_H
#define LORAPS_JOBSPEC_H

#include "error.h"
#include "job.h"
#include "loraps.pb-c.h"

/* js's strings point into j: j must outlive js. */
void jobspec_from_job(const job *j, Loraps__JobSpec *js);
/* j starts from the defaults; every JobSpec field with a key is copied, then validated. */
int jobspec_to_job(const Loraps__JobSpec *js, job *j, lp_err *err);

/* How many JobSpec fields no key carries (0 when the tables agree; *name: the first). */
int jobspec_unmapped_fields(const char **name);

#endif
