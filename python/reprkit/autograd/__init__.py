"""torch.autograd.Function wrappers whose forward and backward are Rust kernels.

Imported lazily: importing reprkit never imports torch.
"""
