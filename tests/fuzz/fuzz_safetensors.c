/* st_open on a .safetensors file written from the input; every tensor it accepts is then read
 * the ways the loaders read them (found by name, viewed in place, converted to f32), so an
 * accepted header that points outside the mapping shows up as an ASan report. */
#include "fuzz_util.h"
#include "safetensors.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[1024];
    if (!path[0]) fuzz_path(path, sizeof path, "", "model.safetensors");
    fuzz_write(path, data, size);
    st_file f;
    lp_err err;
    if (st_open(&f, path, &err) < 0) {
        FUZZ_CHECK(err.msg[0], "a failure without a message");
        return 0;
    }
    size_t total = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS, "tensor %d: ndim %d", i, t->ndim);
        FUZZ_CHECK(t->nbytes <= f.map_size, "tensor %d: %zu bytes in a %zu-byte file", i, t->nbytes,
                   f.map_size);
        total += t->nbytes;
        FUZZ_CHECK(st_find(&f, t->name) != NULL, "tensor '%s' not found by its name", t->name);
        /* Touch every byte: an out-of-range [begin, end) faults here under ASan or SEGV. */
        const unsigned char *p = t->data;
        unsigned sum = 0;
        for (size_t b = 0; b < t->nbytes; b++) sum += p[b];
        (void)sum;
        const float *v = st_f32_view(t);
        if (v && t->numel > 0) (void)v[t->numel - 1];
        if (t->numel >= 0 && (size_t)t->numel <= ((size_t)64 << 20)) {
            float *dst = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *dst);
            if (dst) {
                st_read_f32(t, dst, (size_t)t->numel, &err);
                free(dst);
            }
        }
    }
    FUZZ_CHECK(total <= f.map_size, "tensors of %zu bytes in a %zu-byte file", total, f.map_size);
    for (int i = 0; i < f.n_metadata; i++) {
        const char *v = st_metadata(&f, f.metadata_keys[i]);
        FUZZ_CHECK(v != NULL, "metadata key '%s' not found", f.metadata_keys[i]);
    }
    st_close(&f);
    return 0;
}
