"""Watches: standing yes/no questions on a camera, evaluated on each new prefix, delivered as events."""
