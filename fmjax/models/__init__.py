"""Pure flax.linen models: no I/O, hyper-parameters from the config."""
