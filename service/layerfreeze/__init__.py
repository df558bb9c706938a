"""layerfreeze: freeze PyTorch checkpoints by rule, without ever executing them."""

__version__ = "0.1.0"
