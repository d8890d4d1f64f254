"""`ocp.path.step`: step folder names and paths, as a facade over `jaxpoint.core.manager`."""

from jaxpoint.core.inspection.step_names import (
    CompositeStepNameFormat,
    StandardStepNameFormat,
    composite_name_format,
    standard_name_format,
)
from jaxpoint.core.inspection.step_names import StepNameFormat as NameFormat
from jaxpoint.core.inspection.step_paths import (
    ALLOWED_STEP_NAME_PATTERN,
    TMP_DIR_STEP_PATTERN,
    TMP_DIR_SUFFIX,
    all_temporary_paths,
    any_checkpoint_step,
    build_step_path,
    checkpoint_steps,
    checkpoint_steps_paths,
    get_save_directory,
    is_path_finalized,
    is_path_temporary,
    step_from_checkpoint_name,
)

# Orbax keeps both spellings of these.
is_checkpoint_finalized = is_path_finalized
is_tmp_checkpoint = is_path_temporary
tmp_checkpoints = all_temporary_paths

__all__ = [
    "ALLOWED_STEP_NAME_PATTERN", "CompositeStepNameFormat", "NameFormat",
    "StandardStepNameFormat", "TMP_DIR_STEP_PATTERN", "TMP_DIR_SUFFIX", "all_temporary_paths",
    "any_checkpoint_step", "build_step_path", "checkpoint_steps", "checkpoint_steps_paths",
    "composite_name_format", "get_save_directory", "is_checkpoint_finalized", "is_path_finalized",
    "is_path_temporary", "is_tmp_checkpoint", "standard_name_format", "step_from_checkpoint_name",
    "tmp_checkpoints",
]
