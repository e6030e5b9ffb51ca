"""Triton fallbacks of the ssdk kernels (installed as ssdk.triton_kernels).

Each launcher has the out-variant signature of the matching torch.ops.ssdk schema. Math is fp32
(which also keeps Triton's CPU interpreter happy with bf16 inputs).
"""
