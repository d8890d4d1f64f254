import os

import pytest
from jaxpoint.core.errors import InvalidNameError, StorageError
from jaxpoint.core.storage import Location


def test_relative_path_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    location = Location.parse("ckpt/step")
    assert location.path == os.path.join(str(tmp_path), "ckpt", "step")
    assert location.is_local and location.has_atomic_rename


@pytest.mark.parametrize("name", ["..", ".", "a/b", "", "x\x00y", "a\\b"])
def test_names_that_escape_are_rejected(tmp_path, name):
    with pytest.raises(InvalidNameError, match="single path component"):
        Location.parse(tmp_path) / name


def test_url_components_that_escape_are_rejected():
    with pytest.raises(InvalidNameError, match="single path component"):
        Location.parse("memory://bucket/a/../b")


def test_unknown_scheme_is_rejected():
    with pytest.raises(InvalidNameError, match="Unsupported storage URL"):
        Location.parse("ftp://host/path")


def test_bucket_is_required():
    with pytest.raises(InvalidNameError, match="name the bucket"):
        Location.parse("gs:///path")


@pytest.mark.parametrize("root", ["local", "memory"])
def test_files_and_folders(tmp_path, root):
    base = Location.parse(tmp_path / "root" if root == "local" else "memory://test-files/root")
    base.make_folder()
    (base / "a").make_folder()
    (base / "a" / "f.json").write_json({"x": 1})
    (base / "b.txt").write_text("hello")
    assert base.list_names() == ["a", "b.txt"]
    assert (base / "a").exists() and not (base / "a").is_file()
    assert (base / "b.txt").is_file() and (base / "b.txt").read_text() == "hello"
    # The size is known without a read on disk; an object store has no cheaper way.
    assert (base / "b.txt").size() == (5 if root == "local" else None)
    (base / "a").remove()
    assert base.list_names() == ["b.txt"]
    assert not (base / "missing").exists()
    with pytest.raises(FileNotFoundError):
        (base / "missing").read_bytes()
    if root == "local":
        with pytest.raises(FileNotFoundError):
            (base / "missing").size()


def test_object_store_has_no_rename():
    location = Location.parse("memory://test-rename/x")
    assert not location.has_atomic_rename
    with pytest.raises(StorageError, match="no atomic rename"):
        location.rename_to(Location.parse("memory://test-rename/y"))


def test_folder_over_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="found a file"):
        Location.parse(tmp_path / "file").make_folder()


def test_parent_and_name():
    location = Location.parse("memory://bkt/a/b")
    assert location.name == "b"
    assert str(location.parent) == "memory://bkt/a"
    assert str(Location.parse("/a").parent) == "/"
