"""The network face of the daemon: the WebSocket protocol, its connection handler, HTTP health and metrics."""
