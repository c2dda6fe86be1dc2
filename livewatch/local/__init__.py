"""The local camera backend: the cameras, their memory and stores, and the engine in this process."""
