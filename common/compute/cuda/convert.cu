/* Moving data: f32 <-> bf16 activations, copies, and sums reduced on the GPU. */
#include "cuda.cuh"

__global__ void f32_to_bf16_kernel(bf16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void bf16_to_f32_kernel(float *dst, const bf16 *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

void cuda_f32_to_bf16(const ops_ctx *c, bf16 *dst, const float *src, size_t n) {
    if (!n) return;
    f32_to_bf16_kernel<<<blocks_for(n, 256), 256, 0, stream_of(c)>>>(dst, src, n);
    cuda_check_launch(c, "f32_to_bf16");
}

void cuda_bf16_to_f32(const ops_ctx *c, float *dst, const bf16 *src, size_t n) {
    if (!n) return;
    bf16_to_f32_kernel<<<blocks_for(n, 256), 256, 0, stream_of(c)>>>(dst, src, n);
    cuda_check_launch(c, "bf16_to_f32");
}

void cuda_act_from_device_f32(ops_ctx *c, act *dst, const float *src, size_t n) {
    cuda_f32_to_bf16(c, AS(dst), src, n);
}

/* Through a temporary f32 buffer on the device (tests and set-up only, never the step loop). */
void cuda_act_from_f32(ops_ctx *c, act *dst, const float *host, size_t n) {
    if (!n) return;
    float *tmp = NULL;
    cudaError_t e = cudaMallocAsync((void **)&tmp, n * sizeof(float), stream_of(c));
    if (e != cudaSuccess) return cuda_note(c, e, "staging f32 values");
    cuda_note(c,
              cudaMemcpyAsync(tmp, host, n * sizeof(float), cudaMemcpyHostToDevice, stream_of(c)),
              "copy to the GPU");
    cuda_f32_to_bf16(c, AS(dst), tmp, n);
    cuda_note(c, cudaFreeAsync(tmp, stream_of(c)), "staging f32 values");
}

void cuda_act_to_f32(ops_ctx *c, float *host, const act *src, size_t n) {
    if (!n) return;
    float *tmp = NULL;
    cudaError_t e = cudaMallocAsync((void **)&tmp, n * sizeof(float), stream_of(c));
    if (e != cudaSuccess) return cuda_note(c, e, "staging f32 values");
    cuda_bf16_to_f32(c, tmp, CAS(src), n);
    cuda_note(c,
              cudaMemcpyAsync(host, tmp, n * sizeof(float), cudaMemcpyDeviceToHost, stream_of(c)),
              "copy from the GPU");
    cuda_note(c, cudaFreeAsync(tmp, stream_of(c)), "staging f32 values");
    cuda_note(c, cudaStreamSynchronize(stream_of(c)), "copy from the GPU");
}

void cuda_copy_act(ops_ctx *c, act *dst, const act *src, size_t n) {
    if (n && (const void *)dst != (const void *)src)
        cuda_note(
            c, cudaMemcpyAsync(dst, src, n * sizeof(bf16), cudaMemcpyDeviceToDevice, stream_of(c)),
            "copy on the GPU");
}

/* ---- sums: per-block partial sums in double, added into one double ----------------------------
 */

template <int SQUARES> __global__ void sum_kernel(double *out, const float *x, size_t n) {
    __shared__ double partial[32];
    double s = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        double v = x[i];
        s += SQUARES ? v * v : v;
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) partial[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < (int)(blockDim.x / 32) ? partial[lane] : 0;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) atomicAdd(out, s);
    }
}

template <int SQUARES> static double reduce(ops_ctx *c, const float *x, size_t n) {
    cuda_ctx *k = cx(c);
    double result = 0;
    cuda_note(c, cudaMemsetAsync(k->reduce, 0, sizeof(double), k->stream), "a sum on the GPU");
    if (n) {
        unsigned blocks = blocks_for(n, 256);
        if (blocks > 1024) blocks = 1024;
        sum_kernel<SQUARES><<<blocks, 256, 0, k->stream>>>(k->reduce, x, n);
        cuda_check_launch(c, "sum");
    }
    cuda_note(
        c, cudaMemcpyAsync(&result, k->reduce, sizeof(double), cudaMemcpyDeviceToHost, k->stream),
        "a sum on the GPU");
    cuda_note(c, cudaStreamSynchronize(k->stream), "a sum on the GPU");
    return result;
}

double cuda_sum_f32(ops_ctx *c, const float *x, size_t n) {
    return reduce<0>(c, x, n);
}

double cuda_sum_squares_f32(ops_ctx *c, const float *x, size_t n) {
    return reduce<1>(c, x, n);
}
