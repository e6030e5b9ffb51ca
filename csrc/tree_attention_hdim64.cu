// Tree attention kernels for head_dim 64 (fp16, bf16): see include/ssdk/tree_attention_kernel.cuh.
// Built only with the CUTLASS/CuTe headers (SSDK_HAS_CUTLASS); tree_attention.cu reports their absence.
#ifdef SSDK_HAS_CUTLASS
#include "ssdk/tree_attention_kernel.cuh"

namespace ssdk::tree_attn {
template cudaError_t launch<__half, 64>(const Params&, TileShape, cudaStream_t);
template cudaError_t launch<__nv_bfloat16, 64>(const Params&, TileShape, cudaStream_t);
template Occupancy occupancy<__half, 64>(TileShape);
template Occupancy occupancy<__nv_bfloat16, 64>(TileShape);
}  // namespace ssdk::tree_attn
#endif
