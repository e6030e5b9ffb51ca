"""Plain-PyTorch references (fp32 math): test ground truth, benchmark baseline, CPU path."""
