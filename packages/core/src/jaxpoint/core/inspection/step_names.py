"""Step folder names: `[<prefix>_]<step>`, optionally zero-padded, as Orbax names them.

A name format turns a step into its folder name and back. The standard format reads
exactly the names Orbax 0.12 reads: with `step_format_fixed_length=6`, `000042` and
`1234567` are steps but `42` is not; without it, `42` is a step but `042` is not (so one
step never has two names). `steps.list_steps` uses a format to list a directory.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.storage import validate_name
from jaxpoint.core.validation import require_positive_int


@runtime_checkable
class StepNameFormat(Protocol):
    """Names step folders. `parse_name` returns None for names that are not steps."""

    def build_name(self, step: int) -> str: ...

    def parse_name(self, name: str) -> int | None: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class StandardStepNameFormat:
    """`[<step_prefix>_]<step>`, the step zero-padded to `step_format_fixed_length` digits."""

    step_prefix: str | None = None
    step_format_fixed_length: int | None = None

    def __post_init__(self) -> None:
        prefix, length = self.step_prefix, self.step_format_fixed_length
        if prefix is not None:
            if not isinstance(prefix, str) or not prefix:
                raise InvalidArgumentError(
                    f"Expected step_prefix to be a non-empty str or None, got {prefix!r}. "
                    "To fix, pass e.g. step_prefix='ckpt' (folders 'ckpt_<step>'), or None."
                )
            validate_name(prefix, what="step_prefix")
        require_positive_int(length, what="step_format_fixed_length", allow_none=True,
                             fix="pass e.g. 6 (folders '000042'), or None for unpadded names")

    @functools.cached_property
    def _pattern(self) -> re.Pattern[str]:
        length = self.step_format_fixed_length
        if length is None:
            digits = r"0|[1-9]\d*"
        else:
            # Padded to exactly `length` digits, or longer once the step outgrows the padding.
            digits = rf"0\d{{{length - 1}}}|[1-9]\d{{{length - 1},}}"
        prefix = re.escape(f"{self.step_prefix}_") if self.step_prefix is not None else ""
        return re.compile(rf"{prefix}({digits})")

    def build_name(self, step: int) -> str:
        digits = f"{step:0{self.step_format_fixed_length}d}" if self.step_format_fixed_length \
            else str(step)
        return f"{self.step_prefix}_{digits}" if self.step_prefix is not None else digits

    def parse_name(self, name: str) -> int | None:
        match = self._pattern.fullmatch(name)
        return int(match.group(1)) if match else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompositeStepNameFormat:
    """Writes with `write_format`; reads any of `read_formats`, the first match winning.

    Use it to move a run to a new naming while still listing the steps of the old one.
    """

    write_format: StepNameFormat
    read_formats: Sequence[StepNameFormat]

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_formats", tuple(self.read_formats))
        if self.write_format not in self.read_formats:
            raise InvalidArgumentError(
                f"Expected write_format {self.write_format!r} among read_formats "
                f"{list(self.read_formats)!r}: steps written must also be listed. To fix, add "
                "it to read_formats."
            )

    def build_name(self, step: int) -> str:
        return self.write_format.build_name(step)

    def parse_name(self, name: str) -> int | None:
        for read_format in self.read_formats:
            step = read_format.parse_name(name)
            if step is not None:
                return step
        return None


def standard_name_format(*, step_prefix: str | None = None,
                         step_format_fixed_length: int | None = None) -> StandardStepNameFormat:
    """The name format CheckpointManagerOptions' step_prefix / fixed length select."""
    return StandardStepNameFormat(step_prefix=step_prefix,
                                  step_format_fixed_length=step_format_fixed_length)


def composite_name_format(write_name_format: StepNameFormat,
                          read_name_formats: Sequence[StepNameFormat]) -> CompositeStepNameFormat:
    """A format that writes one naming and reads several (see CompositeStepNameFormat)."""
    return CompositeStepNameFormat(write_format=write_name_format, read_formats=read_name_formats)


def name_format_for(*, step_prefix: str | None, step_format_fixed_length: int | None,
                    step_name_format: StepNameFormat | None, where: str = "") -> StepNameFormat:
    """The format that names steps: `step_name_format`, or the standard one built from
    `step_prefix` and `step_format_fixed_length`; giving both kinds is an error. `where`
    prefixes the option names in errors (e.g. "CheckpointManagerOptions.")."""
    if step_name_format is None:
        return standard_name_format(step_prefix=step_prefix,
                                    step_format_fixed_length=step_format_fixed_length)
    if step_prefix is not None or step_format_fixed_length is not None:
        raise InvalidArgumentError(
            f"{where}step_name_format names steps by itself, so it cannot be combined with "
            "step_prefix or step_format_fixed_length. To fix, drop them or pass "
            "standard_name_format(step_prefix=..., step_format_fixed_length=...)."
        )
    if not isinstance(step_name_format, StepNameFormat):
        raise InvalidArgumentError(
            f"Expected {where}step_name_format to be an object with build_name() and "
            f"parse_name(), got {step_name_format!r}. To fix, pass standard_name_format(...)."
        )
    return step_name_format
