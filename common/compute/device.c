/* The device interface: the CPU device, opening a GPU by name, and memory accounting. Everything
 * else is the backend's (backend.h). */
#include "backend.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

device *device_cpu(void) {
    /* The CPU device holds no state that changes: its allocations are not counted here (a
     * process's resident memory says more), so one instance serves everyone. */
    static device cpu = {.be = &CPU_BACKEND, .description = "cpu"};
    return &cpu;
}

/* The CUDA backend is a module (libloraps_cuda.so) next to the program: loaded on the first
 * request for a GPU, so CPU processes never load the CUDA libraries. */
#define CUDA_MODULE "libloraps_cuda.so"

static int cuda_module_path(char *path, size_t size) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return -1;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = 0;
    snprintf(path, size, "%s/%s", exe, CUDA_MODULE);
    return 0;
}

int cuda_device_open(device **out, int index, lp_err *err) {
    if (!device_cuda_built())
        return lp_fail(err, "this build of loraps has no CUDA backend (rebuild where the CUDA "
                            "toolkit is installed, or with -DLORAPS_CUDA=ON to insist on it)");
    char path[4200];
    if (cuda_module_path(path, sizeof path) < 0 || access(path, F_OK) != 0)
        return lp_fail(err, "the CUDA backend %s is not next to this program", CUDA_MODULE);
    /* kept loaded for the process's life: devices and their contexts point into it */
    void *module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!module) return lp_fail(err, "the CUDA backend could not load: %s", dlerror());
    int (*open)(device **, int, lp_err *) =
        (int (*)(device **, int, lp_err *))dlsym(module, "loraps_cuda_device_open");
    if (!open) return lp_fail(err, "%s has no loraps_cuda_device_open", path);
    return open(out, index, err);
}

int device_cuda_built(void) {
#ifdef LORAPS_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

/* "cuda" means LOCAL_RANK's GPU where a launcher (torchrun, loraps run) set it, else GPU 0. */
static int cuda_index(const char *spec, int *index, lp_err *err) {
    const char *local = getenv("LOCAL_RANK");
    const char *digits = !strcmp(spec, "cuda") ? (local && *local ? local : "0") : spec + 5;
    char *end;
    long v = strtol(digits, &end, 10);
    if (!*digits || *end || v < 0 || v > 1023)
        return lp_fail(err, "device '%s': the GPU index must be a number in 0..1023%s", spec,
                       digits == local ? " (from LOCAL_RANK)" : "");
    *index = (int)v;
    return 0;
}

int device_open(device **out, const char *spec, lp_err *err) {
    if (!spec || !*spec || !strcmp(spec, "cpu")) {
        *out = device_cpu();
        return 0;
    }
    if (!strcmp(spec, "cuda") || !strncmp(spec, "cuda:", 5)) {
        int index = 0;
        if (cuda_index(spec, &index, err) < 0) return -1;
        return cuda_device_open(out, index, err);
    }
    return lp_fail(err, "unknown device '%s' (cpu, cuda or cuda:N)", spec);
}

void device_close(device *d) {
    if (d && d != device_cpu() && d->be->close) d->be->close(d);
}

int device_is_cpu(const device *d) {
    return d->be == &CPU_BACKEND;
}

const char *device_describe(const device *d) {
    return d->description;
}

void *device_alloc(device *d, size_t bytes, lp_err *err) {
    return d->be->alloc(d, bytes, err);
}

void device_free(device *d, void *p) {
    if (p) d->be->free(d, p);
}

int device_upload(device *d, void *dst, const void *host, size_t bytes, lp_err *err) {
    return d->be->upload(d, dst, host, bytes, err);
}

int device_download(device *d, void *host, const void *src, size_t bytes, lp_err *err) {
    return d->be->download(d, host, src, bytes, err);
}

void device_pin(device *d, void *host, size_t bytes) {
    if (d->be->host_register && host && bytes) d->be->host_register(d, host, bytes);
}

void device_unpin(device *d, void *host) {
    if (d->be->host_unregister && host) d->be->host_unregister(d, host);
}

size_t device_bytes_in_use(const device *d) {
    return d->in_use;
}

size_t device_peak_bytes(const device *d) {
    return d->peak;
}
