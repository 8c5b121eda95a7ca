#include "jobspec.h"

#include "wire.h"

#include <stdio.h>
#include <string.h>

/* The key's JobSpec field, if it has one whose type carries the key's: uint32 an int, uint64
 * the seed, float a float, bool a bool, string a string, and the WireDtype enum its name. */
static const ProtobufCFieldDescriptor *field_of(const job_key *k) {
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(&loraps__job_spec__descriptor, k->name);
    if (!f) return NULL;
    switch (f->type) {
    case PROTOBUF_C_TYPE_UINT32:
        return k->type == K_INT ? f : NULL;
    case PROTOBUF_C_TYPE_UINT64:
        return k->type == K_U64 ? f : NULL;
    case PROTOBUF_C_TYPE_FLOAT:
        return k->type == K_FLOAT ? f : NULL;
    case PROTOBUF_C_TYPE_BOOL:
        return k->type == K_BOOL ? f : NULL;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_ENUM:
        return k->type == K_STRING ? f : NULL;
    default:
        return NULL;
    }
}

int jobspec_unmapped_fields(const char **name) {
    int missing = 0;
    size_t n;
    const job_key *keys = job_keys(&n);
    for (unsigned i = 0; i < loraps__job_spec__descriptor.n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &loraps__job_spec__descriptor.fields[i];
        int mapped = 0;
        for (size_t k = 0; k < n && !mapped; k++) mapped = field_of(&keys[k]) == f;
        if (!mapped && missing++ == 0) *name = f->name;
    }
    return missing;
}

void jobspec_from_job(const job *j, Loraps__JobSpec *js) {
    loraps__job_spec__init(js);
    size_t n;
    const job_key *keys = job_keys(&n);
    for (size_t i = 0; i < n; i++) {
        const ProtobufCFieldDescriptor *f = field_of(&keys[i]);
        if (!f) continue;
        const char *from = (const char *)j + keys[i].offset;
        char *to = (char *)js + f->offset;
        switch (f->type) {
        case PROTOBUF_C_TYPE_UINT32:
            *(uint32_t *)to = (uint32_t) * (const int *)from;
            break;
        case PROTOBUF_C_TYPE_UINT64:
            *(uint64_t *)to = *(const unsigned long long *)from;
            break;
        case PROTOBUF_C_TYPE_FLOAT:
            *(float *)to = *(const float *)from;
            break;
        case PROTOBUF_C_TYPE_BOOL:
            *(protobuf_c_boolean *)to = *(const int *)from != 0;
            break;
        case PROTOBUF_C_TYPE_STRING:
            *(const char **)to = from;
            break;
        case PROTOBUF_C_TYPE_ENUM: /* the wire dtype: a name in the job, an enum on the wire */
            wire_dtype_parse(from, (Loraps__WireDtype *)to);
            break;
        default:
            break;
        }
    }
}

int jobspec_to_job(const Loraps__JobSpec *js, job *j, lp_err *err) {
    job_defaults(j);
    size_t n;
    const job_key *keys = job_keys(&n);
    for (size_t i = 0; i < n; i++) {
        const ProtobufCFieldDescriptor *f = field_of(&keys[i]);
        if (!f) continue;
        const char *from = (const char *)js + f->offset;
        char *to = (char *)j + keys[i].offset;
        switch (f->type) {
        case PROTOBUF_C_TYPE_UINT32:
            *(int *)to = (int)*(const uint32_t *)from;
            break;
        case PROTOBUF_C_TYPE_UINT64:
            *(unsigned long long *)to = *(const uint64_t *)from;
            break;
        case PROTOBUF_C_TYPE_FLOAT:
            *(float *)to = *(const float *)from;
            break;
        case PROTOBUF_C_TYPE_BOOL:
            *(int *)to = *(const protobuf_c_boolean *)from != 0;
            break;
        case PROTOBUF_C_TYPE_STRING: {
            const char *v = *(const char *const *)from;
            if (strlen(v ? v : "") >= keys[i].size)
                return lp_fail(err, "the server's job: %s is longer than %zu characters",
                               keys[i].name, keys[i].size - 1);
            snprintf(to, keys[i].size, "%s", v ? v : "");
            break;
        }
        case PROTOBUF_C_TYPE_ENUM:
            snprintf(to, keys[i].size, "%s", wire_dtype_name(*(const Loraps__WireDtype *)from));
            break;
        default:
            break;
        }
    }
    return job_validate(j, err) < 0 ? lp_wrap(err, "the server's job") : 0;
}
