/* The wire decoder, as the server runs it: the input is cut into the parts of one multipart
 * message, a DEALER sends them over inproc to a ROUTER, and wire_recv takes them apart (routing
 * id, header size limit, protobuf header, declared against received frame counts, a body).
 * What it accepts is then checked the way the server checks tensors (wire_check_frames against
 * a fixed adapter spec split over 2 shards, in the dtype of the first frame), and frames that
 * pass are applied into buffers of exactly the spec's sizes, so a check that lets a frame run
 * past its tensor is an ASan report. A rejected message gets its Error back, as the server
 * sends it, and the worker's side (DEALER, no routing id) receives that.
 *
 * Input: records of [u16 little-endian length][bytes]; the first is the header frame, the
 * others tensor frames (at most 64); a last record cut short takes what is left.
 * Welcome bodies also go through the worker's first steps: the JobSpec as a job (validated, its
 * LoRA config built over fixed modules) and the placement as a shard map. */
#include "fuzz_util.h"
#include "job.h"
#include "jobspec.h"
#include "lora_targets.h"
#include "shard_map.h"
#include "wire.h"

#include <stdlib.h>
#include <string.h>

#define MAX_PARTS 64
#define N_SHARDS  2

static void *ctx, *router, *dealer;
static lora_adapter adapter; /* the fixed spec: its tensors' sizes */
static lora_module modules[4];
static shard_map map;
static uint32_t idx[N_SHARDS][16];
static size_t numel[N_SHARDS][16];
static int n_idx[N_SHARDS];
static float *buf[16]; /* one per spec tensor, of its size */
static int verbose;    /* FUZZ_WIRE_VERBOSE=1: what each check said (for making seeds) */

static void setup(void) {
    lp_err err;
    verbose = getenv("FUZZ_WIRE_VERBOSE") != NULL;
    ctx = zmq_ctx_new();
    router = zmq_socket(ctx, ZMQ_ROUTER);
    dealer = zmq_socket(ctx, ZMQ_DEALER);
    if (!ctx || !router || !dealer || wire_socket_setup(router, 0, &err) < 0 ||
        wire_socket_setup(dealer, 0, &err) < 0 || zmq_bind(router, "inproc://fuzz-wire") < 0 ||
        zmq_connect(dealer, "inproc://fuzz-wire") < 0) {
        fprintf(stderr, "fuzz: sockets: %s\n", zmq_strerror(zmq_errno()));
        abort();
    }
    /* 2 layers of a tiny model, c_attn and c_proj adapted at r=2: 8 small tensors. */
    static const char *const names[4] = {"h.0.attn.c_attn", "h.0.attn.c_proj", "h.1.attn.c_attn",
                                         "h.1.attn.c_proj"};
    for (int i = 0; i < 4; i++) {
        snprintf(modules[i].name, sizeof modules[i].name, "%s", names[i]);
        modules[i].layer = i / 2;
        modules[i].in = 4;
        modules[i].out = i % 2 ? 4 : 12;
    }
    lora_config c;
    lora_config_defaults(&c);
    c.r = 2;
    if (lora_config_set_targets(&c, "c_attn,c_proj", &err) < 0 ||
        lora_adapter_build(&adapter, &c, modules, 4, &err) < 0) {
        fprintf(stderr, "fuzz: adapter: %s\n", err.msg);
        abort();
    }
    lora_config_free(&c);
    size_t bytes[16];
    for (int t = 0; t < adapter.n_tensors; t++) {
        bytes[t] = adapter.tensors[t].numel * 4;
        buf[t] = calloc(adapter.tensors[t].numel, sizeof(float));
    }
    if (shard_map_build(&map, bytes, adapter.n_tensors, N_SHARDS, &err) < 0) abort();
    for (int s = 0; s < N_SHARDS; s++) {
        n_idx[s] = shard_map_tensors(&map, s, idx[s]);
        for (int t = 0; t < n_idx[s]; t++) numel[s][t] = adapter.tensors[idx[s][t]].numel;
    }
}

/* What a worker does first with a Welcome (worker_setup_from_welcome), up to the model. */
static void take_welcome(const Loraps__Welcome *wel) {
    lp_err err;
    if (wel->job) {
        job j;
        lora_config lc;
        int ok = jobspec_to_job(wel->job, &j, &err) == 0 && job_lora_config(&j, &lc, &err) == 0;
        if (ok) {
            lora_adapter a;
            ok = lora_adapter_build(&a, &lc, modules, 4, &err) == 0;
            if (ok) lora_adapter_free(&a);
            lora_config_free(&lc);
        }
        if (verbose) fprintf(stderr, "fuzz_wire: Welcome job: %s\n", ok ? "usable" : err.msg);
    }
    if (wel->n_placement && wel->n_placement <= 4096 && wel->n_shards <= 64) {
        size_t *bytes = calloc(wel->n_placement, sizeof *bytes);
        for (size_t i = 0; bytes && i < wel->n_placement; i++)
            bytes[i] = i < wel->n_spec ? (size_t)(wel->spec[i]->rows * wel->spec[i]->cols) : 4;
        shard_map m;
        if (bytes && shard_map_from_placement(&m, wel->placement, wel->n_placement,
                                              (int)wel->n_shards, bytes, &err) == 0) {
            uint32_t *out = calloc(wel->n_placement, sizeof *out);
            for (uint32_t s = 0; out && s < wel->n_shards; s++) {
                int n = shard_map_tensors(&m, (int)s, out);
                FUZZ_CHECK(n >= 0 && (size_t)n <= wel->n_placement, "shard %u: %d tensors", s, n);
            }
            free(out);
            (void)shard_map_imbalance(&m);
            shard_map_free(&m);
        }
        free(bytes);
    }
}

