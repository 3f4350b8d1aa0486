"""Triton kernels and their launchers, shipped inside the wheel as ``lam_fast._kernels``.

Only kernels and launchers live here (tensors in, tensors out; no autograd, no nn.Module). Importing
this package does not import triton: each kernel module does, and is imported by its op's
``triton.py`` backend loader on first use.
"""
