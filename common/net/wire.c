#include "wire.h"

#include "dtype.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the wire is little-endian and frames are sent as they lie in memory"
#endif

int64_t wire_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double wire_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double wire_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

size_t wire_dtype_size(Loraps__WireDtype d) {
    switch (d) {
    case LORAPS__WIRE_DTYPE__WIRE_F32:
        return 4;
    case LORAPS__WIRE_DTYPE__WIRE_BF16:
    case LORAPS__WIRE_DTYPE__WIRE_F16:
        return 2;
    default:
        return 0;
    }
}

const char *wire_dtype_name(Loraps__WireDtype d) {
    switch (d) {
    case LORAPS__WIRE_DTYPE__WIRE_F32:
        return "f32";
    case LORAPS__WIRE_DTYPE__WIRE_BF16:
        return "bf16";
    case LORAPS__WIRE_DTYPE__WIRE_F16:
        return "f16";
    default:
        return "?";
    }
}

int wire_dtype_parse(const char *name, Loraps__WireDtype *out) {
    if (!strcmp(name, "f32"))
        *out = LORAPS__WIRE_DTYPE__WIRE_F32;
    else if (!strcmp(name, "bf16"))
        *out = LORAPS__WIRE_DTYPE__WIRE_BF16;
    else if (!strcmp(name, "f16"))
        *out = LORAPS__WIRE_DTYPE__WIRE_F16;
    else
        return -1;
    return 0;
}

const char *wire_error_name(Loraps__ErrorCode c) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&loraps__error_code__descriptor, (int)c);
    return v ? v->name : "?";
}

int wire_socket_setup(void *sock, int linger_ms, lp_err *err) {
    int64_t maxmsg = WIRE_ZMQ_MAXMSGSIZE;
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0 ||
        zmq_setsockopt(sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms) < 0 ||
        zmq_setsockopt(sock, ZMQ_TCP_KEEPALIVE, &one, sizeof one) < 0)
        return lp_fail(err, "socket options: %s", zmq_strerror(zmq_errno()));
    return 0;
}

/* ---- receiving ---------------------------------------------------------------------------- */

void wire_parts_close(zmq_msg_t *parts, int n_parts) {
    for (int i = 0; i < n_parts; i++) zmq_msg_close(&parts[i]);
    free(parts);
}

void wire_msg_close(wire_msg *m) {
    if (m->hdr) loraps__header__free_unpacked(m->hdr, NULL);
    wire_parts_close(m->parts, m->n_parts);
    free(m->data); /* size lives in the same block */
    m->hdr = NULL;
    m->parts = NULL;
    m->data = NULL;
    m->size = NULL;
    m->n_parts = m->n_frames = 0;
}

zmq_msg_t *wire_msg_take_parts(wire_msg *m, int *n_parts) {
    zmq_msg_t *p = m->parts;
    *n_parts = m->n_parts;
    m->parts = NULL;
    m->n_parts = 0;
    return p;
}

/* Reads and throws away the rest of a multipart message. */
static void drain(void *sock, wire_counters *c) {
    int more = 1;
    size_t len = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, 0) < 0) {
            zmq_msg_close(&part);
            return;
        }
        if (c) c->bytes_received += zmq_msg_size(&part);
        zmq_msg_close(&part);
        len = sizeof more;
    }
}

static int has_more(void *sock) {
    int more = 0;
    size_t len = sizeof more;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len);
    return more;
}

/* The tensor frames' views into the raw frames: a raw frame holding one tensor frame is all of
 * it (its size is checked against the tensor's later); one holding several is cut by their
 * sizes, which must add up to it. */
