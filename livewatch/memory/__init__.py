"""Frame memory: importance scoring, star memory, the on-disk stream window."""
