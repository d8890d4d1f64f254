"""CompositeCheckpointHandler: several named items, each in its own folder under the step.

`Composite(state=StandardSave(...), config=JsonSave(...))` saves `state/` and `config/`.
Without args, restore brings back every item whose handler is known, from the handler
names recorded in `_CHECKPOINT_METADATA` (looked up, never imported).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from jaxpoint.core.errors import CheckpointNotFoundError, InvalidArgumentError
from jaxpoint.core.handlers.base import CheckpointArgs, SaveContext, WriteStep
from jaxpoint.core.handlers.registry import (
    handler_for_args,
    handler_for_typestr,
    register_with_handler,
)
from jaxpoint.core.storage import Location, read_json, validate_name
from jaxpoint.core.storage.commit import write_marker
from jaxpoint.core.storage.step_layout import STEP_METADATA_FILE, item_folders


class Composite(CheckpointArgs, Mapping[str, Any]):
    """Args for several items at once: `Composite(state=StandardSave(tree), meta=JsonSave(d))`."""

    def __init__(self, **items: Any) -> None:
        for name in items:
            validate_name(name, what="item name")
        object.__setattr__(self, "_items", dict(items))

    def __getitem__(self, name: str) -> Any:
        return self._items[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_items"][name]
        except KeyError as error:
            raise AttributeError(name) from error

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Composite({', '.join(f'{k}={v!r}' for k, v in self._items.items())})"


class CompositeCheckpointHandler:
    """Routes each item of a `Composite` to its handler, in the item's own folder."""

    typestr: ClassVar[str] = "orbax.checkpoint._src.handlers.composite_checkpoint_handler.CompositeCheckpointHandler"

    def __init__(self, *item_names: str, **item_handlers: Any) -> None:
        for name in (*item_names, *item_handlers):
            validate_name(name, what="item name")
        self._handlers: dict[str, Any] = dict(item_handlers)
        self._known_names = set(item_names) | set(item_handlers)
        self._last_staged: list[str] = []

    @property
    def item_names(self) -> set[str]:
        return set(self._known_names)

    def handler(self, name: str, args: Any | None = None) -> Any:
        """The handler of item `name`, created from `args`' registration on first use."""
        existing = self._handlers.get(name)
        if existing is not None:
            return existing
        if args is None:
            return None
        created = handler_for_args(args)()
        self._handlers[name] = created
        self._known_names.add(name)
        return created

    def recorded_typestrs(self, args: Composite) -> dict[str, str]:
        return {name: self.handler(name, item).typestr for name, item in args.items()}

    def stage(self, directory: Location, args: Any, *, context: SaveContext) -> WriteStep:
        if not isinstance(args, Composite):
            raise InvalidArgumentError(
                f"Expected args.Composite for a composite checkpoint, got {type(args).__name__}. "
                "To fix, wrap items: args.Composite(state=args.StandardSave(tree))."
            )
        steps = [self.handler(name, item).stage(directory / name, item, context=context)
                 for name, item in args.items()]
        self._last_staged = list(args)

        def write() -> None:
            for step in steps:
                step()

        return write

    def finalize(self, directory: Location, *, context: SaveContext) -> None:
        for name in self._last_staged:
            self._handlers[name].finalize(directory / name, context=context)
            write_marker(directory / name)

    def _recorded(self, directory: Location) -> dict[str, str]:
        try:
            recorded = read_json(directory / STEP_METADATA_FILE).get("item_handlers")
        except CheckpointNotFoundError:
            return {}
        return recorded if isinstance(recorded, dict) else {}

    def _handler_for_restore(self, directory: Location, name: str, args: Any,
                             recorded: dict[str, str]) -> Any:
        handler = self.handler(name, args)
        if handler is None and isinstance(recorded.get(name), str):
            cls = handler_for_typestr(recorded[name])
            if cls is not None:
                handler = self._handlers.setdefault(name, cls())
        if handler is None:
            raise InvalidArgumentError(
                f"No handler known for item {name!r} of {directory}. To fix, pass args for it "
                "(e.g. args.Composite(" + name + "=args.StandardRestore())) or register "
                "item_handlers for it."
            )
        return handler

    def restore(self, directory: Location, args: Any | None = None) -> Composite:
        recorded = self._recorded(directory)
        present = item_folders(directory)
        if args is None:
            names = [n for n in present if n in self._known_names or n in recorded]
            args = Composite(**{n: None for n in names})
        missing = [name for name in args if name not in present]
        if missing:
            raise CheckpointNotFoundError(
                f"Expected items {missing} in {directory}, found only {present}. To fix, "
                "restore one of the saved items."
            )
        restored = {}
        for name, item_args in args.items():
            handler = self._handler_for_restore(directory, name, item_args, recorded)
            restored[name] = handler.restore(directory / name, item_args)
        return Composite(**restored)

    def metadata(self, directory: Location) -> dict[str, Any]:
        recorded = self._recorded(directory)
        result = {}
        for name in directory.list_names():
            handler = self._handlers.get(name)
            if handler is None and isinstance(recorded.get(name), str):
                cls = handler_for_typestr(recorded[name])
                handler = cls() if cls is not None else None
            if handler is not None:
                result[name] = handler.metadata(directory / name)
        return result


register_with_handler(CompositeCheckpointHandler, for_save=True, for_restore=True)(Composite)