static int split_parts(wire_msg *m, Loraps__ErrorCode *code, lp_err *err) {
    int declared = (int)m->hdr->n_frames;
    for (int i = 0, p = -1; i < declared;) {
        int end = i + 1;
        while (end < declared && m->hdr->frames[end]->joined) end++;
        p++;
        const unsigned char *base = zmq_msg_data(&m->parts[p]);
        size_t part_bytes = zmq_msg_size(&m->parts[p]);
        if (end == i + 1) {
            m->data[i] = base;
            m->size[i++] = part_bytes;
            continue;
        }
        size_t at = 0;
        for (; i < end; i++) {
            const Loraps__TensorFrame *f = m->hdr->frames[i];
            size_t esz = wire_dtype_size(f->dtype);
            if (!esz) {
                *code = LORAPS__ERROR_CODE__ERR_DTYPE;
                return lp_fail(err, "frame %d: unknown dtype %d", i, f->dtype);
            }
            if (f->numel > (part_bytes - at) / esz) {
                *code = LORAPS__ERROR_CODE__ERR_SHAPE;
                return lp_fail(err,
                               "frame %d: %llu elements past the end of raw frame %d (%zu bytes)",
                               i, (unsigned long long)f->numel, p, part_bytes);
            }
            m->data[i] = base + at;
            m->size[i] = f->numel * esz;
            at += m->size[i];
        }
        if (at != part_bytes) {
            *code = LORAPS__ERROR_CODE__ERR_SHAPE;
            return lp_fail(err, "raw frame %d holds %zu bytes, its tensor frames %zu", p,
                           part_bytes, at);
        }
    }
    m->n_frames = declared;
    return 0;
}

int wire_recv(void *sock, int is_router, wire_msg *m, wire_counters *c, Loraps__ErrorCode *code,
              lp_err *err) {
    memset(m, 0, sizeof *m);
    *code = LORAPS__ERROR_CODE__ERR_NONE;
    zmq_msg_t part;
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, sock, ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&part);
        if (e == EAGAIN || e == EINTR) return WIRE_NONE;
        lp_fail(err, "receive: %s", zmq_strerror(e));
        return WIRE_FATAL;
    }
    if (is_router) {
        size_t n = zmq_msg_size(&part);
        if (n > WIRE_MAX_ROUTING_BYTES) n = WIRE_MAX_ROUTING_BYTES; /* libzmq ids are <= 255 */
        memcpy(m->routing, zmq_msg_data(&part), n);
        m->routing_len = n;
        zmq_msg_close(&part);
        if (!has_more(sock)) {
            *code = LORAPS__ERROR_CODE__ERR_MALFORMED;
            lp_fail(err, "empty message");
            return WIRE_BAD;
        }
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, 0) < 0) {
            zmq_msg_close(&part);
            return WIRE_NONE;
        }
    }
    if (c) c->msgs_received++;
    size_t hlen = zmq_msg_size(&part);
    m->bytes = hlen;
    if (c) c->bytes_received += hlen;
    if (hlen > WIRE_MAX_HEADER_BYTES) {
        zmq_msg_close(&part);
        drain(sock, c);
        *code = LORAPS__ERROR_CODE__ERR_TOO_LARGE;
        lp_fail(err, "header of %zu bytes (limit %u)", hlen, WIRE_MAX_HEADER_BYTES);
        return WIRE_BAD;
    }
    m->hdr = loraps__header__unpack(NULL, hlen, zmq_msg_data(&part));
    zmq_msg_close(&part);
    if (!m->hdr) {
        drain(sock, c);
        *code = LORAPS__ERROR_CODE__ERR_MALFORMED;
        lp_fail(err, "header is not a loraps.Header protobuf (%zu bytes)", hlen);
        return WIRE_BAD;
    }
    size_t declared = m->hdr->n_frames, raw = 0;
    if (declared > WIRE_MAX_FRAMES) {
        drain(sock, c);
        *code = LORAPS__ERROR_CODE__ERR_TOO_LARGE;
        lp_fail(err, "%zu tensor frames declared (limit %d)", declared, WIRE_MAX_FRAMES);
        return WIRE_BAD;
    }
    for (size_t i = 0; i < declared; i++) raw += !m->hdr->frames[i]->joined;
    if (declared && m->hdr->frames[0]->joined) {
        drain(sock, c);
        *code = LORAPS__ERROR_CODE__ERR_MALFORMED;
        lp_fail(err, "the first tensor frame is joined to none");
        return WIRE_BAD;
    }
    if (declared) {
        m->parts = calloc(raw, sizeof *m->parts);
        m->data = malloc(declared * (sizeof *m->data + sizeof *m->size));
        if (!m->parts || !m->data) {
            drain(sock, c);
            *code = LORAPS__ERROR_CODE__ERR_TOO_LARGE;
            lp_fail(err, "out of memory for %zu frames", declared);
            return WIRE_BAD;
        }
        m->size = (size_t *)(void *)(m->data + declared);
    }
    while (has_more(sock)) {
        if ((size_t)m->n_parts == raw) {
            drain(sock, c);
            *code = LORAPS__ERROR_CODE__ERR_MALFORMED;
            lp_fail(err, "more raw frames than the %zu the header declares", raw);
            return WIRE_BAD;
        }
        zmq_msg_t *f = &m->parts[m->n_parts];
        zmq_msg_init(f);
        if (zmq_msg_recv(f, sock, 0) < 0) {
            zmq_msg_close(f);
            *code = LORAPS__ERROR_CODE__ERR_MALFORMED;
            lp_fail(err, "message cut short");
            return WIRE_BAD;
        }
        m->n_parts++;
        m->bytes += zmq_msg_size(f);
        if (c) c->bytes_received += zmq_msg_size(f);
    }
    if ((size_t)m->n_parts != raw) {
        *code = LORAPS__ERROR_CODE__ERR_MALFORMED;
        lp_fail(err, "header declares %zu raw frames, %d came", raw, m->n_parts);
        return WIRE_BAD;
    }
    if (split_parts(m, code, err) < 0) return WIRE_BAD;
    if (m->hdr->body_case == LORAPS__HEADER__BODY__NOT_SET) {
        *code = LORAPS__ERROR_CODE__ERR_MALFORMED;
        lp_fail(err, "header without a message body");
        return WIRE_BAD;
    }
    return WIRE_OK;
}

