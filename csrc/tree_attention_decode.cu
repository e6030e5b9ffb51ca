// Tree attention's decode kernels (max_q_len == 1; fp16, bf16; head_dim 64, 128): see
// include/ssdk/tree_attention_decode.cuh. Built only with the CUTLASS/CuTe headers (SSDK_HAS_CUTLASS);
// tree_attention.cu reports their absence.
#ifdef SSDK_HAS_CUTLASS
#include "ssdk/tree_attention_decode.cuh"

namespace ssdk::tree_attn {
template cudaError_t launch_decode<__half, 64>(const DecodeParams&, cudaStream_t);
template cudaError_t launch_decode<__nv_bfloat16, 64>(const DecodeParams&, cudaStream_t);
template cudaError_t launch_decode<__half, 128>(const DecodeParams&, cudaStream_t);
template cudaError_t launch_decode<__nv_bfloat16, 128>(const DecodeParams&, cudaStream_t);
template int decode_ctas_per_sm<__half, 64>();
template int decode_ctas_per_sm<__nv_bfloat16, 64>();
template int decode_ctas_per_sm<__half, 128>();
template int decode_ctas_per_sm<__nv_bfloat16, 128>();
}  // namespace ssdk::tree_attn
#endif
