"""Which entries of a step folder are items: one rule for every layer that lists them."""

from __future__ import annotations

from jaxpoint.core.storage import Location
from jaxpoint.core.storage.step_layout import STEP_METADATA_FILE, is_item_name, item_folders


def test_item_folders_skip_metadata_markers_files_and_saves_in_flight(tmp_path):
    step = tmp_path / "step"
    for folder in ("state", "config", "_private", "extra.orbax-checkpoint-tmp-1"):
        (step / folder).mkdir(parents=True)
    for name in (STEP_METADATA_FILE, "_CHECKSUMS", "commit_success.txt", "notes.txt"):
        (step / name).write_text("{}")
    assert item_folders(Location.parse(step)) == ["config", "state"]
    assert not is_item_name("commit_success.txt") and not is_item_name("_METADATA")
    assert is_item_name("state")