/* ---- sending ------------------------------------------------------------------------------ */

static void free_buffer(void *data, void *hint) {
    (void)hint;
    free(data);
}

static int send_part(void *sock, zmq_msg_t *msg, int more, wire_counters *c, lp_err *err) {
    size_t n = zmq_msg_size(msg);
    /* Never block: a peer that does not read (or a queue at its high-water mark) must not
     * stall a server's loop or a worker's heartbeat thread. libzmq checks the limit at the first
     * part only, so a multipart message goes whole or not at all. */
    if (zmq_msg_send(msg, sock, (more ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        zmq_msg_close(msg);
        return lp_fail(err, "send: %s", zmq_strerror(e));
    }
    if (c) c->bytes_sent += n;
    return 0;
}

static int send_routing(void *sock, const void *routing, size_t len, lp_err *err) {
    if (!routing) return 0;
    zmq_msg_t r;
    if (zmq_msg_init_size(&r, len) < 0) return lp_fail(err, "out of memory");
    memcpy(zmq_msg_data(&r), routing, len);
    return send_part(sock, &r, 1, NULL, err);
}

static int send_header_part(void *sock, Loraps__Header *hdr, int more, wire_counters *c,
                            lp_err *err) {
    hdr->protocol = WIRE_PROTOCOL;
    size_t n = loraps__header__get_packed_size(hdr);
    void *buf = malloc(n ? n : 1);
    if (!buf) return lp_fail(err, "out of memory");
    loraps__header__pack(hdr, buf);
    zmq_msg_t msg;
    if (zmq_msg_init_data(&msg, buf, n, free_buffer, NULL) < 0) {
        free(buf);
        return lp_fail(err, "out of memory");
    }
    if (c) c->msgs_sent++;
    return send_part(sock, &msg, more, c, err);
}

int wire_send_header(void *sock, const void *routing, size_t routing_len, Loraps__Header *hdr,
                     wire_counters *c, lp_err *err) {
    hdr->n_frames = 0;
    hdr->frames = NULL;
    if (send_routing(sock, routing, routing_len, err) < 0) return -1;
    return send_header_part(sock, hdr, 0, c, err);
}

int wire_send_error(void *sock, const void *routing, size_t routing_len, uint64_t job_id,
                    Loraps__ErrorCode code, const char *message, wire_counters *c) {
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    Loraps__Error e = LORAPS__ERROR__INIT;
    e.code = code;
    e.message = (char *)message;
    hdr.job_id = job_id;
    hdr.body_case = LORAPS__HEADER__BODY_ERROR;
    hdr.error = &e;
    return wire_send_header(sock, routing, routing_len, &hdr, c, NULL);
}

static int convert(const void *src, Loraps__WireDtype from, Loraps__WireDtype to, void *dst,
                   size_t n) {
    if (from == to) {
        memcpy(dst, src, n * wire_dtype_size(to));
        return 0;
    }
    if (from != LORAPS__WIRE_DTYPE__WIRE_F32) return -1;
    return dtype_from_f32(src, to == LORAPS__WIRE_DTYPE__WIRE_BF16 ? DT_BF16 : DT_F16, dst, n);
}

/* One tensor frame of a message to send: elements [off, off + len) of src[t]. */
typedef struct send_piece {
    int t;
    size_t off, len;
    int joined;
} send_piece;

/* Cuts the tensors into tensor frames and groups them into raw frames of at most `chunk`
 * elements; with zero-copy, only data that continues the raw frame in memory joins it. Returns
 * the number of pieces written to out (sized by max_pieces). */
static size_t plan_pieces(const wire_src *src, int n, size_t chunk, size_t ssz, int zero_copy,
                          send_piece *out) {
    size_t k = 0, room = 0;
    const char *end = NULL; /* where the open raw frame's data ends in memory */
    for (int t = 0; t < n; t++) {
        size_t off = 0;
        do {
            size_t remain = src[t].numel - off;
            const char *p = (const char *)src[t].data + off * ssz;
            int continues = !zero_copy || p == end || remain == 0;
            int joined = room > 0 && continues;
            if (!joined) room = chunk;
            size_t len = remain < room ? remain : room;
            out[k++] = (send_piece){t, off, len, joined};
            room -= len;
            if (len) end = p + len * ssz;
            off += len;
        } while (off < src[t].numel);
    }
    return k;
}

static size_t max_pieces(const wire_src *src, int n, size_t chunk) {
    size_t k = 0;
    for (int t = 0; t < n; t++) k += src[t].numel / chunk + 2;
    return k;
}

static int send_header_of_pieces(void *sock, Loraps__Header *hdr, const wire_src *src,
                                 const send_piece *pc, size_t n_pieces, const wire_send_opts *o,
                                 wire_counters *c, lp_err *err) {
    Loraps__TensorFrame *frames = calloc(n_pieces ? n_pieces : 1, sizeof *frames);
    Loraps__TensorFrame **fp = calloc(n_pieces ? n_pieces : 1, sizeof *fp);
    int rc = frames && fp ? 0 : lp_fail(err, "out of memory");
    for (size_t k = 0; rc == 0 && k < n_pieces; k++) {
        loraps__tensor_frame__init(&frames[k]);
        frames[k].index = src[pc[k].t].index;
        frames[k].dtype = o->wire_dtype;
        frames[k].offset = pc[k].off;
        frames[k].numel = pc[k].len;
        frames[k].joined = pc[k].joined;
        fp[k] = &frames[k];
    }
    hdr->n_frames = n_pieces;
    hdr->frames = fp;
    if (rc == 0) rc = send_routing(sock, o->routing, o->routing_len, err);
    if (rc == 0) rc = send_header_part(sock, hdr, n_pieces > 0, c, err);
    hdr->n_frames = 0;
    hdr->frames = NULL;
    free(frames);
    free(fp);
    return rc;
}

/* Raw frame [first, end) of the pieces: zero-copy from the source, or converted into a copy. */
static int make_part(zmq_msg_t *msg, const wire_src *src, const send_piece *pc, size_t first,
                     size_t end, const wire_send_opts *o, int zero_copy, lp_err *err) {
    size_t wsz = wire_dtype_size(o->wire_dtype), ssz = wire_dtype_size(o->src_dtype);
    size_t elems = 0;
    for (size_t k = first; k < end; k++) elems += pc[k].len;
    const char *start = (const char *)src[pc[first].t].data + pc[first].off * ssz;
    if (zero_copy) {
        if (o->owner && o->owner->ref) o->owner->ref(o->owner->hint);
        if (zmq_msg_init_data(msg, (void *)start, elems * wsz, o->owner ? o->owner->unref : NULL,
                              o->owner ? o->owner->hint : NULL) < 0) {
            if (o->owner) o->owner->unref((void *)start, o->owner->hint);
            return lp_fail(err, "out of memory");
        }
        return 0;
    }
    if (zmq_msg_init_size(msg, elems * wsz) < 0) return lp_fail(err, "out of memory");
    char *dst = zmq_msg_data(msg);
    for (size_t k = first; k < end; k++) {
        convert((const char *)src[pc[k].t].data + pc[k].off * ssz, o->src_dtype, o->wire_dtype, dst,
                pc[k].len);
        dst += pc[k].len * wsz;
    }
    return 0;
}

int wire_send(void *sock, Loraps__Header *hdr, const wire_src *src, int n, const wire_send_opts *o,
              wire_counters *c, lp_err *err) {
    size_t chunk = o->chunk_elems ? o->chunk_elems : WIRE_CHUNK_ELEMS;
    size_t wsz = wire_dtype_size(o->wire_dtype), ssz = wire_dtype_size(o->src_dtype);
    if (!wsz || !ssz) return lp_fail(err, "unknown wire dtype");
    if (o->src_dtype != o->wire_dtype && o->src_dtype != LORAPS__WIRE_DTYPE__WIRE_F32)
        return lp_fail(err, "can only convert from f32 for the wire");
    int zero_copy = o->src_dtype == o->wire_dtype && (o->owner || o->zero_copy_unowned);
    send_piece *pc = malloc(max_pieces(src, n, chunk) * sizeof *pc + 1);
    if (!pc) return lp_fail(err, "out of memory");
    size_t n_pieces = plan_pieces(src, n, chunk, ssz, zero_copy, pc);
    int rc = send_header_of_pieces(sock, hdr, src, pc, n_pieces, o, c, err);
    /* libzmq sends a multipart message whole or not at all, so a failure part-way leaves the
     * already queued parts unsent; the caller treats the peer as gone. */
    for (size_t k = 0; rc == 0 && k < n_pieces;) {
        size_t end = k + 1;
        while (end < n_pieces && pc[end].joined) end++;
        zmq_msg_t msg;
        rc = make_part(&msg, src, pc, k, end, o, zero_copy, err);
        if (rc == 0) rc = send_part(sock, &msg, end < n_pieces, c, err);
        k = end;
    }
    free(pc);
    return rc;
}

/* ---- checking and decoding ---------------------------------------------------------------- */

/* Frame i continues the open tensor t (covered of it so far), or starts the next expected tensor
 * at or after position *next. Returns the tensor's position, or -1 (code, err). */
static int frame_tensor(const Loraps__TensorFrame *f, int i, const wire_expect *e, int t,
                        size_t covered, int *next, Loraps__ErrorCode *code, lp_err *err) {
    *code = LORAPS__ERROR_CODE__ERR_SHAPE;
    if (t >= 0 && covered < e->numel[t]) {
        if (f->index != e->index[t] || f->offset != covered || f->numel == 0 ||
            f->numel > e->numel[t] - covered)
            return lp_fail(err,
                           "frame %d: elements [%llu, +%llu) of tensor %u where [%zu, %zu) of "
                           "tensor %u were expected",
                           i, (unsigned long long)f->offset, (unsigned long long)f->numel, f->index,
                           covered, e->numel[t], e->index[t]);
        return t;
    }
    int q = *next;
    while (q < e->n && e->index[q] < f->index) q++;
    if (q >= e->n || e->index[q] != f->index)
        return lp_fail(err,
                       "frame %d: tensor %u is not expected here (not this shard's, repeated, or "
                       "out of order)",
                       i, f->index);
    if (f->offset != 0 || f->numel > e->numel[q] || (f->numel == 0 && e->numel[q] != 0))
        return lp_fail(err, "frame %d: elements [%llu, +%llu) do not start tensor %u of %zu", i,
                       (unsigned long long)f->offset, (unsigned long long)f->numel, f->index,
                       e->numel[q]);
    *next = q + 1;
    return q;
}

int wire_check_piece(const wire_msg *m, const wire_expect *e, int *frame_pos, int *n_tensors,
                     Loraps__ErrorCode *code, lp_err *err) {
    size_t wsz = wire_dtype_size(e->dtype);
    int t = -1, next = 0, n = 0;
    size_t covered = 0; /* elements of tensor t covered so far */
    for (int i = 0; i < m->n_frames; i++) {
        const Loraps__TensorFrame *f = m->hdr->frames[i];
        if (f->dtype != e->dtype) {
            *code = LORAPS__ERROR_CODE__ERR_DTYPE;
            return lp_fail(err, "frame %d: dtype %s, the job's wire dtype is %s", i,
                           wire_dtype_name(f->dtype), wire_dtype_name(e->dtype));
        }
        int q = frame_tensor(f, i, e, t, covered, &next, code, err);
        if (q < 0) return -1;
        if (q != t) covered = 0, n++;
        t = q;
        if (m->size[i] != f->numel * wsz) {
            *code = LORAPS__ERROR_CODE__ERR_SHAPE;
            return lp_fail(err, "frame %d: %zu bytes for %llu %s elements", i, m->size[i],
                           (unsigned long long)f->numel, wire_dtype_name(f->dtype));
        }
        covered += f->numel;
        if (frame_pos) frame_pos[i] = t;
    }
    if (t >= 0 && covered < e->numel[t]) {
        *code = LORAPS__ERROR_CODE__ERR_SHAPE;
        return lp_fail(err, "tensor %u: %zu of its %zu elements came", e->index[t], covered,
                       e->numel[t]);
    }
    *n_tensors = n;
    return 0;
}

int wire_check_frames(const wire_msg *m, const wire_expect *e, Loraps__ErrorCode *code,
                      lp_err *err) {
    int n;
    if (wire_check_piece(m, e, NULL, &n, code, err) < 0) return -1;
    if (n != e->n) {
        *code = LORAPS__ERROR_CODE__ERR_SHAPE;
        return lp_fail(err, "%d of %d tensors came whole", n, e->n);
    }
    return 0;
}

/* Branch-free over each frame so the compiler vectorises it; frames from libzmq are malloc'd
 * (aligned), small ones may not be, and those take the memcpy path. */
int wire_frames_finite(const wire_msg *m) {
    for (int i = 0; i < m->n_frames; i++) {
        const unsigned char *p = m->data[i];
        size_t n = m->hdr->frames[i]->numel;
        unsigned bad = 0;
        switch (m->hdr->frames[i]->dtype) {
        case LORAPS__WIRE_DTYPE__WIRE_F32:
            if ((uintptr_t)p % 4 == 0) {
                const uint32_t *u = (const uint32_t *)(const void *)p;
                for (size_t j = 0; j < n; j++) bad |= (u[j] & 0x7f800000u) == 0x7f800000u;
            } else {
                for (size_t j = 0; j < n; j++) {
                    uint32_t u;
                    memcpy(&u, p + 4 * j, 4);
                    bad |= (u & 0x7f800000u) == 0x7f800000u;
                }
            }
            break;
        case LORAPS__WIRE_DTYPE__WIRE_BF16:
        case LORAPS__WIRE_DTYPE__WIRE_F16: {
            uint16_t mask =
                m->hdr->frames[i]->dtype == LORAPS__WIRE_DTYPE__WIRE_BF16 ? 0x7f80u : 0x7c00u;
            for (size_t j = 0; j < n; j++) {
                uint16_t u;
                memcpy(&u, p + 2 * j, 2);
                bad |= (u & mask) == mask;
            }
            break;
        }
        default:
            return 0;
        }
        if (bad) return 0;
    }
    return 1;
}

void wire_frames_apply(const wire_msg *m, const wire_expect *e, float *const *dst, float alpha,
                       int accumulate) {
    int t = -1;
    uint32_t cur = UINT32_MAX;
    (void)e;
    for (int i = 0; i < m->n_frames; i++) {
        const Loraps__TensorFrame *f = m->hdr->frames[i];
        if (f->offset == 0 || f->index != cur) {
            t++;
            cur = f->index;
        }
        float *restrict d = dst[t] + f->offset;
        const unsigned char *p = m->data[i];
        size_t n = f->numel;
        if (f->dtype == LORAPS__WIRE_DTYPE__WIRE_F32 && (uintptr_t)p % 4 == 0) {
            const float *restrict x = (const float *)(const void *)p;
            if (!accumulate)
                memcpy(d, x, n * sizeof(float));
            else if (alpha == 1.0f)
                for (size_t j = 0; j < n; j++) d[j] += x[j];
            else
                for (size_t j = 0; j < n; j++) d[j] += alpha * x[j];
            continue;
        }
        for (size_t j = 0; j < n; j++) {
            float x;
            if (f->dtype == LORAPS__WIRE_DTYPE__WIRE_F32) {
                memcpy(&x, p + 4 * j, 4);
            } else {
                uint16_t h;
                memcpy(&h, p + 2 * j, 2);
                x = f->dtype == LORAPS__WIRE_DTYPE__WIRE_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
            }
            d[j] = accumulate ? d[j] + alpha * x : x;
        }
    }
}
