"""The model engine: preprocessing, positions, vision and prefix caches, generation, the GPU worker."""
