/* Where compute runs: the CPU, or one CUDA GPU. A device owns its memory and what a backend
 * keeps per GPU (library handles); the ops run in a context on it (ops.h). Processes pick one
 * with --device cpu|cuda|cuda:N (LORAPS_DEVICE; a worker's GPU from LOCAL_RANK when set). */
#ifndef LORAPS_DEVICE_H
#define LORAPS_DEVICE_H

#include "error.h"

#include <stddef.h>

typedef struct device device;

/* The CPU: always there, and what a model is built on. */
device *device_cpu(void);
/* "cpu", "cuda" (GPU 0, or LOCAL_RANK's when it is set) or "cuda:N". A build without the CUDA
 * backend, or a machine without a usable GPU, is an error that says which. */
int device_open(device **out, const char *spec, lp_err *err);
void device_close(device *d); /* the CPU device is never closed */
int device_is_cpu(const device *d);
/* One line: "cpu (16 threads)", "cuda:0 (NVIDIA H200, 139.8 GiB, driver 13.0)". */
const char *device_describe(const device *d);
/* Whether this build has the CUDA backend. */
int device_cuda_built(void);

/* Device memory (host memory for the CPU), 256-byte aligned. */
void *device_alloc(device *d, size_t bytes, lp_err *err);
void device_free(device *d, void *p);
/* Synchronous copies, for loading weights and tests. */
int device_upload(device *d, void *dst, const void *host, size_t bytes, lp_err *err);
int device_download(device *d, void *host, const void *src, size_t bytes, lp_err *err);
/* Host memory copied to and from the device often (the adapters' arrays), page-locked while pinned
 * so those copies run at full speed. Nothing on the CPU. */
void device_pin(device *d, void *host, size_t bytes);
void device_unpin(device *d, void *host);
/* Bytes allocated now, and the most ever allocated at once (the allocator's high-water mark). */
size_t device_bytes_in_use(const device *d);
size_t device_peak_bytes(const device *d);

#endif
