"""Kernels: grid ray traversal in PyTorch (`raycast`) and its Triton twin on CUDA (`raycast_triton`)."""
