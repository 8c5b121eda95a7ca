/* bad_client --server EP --model DIR --rank K --steps N: a member of a running job that, at each
 * of its first N steps, sends the server every kind of bad message (random bytes, truncated
 * protobuf, wrong protocol/job/worker, wrong shapes and dtypes, frame mismatches, oversized
 * headers and frames, future steps, NaN gradients, ...) and checks each gets the expected Error,
 * that the adapter it pulls before and after is byte-identical, and that a good push is still
 * accepted (and its repeat counted as a duplicate). Exits 0 if every check held. */
#include "dtype.h"
#include "model_load.h"
#include "model.h"
#include "wire.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *g_ctx;
static int g_failures, g_checks;
static uint64_t g_job, g_wid;
static Loraps__WireDtype g_dt;
static int g_n; /* tensors on the server */
static uint32_t g_idx[4096];
static size_t g_numel[4096];

static void check(int ok, const char *what) {
    g_checks++;
    if (!ok) {
        g_failures++;
        fprintf(stderr, "bad_client: FAILED: %s\n", what);
    }
}

/* Sends a header (already packed, possibly mangled) and raw frames. */
static void send_raw(void *sock, const void *hdr, size_t len, void **frames, size_t *lens, int n) {
    zmq_send(sock, hdr, len, n ? ZMQ_SNDMORE : 0);
    for (int i = 0; i < n; i++) zmq_send(sock, frames[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0);
}

static void send_hdr(void *sock, Loraps__Header *h, void **frames, size_t *lens, int n) {
    size_t len = loraps__header__get_packed_size(h);
    unsigned char *buf = malloc(len + 1);
    loraps__header__pack(h, buf);
    send_raw(sock, buf, len, frames, lens, n);
    free(buf);
}

/* The next message, or NULL after timeout_ms. */
static Loraps__Header *recv_hdr(void *sock, int timeout_ms, wire_msg *m) {
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    int64_t until = wire_now_ms() + timeout_ms;
    while (wire_now_ms() < until) {
        if (zmq_poll(&it, 1, 50) <= 0) continue;
        Loraps__ErrorCode code;
        lp_err err;
        if (wire_recv(sock, 0, m, NULL, &code, &err) == WIRE_OK) return m->hdr;
        wire_msg_close(m);
    }
    return NULL;
}

static void expect_error(void *sock, Loraps__ErrorCode want, const char *what) {
    wire_msg m;
    Loraps__Header *h = recv_hdr(sock, 5000, &m);
    char msg[512];
    if (!h) {
        snprintf(msg, sizeof msg, "%s: no reply", what);
        check(0, msg);
        return;
    }
    int ok = h->body_case == LORAPS__HEADER__BODY_ERROR && h->error->code == want;
    snprintf(msg, sizeof msg, "%s: expected %s, got %s %s", what, wire_error_name(want),
             h->body_case == LORAPS__HEADER__BODY_ERROR ? wire_error_name(h->error->code) : "a",
             h->body_case == LORAPS__HEADER__BODY_ERROR ? h->error->message : "non-error");
    check(ok, msg);
    if (ok) printf("  %-34s -> %s: %s\n", what, wire_error_name(want), h->error->message);
    wire_msg_close(&m);
}

static Loraps__Header base(void) {
    Loraps__Header h = LORAPS__HEADER__INIT;
    h.protocol = WIRE_PROTOCOL;
    h.job_id = g_job;
    return h;
}

/* A push of `frames` (built from the real tensors) with knobs for breaking it. */
typedef struct push_opts {
    uint64_t step, n_tokens;
    double loss;
    int kind;
    int nan_at;     /* element to poison, -1 none */
    int short_by;   /* elements missing from the first frame's data */
    int lie_numel;  /* declared numel of frame 0 off by this */
    int drop_frame; /* declare all, send one fewer */
    uint32_t adapter;
    Loraps__WireDtype dtype;
    int eval; /* attach a validation result: */
    double eval_loss;
    uint64_t eval_tokens, eval_seqs;
} push_opts;

static void send_push(void *sock, const push_opts *o) {
    Loraps__Header h = base();
    Loraps__Push p = LORAPS__PUSH__INIT;
    h.body_case = LORAPS__HEADER__BODY_PUSH;
    h.push = &p;
    p.worker_id = g_wid;
    p.step = o->step;
    p.base_version = o->step;
    p.n_tokens = o->n_tokens;
    p.loss_sum = o->loss;
    p.kind = o->kind;
    p.adapter_id = o->adapter;
    Loraps__EvalResult ev = LORAPS__EVAL_RESULT__INIT;
    if (o->eval) {
        ev.loss_sum = o->eval_loss;
        ev.n_tokens = o->eval_tokens;
        ev.n_sequences = o->eval_seqs;
        p.eval = &ev;
    }
    Loraps__TensorFrame tf[4096], *tfp[4096];
    void *frames[4096];
    size_t lens[4096];
    size_t esz = wire_dtype_size(o->dtype);
    for (int t = 0; t < g_n; t++) {
        loraps__tensor_frame__init(&tf[t]);
        tf[t].index = g_idx[t];
        tf[t].dtype = o->dtype;
        tf[t].numel = g_numel[t];
        tfp[t] = &tf[t];
        size_t n = g_numel[t];
        float *g = calloc(n, sizeof(float));
        for (size_t i = 0; i < n; i++) g[i] = 1e-3f * (float)((i % 7) - 3);
        if (t == 0 && o->nan_at >= 0) g[o->nan_at] = NAN;
        frames[t] = malloc(n * esz);
        if (o->dtype == LORAPS__WIRE_DTYPE__WIRE_F32)
            memcpy(frames[t], g, n * 4);
        else
            dtype_from_f32(g, o->dtype == LORAPS__WIRE_DTYPE__WIRE_BF16 ? DT_BF16 : DT_F16,
                           frames[t], n);
        lens[t] = n * esz;
        free(g);
    }
    tf[0].numel = (uint64_t)((int64_t)tf[0].numel + o->lie_numel);
    lens[0] -= (size_t)o->short_by * esz;
    h.n_frames = (size_t)g_n;
    h.frames = tfp;
    send_hdr(sock, &h, frames, lens, g_n - (o->drop_frame ? 1 : 0));
    for (int t = 0; t < g_n; t++) free(frames[t]);
}

static push_opts good_push(uint64_t step) {
    push_opts o = {step, 10, 20.0, LORAPS__UPDATE_KIND__UPDATE_GRADIENT, -1, 0, 0, 0, g_dt, 0, 0,
                   0,    0,  0};
    return o;
}

/* Pulls the adapter at `version`: the concatenated raw frames, and the version served. */
static unsigned char *pull(void *sock, uint64_t version, size_t *len, uint64_t *got) {
    Loraps__Header h = base();
    Loraps__Pull p = LORAPS__PULL__INIT;
    h.body_case = LORAPS__HEADER__BODY_PULL;
    h.pull = &p;
    p.worker_id = g_wid;
    p.version = version;
    p.step = version;
    send_hdr(sock, &h, NULL, NULL, 0);
    wire_msg m;
    Loraps__Header *r = recv_hdr(sock, 60000, &m);
    if (!r || r->body_case != LORAPS__HEADER__BODY_PARAMS) {
        check(0, "pull: no Params");
        if (r) wire_msg_close(&m);
        return NULL;
    }
    *got = r->params->version;
    size_t total = 0;
    for (int i = 0; i < m.n_frames; i++) total += m.size[i];
    unsigned char *buf = malloc(total + 1), *p2 = buf;
    for (int i = 0; i < m.n_frames; i++) {
        memcpy(p2, m.data[i], m.size[i]);
        p2 += m.size[i];
    }
    *len = total;
    wire_msg_close(&m);
    return buf;
}

static void expect_ack(void *sock, Loraps__AckStatus want, const char *what) {
    wire_msg m;
    Loraps__Header *h = recv_hdr(sock, 10000, &m);
    char msg[256];
    snprintf(msg, sizeof msg, "%s: expected Ack %d", what, want);
    check(h && h->body_case == LORAPS__HEADER__BODY_ACK && h->ack->status == want, msg);
    if (h) wire_msg_close(&m);
}

static void hello(void *sock, uint64_t fingerprint, uint32_t rank, const char *host) {
    Loraps__Header h = base();
    h.job_id = 0;
    Loraps__Hello he = LORAPS__HELLO__INIT;
    h.body_case = LORAPS__HEADER__BODY_HELLO;
    h.hello = &he;
    he.fingerprint = fingerprint;
    he.rank = rank;
    he.host = (char *)host;
    he.pid = (uint32_t)getpid();
    send_hdr(sock, &h, NULL, NULL, 0);
}

static void bad_messages(void *sock, uint64_t step, uint64_t fingerprint, int oversized,
                         const char *endpoint) {
    /* random bytes */
    unsigned char junk[100];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(rand() & 0xff);
    junk[0] = 0xff; /* an invalid field key: never a valid protobuf */
    send_raw(sock, junk, sizeof junk, NULL, NULL, 0);
    expect_error(sock, LORAPS__ERROR_CODE__ERR_MALFORMED, "random bytes");
    /* truncated protobuf: cut a valid Hello where it no longer parses */
    {
        Loraps__Header h = base();
        Loraps__Hello he = LORAPS__HELLO__INIT;
        h.body_case = LORAPS__HEADER__BODY_HELLO;
        h.hello = &he;
        he.host = "a-host-name-long-enough-to-cut";
        size_t len = loraps__header__get_packed_size(&h);
        unsigned char buf[256];
        loraps__header__pack(&h, buf);
        size_t cut = len - 5;
        Loraps__Header *u = loraps__header__unpack(NULL, cut, buf);
        check(u == NULL, "the truncated header should not parse");
        if (u) loraps__header__free_unpacked(u, NULL);
        send_raw(sock, buf, cut, NULL, NULL, 0);
        expect_error(sock, LORAPS__ERROR_CODE__ERR_MALFORMED, "truncated protobuf");
    }
    /* empty header frame: parses as an empty Header, which has no body */
    send_raw(sock, "", 0, NULL, NULL, 0);
    expect_error(sock, LORAPS__ERROR_CODE__ERR_MALFORMED, "empty message");
    /* wrong protocol version */
    {
        Loraps__Header h = base();
        Loraps__Heartbeat hb = LORAPS__HEARTBEAT__INIT;
        h.protocol = 99;
        h.body_case = LORAPS__HEADER__BODY_HEARTBEAT;
        h.heartbeat = &hb;
        hb.worker_id = g_wid;
        send_hdr(sock, &h, NULL, NULL, 0);
        expect_error(sock, LORAPS__ERROR_CODE__ERR_PROTOCOL, "protocol 99");
        h.protocol = WIRE_PROTOCOL;
        h.job_id = g_job ^ 0x5555;
        send_hdr(sock, &h, NULL, NULL, 0);
        expect_error(sock, LORAPS__ERROR_CODE__ERR_JOB, "wrong job id");
        h.job_id = g_job;
        hb.worker_id = g_wid + 1000;
        send_hdr(sock, &h, NULL, NULL, 0);
        expect_error(sock, LORAPS__ERROR_CODE__ERR_UNKNOWN_WORKER, "unknown worker id");
    }
    /* Hellos that must be refused (and must not replace our membership) */
    hello(sock, fingerprint ^ 1, 0, "bad");
    expect_error(sock, LORAPS__ERROR_CODE__ERR_FINGERPRINT, "wrong fingerprint");
    hello(sock, fingerprint, 9999, "bad");
    expect_error(sock, LORAPS__ERROR_CODE__ERR_BAD_RANK, "rank out of range");
    {
        size_t big = WIRE_MAX_HEADER_BYTES + 100;
        char *host = malloc(big);
        memset(host, 'h', big - 1);
        host[big - 1] = 0;
        hello(sock, fingerprint, 0, host);
        free(host);
        expect_error(sock, LORAPS__ERROR_CODE__ERR_TOO_LARGE, "header over 1 MiB");
    }
    {
        Loraps__Header h = base();
        Loraps__Welcome w = LORAPS__WELCOME__INIT;
        h.body_case = LORAPS__HEADER__BODY_WELCOME;
        h.welcome = &w;
        send_hdr(sock, &h, NULL, NULL, 0);
        expect_error(sock, LORAPS__ERROR_CODE__ERR_UNSUPPORTED, "Welcome sent to a server");
    }
    /* pushes */
    push_opts o = good_push(step);
    o.short_by = 1;
    send_push(sock, &o);
    expect_error(sock, LORAPS__ERROR_CODE__ERR_SHAPE, "frame shorter than declared");
    o = good_push(step);
    o.lie_numel = -1;
    o.short_by = 1;
    send_push(sock, &o);
    expect_error(sock, LORAPS__ERROR_CODE__ERR_SHAPE, "tensor of the wrong shape");
    o = good_push(step);
    o.dtype = g_dt == LORAPS__WIRE_DTYPE__WIRE_F32 ? LORAPS__WIRE_DTYPE__WIRE_BF16
                                                   : LORAPS__WIRE_DTYPE__WIRE_F32;
    send_push(sock, &o);
    expect_error(sock, LORAPS__ERROR_CODE__ERR_DTYPE, "wrong dtype");
    o = good_push(step);
    o.drop_frame = 1;
    send_push(sock, &o);
    expect_error(sock, LORAPS__ERROR_CODE__ERR_MALFORMED, "a declared frame missing");
    o = good_push(step + 5);
    send_push(sock, &o);
    expect_error(sock, LORAPS__ERROR_CODE__ERR_STEP, "push for a future step");
    o = good_push(step);
    o.nan_at = 3;
    send_push(sock, &o);
    expect_error(sock, LORAPS__ERROR_CODE__ERR_NONFINITE, "NaN in the gradient");
    o = good_push(step);
    o.loss = INFINITY;
    send_push(sock, &o);
    expect_error(sock, LORAPS__ERROR_CODE__ERR_NONFINITE, "infinite loss");
    o = good_push(step);
    o.n_tokens = 0;
    send_push(sock, &o);
    expect_error(sock, LORAPS__ERROR_CODE__ERR_MALFORMED, "zero tokens");
    /* validation results: the job (test_ps_bad_input.sh) validates every 2 steps */
    o = good_push(step);
    o.eval = 1, o.eval_loss = 10, o.eval_tokens = 4, o.eval_seqs = 1;
    if (step % 2) {
        send_push(sock, &o);
        expect_error(sock, LORAPS__ERROR_CODE__ERR_MALFORMED, "validation at a step without one");
    } else {
        o.eval_loss = NAN;
        send_push(sock, &o);
        expect_error(sock, LORAPS__ERROR_CODE__ERR_NONFINITE, "NaN validation loss");
        o.eval_loss = 10, o.eval_tokens = 0;
        send_push(sock, &o);
        expect_error(sock, LORAPS__ERROR_CODE__ERR_NONFINITE, "validation loss over no tokens");
        o.eval_tokens = 1000, o.eval_seqs = 2;
        send_push(sock, &o);
        expect_error(sock, LORAPS__ERROR_CODE__ERR_MALFORMED, "more validation tokens than fit");
    }
    o = good_push(step);
    o.adapter = 7;
    send_push(sock, &o);
    expect_error(sock, LORAPS__ERROR_CODE__ERR_UNSUPPORTED, "an adapter not in the job");
    o = good_push(step);
    o.kind = LORAPS__UPDATE_KIND__UPDATE_DELTA;
    send_push(sock, &o);
    expect_error(sock, LORAPS__ERROR_CODE__ERR_UNSUPPORTED, "delta update kind");
    {
        Loraps__Header h = base();
        Loraps__Heartbeat hb = LORAPS__HEARTBEAT__INIT;
        h.body_case = LORAPS__HEADER__BODY_HEARTBEAT;
        h.heartbeat = &hb;
        hb.worker_id = g_wid;
        Loraps__TensorFrame tf = LORAPS__TENSOR_FRAME__INIT, *tfp = &tf;
        tf.numel = 1;
        h.n_frames = 1;
        h.frames = &tfp;
        float x = 1;
        void *fr = &x;
        size_t l = 4;
        send_hdr(sock, &h, &fr, &l, 1);
        expect_error(sock, LORAPS__ERROR_CODE__ERR_MALFORMED, "tensor frames on a Heartbeat");
    }
    if (oversized) {
        /* A frame over ZMQ_MAXMSGSIZE: libzmq drops the connection before buffering it; no
         * reply is possible, and the server goes on. */
        void *s2 = zmq_socket(g_ctx, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(s2, ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(s2, endpoint);
        size_t big = (size_t)WIRE_ZMQ_MAXMSGSIZE + 4096;
        char *blob = calloc(1, big);
        Loraps__Header h = base();
        Loraps__Heartbeat hb = LORAPS__HEARTBEAT__INIT;
        h.body_case = LORAPS__HEADER__BODY_HEARTBEAT;
        h.heartbeat = &hb;
        hb.worker_id = g_wid;
        void *fr = blob;
        size_t l = big;
        send_hdr(s2, &h, &fr, &l, 1);
        wire_msg m;
        Loraps__Header *r = recv_hdr(s2, 1500, &m);
        check(r == NULL, "an oversized frame got a reply; it should have been dropped");
        if (r)
            wire_msg_close(&m);
        else
            printf("  %-34s -> dropped by ZMQ_MAXMSGSIZE\n", "frame over the size limit");
        free(blob);
        zmq_close(s2);
    }
}

int main(int argc, char **argv) {
    const char *endpoint = NULL, *model_dir = NULL;
    int rank = 1, steps = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--server"))
            endpoint = argv[i + 1];
        else if (!strcmp(argv[i], "--model"))
            model_dir = argv[i + 1];
        else if (!strcmp(argv[i], "--rank"))
            rank = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps"))
            steps = atoi(argv[i + 1]);
    }
    if (!endpoint || !model_dir) {
        fprintf(stderr, "usage: bad_client --server EP --model DIR [--rank K] [--steps N]\n");
        return 2;
    }
    srand(1234);
    model *mdl;
    lp_err err;
    if (model_load(&mdl, model_dir, &err) < 0) {
        fprintf(stderr, "bad_client: %s\n", err.msg);
        return 2;
    }
    uint64_t fingerprint = model_fingerprint(mdl);
    model_free(mdl);
    g_ctx = zmq_ctx_new();
    void *sock = zmq_socket(g_ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(sock, endpoint);

    hello(sock, fingerprint ^ 0xabc, (uint32_t)rank, "bad");
    expect_error(sock, LORAPS__ERROR_CODE__ERR_FINGERPRINT, "join with the wrong model");
    hello(sock, fingerprint, (uint32_t)rank, "bad-client");
    wire_msg m;
    Loraps__Header *h = recv_hdr(sock, 10000, &m);
    if (!h || h->body_case != LORAPS__HEADER__BODY_WELCOME) {
        fprintf(stderr, "bad_client: no Welcome\n");
        return 1;
    }
    g_job = h->job_id;
    g_wid = h->welcome->worker_id;
    g_dt = h->welcome->job->wire_dtype;
    for (size_t i = 0; i < h->welcome->n_spec && g_n < 4096; i++)
        if (h->welcome->placement[i] == h->welcome->shard) {
            g_idx[g_n] = (uint32_t)i;
            g_numel[g_n] = h->welcome->spec[i]->rows * h->welcome->spec[i]->cols;
            g_n++;
        }
    uint64_t step = h->welcome->start_step;
    wire_msg_close(&m);
    printf("bad_client: joined as worker %llu, %d tensors on this shard\n",
           (unsigned long long)g_wid, g_n);

    for (int s = 0; s < steps; s++, step++) {
        size_t len1, len2;
        uint64_t v1, v2;
        unsigned char *before = pull(sock, step, &len1, &v1);
        if (!before) break;
        step = v1;
        bad_messages(sock, step, fingerprint, s == 0, endpoint);
        unsigned char *after = pull(sock, step, &len2, &v2);
        check(after && v2 == v1 && len1 == len2 && !memcmp(before, after, len1),
              "the adapter changed after bad messages");
        if (after && v2 == v1 && len1 == len2 && !memcmp(before, after, len1))
            printf("bad_client: step %llu: adapter unchanged after the bad messages (%zu bytes)\n",
                   (unsigned long long)step, len1);
        free(before);
        free(after);
        push_opts o = good_push(step);
        send_push(sock, &o);
        expect_ack(sock, LORAPS__ACK_STATUS__ACK_ACCEPTED, "a good push");
        send_push(sock, &o);
        expect_ack(sock, LORAPS__ACK_STATUS__ACK_DUPLICATE, "the same push again");
    }
    /* A push for a step that is over. */
    push_opts o = good_push(0);
    send_push(sock, &o);
    wire_msg a;
    Loraps__Header *r = recv_hdr(sock, 5000, &a);
    check(r && r->body_case == LORAPS__HEADER__BODY_ACK &&
              (r->ack->status == LORAPS__ACK_STATUS__ACK_DUPLICATE ||
               r->ack->status == LORAPS__ACK_STATUS__ACK_STALE),
          "an old push is dropped (duplicate or stale)");
    if (r) wire_msg_close(&a);
    Loraps__Header bye = base();
    Loraps__Bye b = LORAPS__BYE__INIT;
    bye.body_case = LORAPS__HEADER__BODY_BYE;
    bye.bye = &b;
    b.worker_id = g_wid;
    send_hdr(sock, &bye, NULL, NULL, 0);
    usleep(100000);
    zmq_close(sock);
    zmq_ctx_term(g_ctx);
    printf("bad_client: %d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
