"""Orbax's path-level step helpers (`ocp.path.step`, `ocp.utils`): step folders as paths, read without writing.

These work on any folder of step checkpoints, without a CheckpointManager: they accept
every name Orbax accepts (`42`, `<prefix>_42`) and count a folder as a step only once
it is committed (renamed into place, or holding the commit marker on object stores).
"""

from __future__ import annotations

import os
import re

from etils import epath
from jaxpoint.core.errors import InvalidNameError
from jaxpoint.core.inspection.step_names import StepNameFormat, standard_name_format
from jaxpoint.core.storage import TMP_SUFFIX, Location, commit_protocol_for, is_tmp_name

PathLike = str | os.PathLike[str]

# `<prefix>_<step>`, and a tmp folder `[<prefix>_]<step>.orbax-checkpoint-tmp[-<n>]`.
ALLOWED_STEP_NAME_PATTERN = r"(.+)_(\d+)"
TMP_DIR_STEP_PATTERN = r".*?_*?(\d+)\.orbax-checkpoint-tmp"
TMP_DIR_SUFFIX = TMP_SUFFIX


def build_step_path(base_path: PathLike, name_format: StepNameFormat, step: int) -> epath.Path:
    """`base_path / name_format.build_name(step)`."""
    return epath.Path(base_path) / name_format.build_name(step)


def get_save_directory(step: int, directory: PathLike, name: str | None = None,
                       step_prefix: str | None = None,
                       override_directory: PathLike | None = None,
                       step_format_fixed_length: int | None = None,
                       step_name_format: StepNameFormat | None = None) -> epath.Path:
    """The folder of `step` (and of item `name` inside it) under `directory`."""
    if directory is None:
        raise InvalidNameError(
            "Expected a checkpoint directory for get_save_directory, got None. To fix, pass "
            "the root folder of the steps."
        )
    if override_directory is not None:
        result = epath.Path(override_directory)
    else:
        name_format = step_name_format or standard_name_format(
            step_prefix=step_prefix, step_format_fixed_length=step_format_fixed_length)
        result = build_step_path(directory, name_format, step)
    return result / name if name is not None else result


def step_from_checkpoint_name(name: str) -> int:
    """The step in a step folder's name (`42`, `ckpt_42`, `42.orbax-checkpoint-tmp-7`)."""
    if name.isdigit():
        return int(name)
    if match := re.fullmatch(ALLOWED_STEP_NAME_PATTERN, name):
        return int(match.group(2))
    if match := re.match(TMP_DIR_STEP_PATTERN, name):
        return int(match.group(1))
    raise InvalidNameError(
        f"Expected a step folder name like '42' or 'prefix_42', got {name!r}. To fix, pass "
        "the name of a step folder."
    )


def is_path_temporary(path: PathLike) -> bool:
    """True for the folder of a save still in flight (or abandoned)."""
    location = Location.parse(os.fspath(path))
    if is_tmp_name(location.name):
        return True
    return location.exists() and not commit_protocol_for(location).is_committed(location)


def is_path_finalized(path: PathLike) -> bool:
    """True for a committed checkpoint folder."""
    location = Location.parse(os.fspath(path))
    return not is_tmp_name(location.name) and commit_protocol_for(location).is_committed(location)


def _is_step_name(name: str) -> bool:
    return name.isdigit() or name.rsplit("_", 1)[-1].isdigit()


def checkpoint_steps_paths(checkpoint_dir: PathLike) -> list[epath.Path]:
    """Committed step folders directly under `checkpoint_dir` (any prefix, any padding)."""
    root = Location.parse(os.fspath(checkpoint_dir))
    if not root.exists():
        return []
    return [epath.Path(str(root / name)) for name in root.list_names()
            if _is_step_name(name) and not (root / name).is_file()
            and is_path_finalized(str(root / name))]


def checkpoint_steps(checkpoint_dir: PathLike,
                     single_host_load_and_broadcast: bool = False) -> list[int]:
    """Steps of the committed step folders under `checkpoint_dir`, in listing order.

    `single_host_load_and_broadcast` is accepted for Orbax's signature: every process lists
    the folder itself here, which is what the flag's result is on one host.
    """
    return [step_from_checkpoint_name(path.name) for path in checkpoint_steps_paths(checkpoint_dir)]


def any_checkpoint_step(checkpoint_dir: PathLike) -> int | None:
    """Some committed step under `checkpoint_dir`, or None."""
    paths = checkpoint_steps_paths(checkpoint_dir)
    return step_from_checkpoint_name(paths[0].name) if paths else None


def all_temporary_paths(checkpoint_dir: PathLike) -> list[epath.Path]:
    """Folders under `checkpoint_dir` left by saves that have not committed."""
    root = Location.parse(os.fspath(checkpoint_dir))
    if not root.exists():
        return []
    return [epath.Path(str(root / name)) for name in root.list_names()
            if not (root / name).is_file() and is_path_temporary(str(root / name))]
