"""Building what the model reads: the prompt, M-RoPE positions, the prefix layout, preprocessing, the vision cache, detokenizing."""
