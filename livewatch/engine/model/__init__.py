"""Running the model: loading, generation, the fast path and Triton kernels, the packed prefill, the vision tower, watch evaluation, evidence ranking, the encoder."""
