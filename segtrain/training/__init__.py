"""Everything PyTorch-side of segtrain: the fit loop and its parts, checkpoints, evaluation of a checkpoint.

With segtrain.models, the only package whose modules may import torch at module level.
"""
