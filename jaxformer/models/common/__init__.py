"""What every model family shares: the decoder skeleton, attention kernels (flash included), masks for
packing, prefix-LM and sliding windows, rotary embeddings, norms, layers and remat policies."""
