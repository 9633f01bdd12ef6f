"""Layer 1: the decoder (Flax NNX), attention kernels, losses and sampling."""
