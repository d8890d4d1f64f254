"""Test helpers shipped with jaxpoint.core (multi-process runs, virtual devices)."""