/* The server's tensor checks against each shard's part of the spec. */
static void check_tensors(const wire_msg *m) {
    Loraps__WireDtype dt = LORAPS__WIRE_DTYPE__WIRE_F32;
    if (m->n_frames && wire_dtype_size(m->hdr->frames[0]->dtype)) dt = m->hdr->frames[0]->dtype;
    for (int s = 0; s < N_SHARDS; s++) {
        wire_expect e = {n_idx[s], idx[s], numel[s], dt};
        Loraps__ErrorCode code = LORAPS__ERROR_CODE__ERR_NONE;
        lp_err err;
        if (wire_check_frames(m, &e, &code, &err) < 0) {
            if (verbose) fprintf(stderr, "fuzz_wire: shard %d: %s\n", s, err.msg);
            FUZZ_CHECK(code != LORAPS__ERROR_CODE__ERR_NONE, "a frame check failed without a code");
            continue;
        }
        int finite = wire_frames_finite(m);
        if (verbose) fprintf(stderr, "fuzz_wire: shard %d: frames fit, finite %d\n", s, finite);
        float *dst[16];
        for (int t = 0; t < n_idx[s]; t++) dst[t] = buf[idx[s][t]];
        wire_frames_apply(m, &e, dst, 0.5f, 1);
        wire_frames_apply(m, &e, dst, 1.0f, 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ctx) setup();
    /* Cut the input into parts and send them as one message. */
    const uint8_t *part[MAX_PARTS];
    size_t len[MAX_PARTS];
    int n = 0;
    size_t at = 0;
    while (n < MAX_PARTS && (at < size || n == 0)) {
        size_t want = at + 2 <= size ? (size_t)(data[at] | data[at + 1] << 8) : 0;
        at = at + 2 <= size ? at + 2 : size;
        if (want > size - at) want = size - at;
        part[n] = data + at;
        len[n] = want;
        n++;
        at += want;
    }
    for (int i = 0; i < n; i++)
        if (zmq_send(dealer, len[i] ? (const void *)part[i] : (const void *)"", len[i],
                     i + 1 < n ? ZMQ_SNDMORE : 0) < 0) {
            fprintf(stderr, "fuzz: send: %s\n", zmq_strerror(zmq_errno()));
            abort();
        }
    zmq_pollitem_t it = {router, 0, ZMQ_POLLIN, 0};
    FUZZ_CHECK(zmq_poll(&it, 1, 1000) == 1, "the message did not arrive");

    wire_counters c = {0};
    wire_msg m;
    Loraps__ErrorCode code;
    lp_err err;
    int r = wire_recv(router, 1, &m, &c, &code, &err);
    if (verbose)
        fprintf(stderr, "fuzz_wire: %d parts: wire_recv %d%s%s, body %d\n", n, r,
                r == WIRE_BAD ? ": " : "", r == WIRE_BAD ? err.msg : "",
                m.hdr ? (int)m.hdr->body_case : -1);
    FUZZ_CHECK(r == WIRE_OK || r == WIRE_BAD, "wire_recv: %d", r);
    FUZZ_CHECK(m.routing_len > 0, "no routing id");
    if (r == WIRE_BAD) {
        FUZZ_CHECK(code != LORAPS__ERROR_CODE__ERR_NONE && err.msg[0], "bad without a reason");
        FUZZ_CHECK(wire_send_error(router, m.routing, m.routing_len, 1, code, err.msg, &c) == 0,
                   "Error reply not sent");
    } else {
        FUZZ_CHECK(m.hdr && (size_t)m.n_frames == m.hdr->n_frames, "%d frames, %zu declared",
                   m.n_frames, m.hdr ? m.hdr->n_frames : 0);
        for (int i = 0; i < m.n_frames; i++) {
            (void)wire_dtype_name(m.hdr->frames[i]->dtype);
            (void)wire_dtype_size(m.hdr->frames[i]->dtype);
        }
        check_tensors(&m);
        if (m.hdr->body_case == LORAPS__HEADER__BODY_WELCOME) take_welcome(m.hdr->welcome);
        if (m.hdr->body_case == LORAPS__HEADER__BODY_ERROR && m.hdr->error)
            (void)wire_error_name(m.hdr->error->code);
    }
    wire_msg_close(&m);
    /* Nothing may be left over from this message. */
    FUZZ_CHECK(wire_recv(router, 1, &m, &c, &code, &err) == WIRE_NONE, "parts left over");
    wire_msg_close(&m);
    /* The worker's side receives the Error reply. */
    if (r == WIRE_BAD) {
        it.socket = dealer;
        FUZZ_CHECK(zmq_poll(&it, 1, 1000) == 1, "the Error reply did not arrive");
        FUZZ_CHECK(wire_recv(dealer, 0, &m, &c, &code, &err) == WIRE_OK &&
                       m.hdr->body_case == LORAPS__HEADER__BODY_ERROR,
                   "the Error reply does not parse: %s", err.msg);
        wire_msg_close(&m);
    }
    return 0;
}
