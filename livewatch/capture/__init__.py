"""Live camera capture through PyAV: sources, sampling, reconnect policy, the reader thread."""
