"""Multihost: process roles, coordination-service barriers, broadcast, preemption.

Every function also works in a single process without `jax.distributed`, as a cheap no-op
where there is nothing to coordinate.
"""

from jaxpoint.core.multihost.agreement import agree_on_success
from jaxpoint.core.multihost.barrier import sync_global_processes
from jaxpoint.core.multihost.broadcast import broadcast_one_to_all, broadcast_one_to_some
from jaxpoint.core.multihost.host_local_arrays import (
    fully_replicated_host_local_array_to_global_array,
)
from jaxpoint.core.multihost.preemption import (
    PreemptionSource,
    SigtermPreemption,
    default_preemption_source,
    install_preemption_handler,
    reached_preemption,
)
from jaxpoint.core.multihost.processes import is_primary_host, process_count, process_index

__all__ = [
    "PreemptionSource",
    "SigtermPreemption",
    "agree_on_success",
    "broadcast_one_to_all",
    "broadcast_one_to_some",
    "fully_replicated_host_local_array_to_global_array",
    "default_preemption_source",
    "install_preemption_handler",
    "is_primary_host",
    "process_count",
    "process_index",
    "reached_preemption",
    "sync_global_processes",
]
