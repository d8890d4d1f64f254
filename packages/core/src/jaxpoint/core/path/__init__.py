"""`ocp.path`: Orbax's path namespaces, `step` (step folder names) and `atomicity` (commit)."""

from jaxpoint.core.path import atomicity, step

__all__ = ["atomicity", "step"]
