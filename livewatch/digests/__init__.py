"""Digests: summaries of what the cameras saw, pushed on a schedule."""
