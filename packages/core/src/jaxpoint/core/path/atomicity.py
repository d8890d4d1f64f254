"""`ocp.path.atomicity`: how a save becomes visible (facade over `jaxpoint.core.storage.commit`).

jaxpoint picks the commit protocol from the storage's capabilities (rename where it is
atomic, the commit marker elsewhere); see docs/architecture.md.
"""

from jaxpoint.core.checkpointers.save_duration import record_saved_duration
from jaxpoint.core.storage.commit import COMMIT_MARKER as COMMIT_SUCCESS_FILE
from jaxpoint.core.storage.commit import TMP_SUFFIX as TMP_DIR_SUFFIX
from jaxpoint.core.storage.commit import CommitProtocol, commit_protocol_for

__all__ = ["COMMIT_SUCCESS_FILE", "CommitProtocol", "TMP_DIR_SUFFIX", "commit_protocol_for",
           "record_saved_duration"]
