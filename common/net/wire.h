/* The wire: a message is one protobuf-c Header frame, then raw little-endian tensor frames, one
 * per Header.frames entry. Tensor frames go out zero-copy (zmq_msg_init_data) when they are
 * already in the wire dtype; a tensor bigger than the chunk limit travels in several frames.
 * Everything received is checked before it is trusted: frame counts and sizes here, the job,
 * step and membership rules in the server. */
#ifndef LORAPS_WIRE_H
#define LORAPS_WIRE_H

#include "error.h"
#include "loraps.pb-c.h"

#include <zmq.h>

#include <stddef.h>
#include <stdint.h>

#define WIRE_PROTOCOL         2u /* 2: joined tensor frames */
#define WIRE_MAX_HEADER_BYTES (1u << 20)
#define WIRE_CHUNK_ELEMS      ((size_t)1 << 23) /* 32 MiB of f32 per frame at most */
#define WIRE_MAX_FRAME_BYTES  (WIRE_CHUNK_ELEMS * 4)
/* ZMQ_MAXMSGSIZE: libzmq drops a peer that sends a larger frame before it is buffered. */
#define WIRE_ZMQ_MAXMSGSIZE    ((int64_t)WIRE_MAX_FRAME_BYTES + WIRE_MAX_HEADER_BYTES)
#define WIRE_MAX_FRAMES        65536
#define WIRE_MAX_ROUTING_BYTES 256

typedef struct wire_counters {
    uint64_t bytes_sent, bytes_received; /* header + tensor frames (not the routing id) */
    uint64_t msgs_sent, msgs_received;
} wire_counters;

/* A received message. The data of tensor frame i (hdr->frames[i]) is data[i], size[i] bytes,
 * inside one of the raw frames (parts) that follow the header. */
typedef struct wire_msg {
    unsigned char routing[WIRE_MAX_ROUTING_BYTES]; /* ROUTER sockets: the sender's id */
    size_t routing_len;
    Loraps__Header *hdr; /* NULL if the header did not parse */
    int n_frames;        /* tensor frames */
    const unsigned char **data;
    size_t *size;
    int n_parts; /* raw frames */
    zmq_msg_t *parts;
    size_t bytes; /* header + raw frames */
} wire_msg;

/* wire_recv results. */
enum { WIRE_OK = 0, WIRE_NONE = 1, WIRE_BAD = -1, WIRE_FATAL = -2 };

/* Receives one whole message without blocking. Returns WIRE_OK, WIRE_NONE (nothing waiting or
 * interrupted), WIRE_BAD (malformed; *code and err say why, m->routing is valid so an Error can
 * be sent back) or WIRE_FATAL (the socket is unusable). The caller frees with wire_msg_close
 * in every case. */
int wire_recv(void *sock, int is_router, wire_msg *m, wire_counters *c, Loraps__ErrorCode *code,
              lp_err *err);
void wire_msg_close(wire_msg *m);
/* Hands the raw frames, and with them every data[i], to the caller (who closes them with
 * wire_parts_close); the message keeps its header and its views. NULL if it has none. */
zmq_msg_t *wire_msg_take_parts(wire_msg *m, int *n_parts);
void wire_parts_close(zmq_msg_t *parts, int n_parts);

/* A tensor to send: elements [0, numel) of spec tensor `index`, at data in dtype src_dtype. */
typedef struct wire_src {
    uint32_t index;
    size_t numel;
    const void *data;
} wire_src;

/* Keeps zero-copy data alive while libzmq still holds it: ref(hint) is called once per frame
 * sent zero-copy and unref(data, hint) (from libzmq's I/O thread) once each frame is done. */
typedef struct wire_owner {
    void (*ref)(void *hint);
    void (*unref)(void *data, void *hint);
    void *hint;
} wire_owner;

/* Sends hdr (its frames list is filled in here) and the tensors, converted from src_dtype to
 * wire_dtype. Tensors that follow each other in memory share a raw frame (joined), up to
 * chunk_elems elements a frame; a tensor larger than that is cut. Data already in the wire
 * dtype goes zero-copy if owner is given (or if the caller guarantees it outlives the send:
 * owner NULL and zero_copy_unowned set); otherwise it is copied, all of it joined. routing: the
 * peer's id on a ROUTER socket, or NULL. chunk_elems 0 means WIRE_CHUNK_ELEMS. */
typedef struct wire_send_opts {
    const void *routing;
    size_t routing_len;
    Loraps__WireDtype src_dtype, wire_dtype;
    size_t chunk_elems;
    const wire_owner *owner;
    int zero_copy_unowned;
} wire_send_opts;

int wire_send(void *sock, Loraps__Header *hdr, const wire_src *src, int n, const wire_send_opts *o,
              wire_counters *c, lp_err *err);
/* A header-only message. */
int wire_send_header(void *sock, const void *routing, size_t routing_len, Loraps__Header *hdr,
                     wire_counters *c, lp_err *err);
int wire_send_error(void *sock, const void *routing, size_t routing_len, uint64_t job_id,
                    Loraps__ErrorCode code, const char *message, wire_counters *c);

size_t wire_dtype_size(Loraps__WireDtype d);
const char *wire_dtype_name(Loraps__WireDtype d);
int wire_dtype_parse(const char *name, Loraps__WireDtype *out); /* f32 | bf16 | f16 */
const char *wire_error_name(Loraps__ErrorCode c);

/* What a message must carry: tensors with the given spec indices and sizes, in this order, each
 * covered by contiguous chunks from offset 0, all in dtype `dtype`. */
typedef struct wire_expect {
    int n;
    const uint32_t *index;
    const size_t *numel;
    Loraps__WireDtype dtype;
} wire_expect;

/* A piece: frames covering some of the expected tensors, each whole, in the expectation's order
 * (each at most once). frame_pos (if not NULL, [n_frames]) gets each frame's tensor position in
 * the expectation; n_tensors how many tensors came. */
int wire_check_piece(const wire_msg *m, const wire_expect *e, int *frame_pos, int *n_tensors,
                     Loraps__ErrorCode *code, lp_err *err);
/* Checks the frame list against the expectation (every tensor, whole) and each frame's size. */
int wire_check_frames(const wire_msg *m, const wire_expect *e, Loraps__ErrorCode *code,
                      lp_err *err);
/* 1 if every element of every frame is finite (checked in the wire dtype, no conversion). */
int wire_frames_finite(const wire_msg *m);
/* For checked frames: dst[t] += alpha * tensor t (accumulate), or dst[t] = tensor t when
 * accumulate is 0; dst has one pointer per expected tensor. */
void wire_frames_apply(const wire_msg *m, const wire_expect *e, float *const *dst, float alpha,
                       int accumulate);

/* Socket options every loraps socket gets: MAXMSGSIZE, LINGER, and TCP keepalive. */
int wire_socket_setup(void *sock, int linger_ms, lp_err *err);

/* Monotonic milliseconds, and seconds; the calling thread's CPU seconds (what a piece of work
 * cost, whoever else ran meanwhile). */
int64_t wire_now_ms(void);
double wire_now_s(void);
double wire_cpu_s(void);

#endif
