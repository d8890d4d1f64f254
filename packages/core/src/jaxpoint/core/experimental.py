"""`ocp.experimental.emergency`: orbax's path to the emergency manager, served by
`jaxpoint.core.emergency`. A name only: no experimental code lives here.

Orbax users write `from orbax.checkpoint.experimental.emergency import checkpoint_manager`;
with the import swapped, Python looks up `jaxpoint.core.experimental.emergency` in
`sys.modules` once this module has loaded, so it is registered there as an alias of the
real package rather than copied into an `experimental/` tree.
"""

import sys

from jaxpoint.core import emergency

sys.modules[f"{__name__}.emergency"] = emergency

__all__ = ["emergency"]
