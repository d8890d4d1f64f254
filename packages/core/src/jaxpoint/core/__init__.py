"""jaxpoint.core: fast, atomic, Orbax-compatible checkpointing for JAX."""
