"""The engine's scheduling: the pure scheduler, the one-step loop, the worker thread, its options, warm-up."""
