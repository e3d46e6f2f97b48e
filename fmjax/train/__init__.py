"""Training system: train state, parallel step, loop, checkpointing and metric writers."""
