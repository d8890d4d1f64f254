from jaxpoint.core.storage import COMMIT_MARKER, Location, commit_protocol_for, is_tmp_name


def test_rename_commit_is_invisible_until_commit(tmp_path):
    final = Location.parse(tmp_path / "step")
    protocol = commit_protocol_for(final)
    work = protocol.begin(final)
    assert is_tmp_name(work.name)
    (work / "data").write_text("x")
    assert not protocol.is_committed(final)
    protocol.commit(work, final)
    assert protocol.is_committed(final)
    assert (final / COMMIT_MARKER).exists() and not work.exists()


def test_rename_commit_replaces_an_existing_checkpoint(tmp_path):
    final = Location.parse(tmp_path / "step")
    protocol = commit_protocol_for(final)
    for value in ("old", "new"):
        work = protocol.begin(final)
        (work / "data").write_text(value)
        protocol.commit(work, final)
    assert (final / "data").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step"]


def test_stale_tmp_folder_does_not_block_a_new_save(tmp_path):
    final = Location.parse(tmp_path / "step")
    protocol = commit_protocol_for(final)
    stale = protocol.begin(final)
    (stale / "leftover").write_text("killed mid-save")
    work = protocol.begin(final)
    assert work.list_names() == []


def test_marker_commit_on_object_store():
    final = Location.parse("memory://test-commit/step")
    protocol = commit_protocol_for(final)
    work = protocol.begin(final)
    assert work == final
    (work / "data").write_text("x")
    assert not protocol.is_committed(final)
    protocol.commit(work, final)
    assert protocol.is_committed(final)
