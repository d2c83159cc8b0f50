"""Message classes by name: the name that travels, and the class it resolves to on arrival."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from geode_mpi.errors import DecodeError
from geode_mpi.message import Message

BASE_NAME = ""  # the wire name of Message itself, the commonest case
_cache: dict[str, type[Message]] = {}
# Classes of the job script found in ``__main__``: name -> (class, that module, its attribute)
_main: dict[str, tuple[type[Message], ModuleType, str]] = {}
_MAIN_MAX = 4096


def class_name(cls: type[Message]) -> str:
    """The wire name of a Message class: ``module:qualname``.

    The class is remembered under that name, so that messages this process sends to itself
    resolve even when the class cannot be imported by name (defined inside a function).
    """
    if cls is Message:
        return BASE_NAME
    name = f"{cls.__module__}:{cls.__qualname__}"
    if _cache.get(name) is not cls:
        _cache[name] = cls
    return name


def short_name(wire_name: str) -> str:
    """The class name users see as ``message.type``."""
    if wire_name == BASE_NAME:
        return Message.__name__
    return wire_name.rpartition(":")[2].rpartition(".")[2]


def resolve(wire_name: str) -> type[Message]:
    """Find the class a wire name refers to, importing its module if needed.

    Classes defined in the job script resolve through ``__main__``, which the runner sets to the
    job on every rank.

    Raises:
        DecodeError: the class cannot be found, or is not a Message subclass.
    """
    if wire_name == BASE_NAME:
        return Message
    if wire_name.startswith("__main__:"):
        # __main__ changes between jobs run in one process: the class found there is kept
        # with the module it was found in, and taken again only while ``__main__`` is still
        # that module and the name still that class (two lookups, not an import's).
        known = _main.get(wire_name)
        if known is not None:
            kept, main, attr = known
            if sys.modules.get("__main__") is main and main.__dict__.get(attr) is kept:
                return known[0]
        try:
            cls = _lookup(wire_name)
        except DecodeError:
            if wire_name not in _cache:
                raise
            return _cache[wire_name]
        module = sys.modules.get("__main__")
        attr = wire_name[len("__main__:") :]
        if module is not None and module.__dict__.get(attr) is cls:  # (not nested)
            if len(_main) >= _MAIN_MAX:
                _main.clear()
            _main[wire_name] = (cls, module, attr)
        return cls
    found = _cache.get(wire_name)
    if found is None:
        found = _cache[wire_name] = _lookup(wire_name)
    return found


def _lookup(wire_name: str) -> type[Message]:
    module_name, _, qualname = wire_name.partition(":")
    try:
        if not module_name or module_name.startswith(".") or not qualname:
            raise ImportError(f"{wire_name!r} is not 'module:qualname' with an absolute module")
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        obj: object = module
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # ImportError, AttributeError, what a damaged name makes import raise
        raise DecodeError(
            f"received a message of class {qualname!r} from module {module_name!r}, but this "
            f"rank cannot find it ({type(exc).__name__}: {exc}); define or import the class "
            "on every rank"
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, Message)):
        raise DecodeError(f"{wire_name!r} names {obj!r}, which is not a Message subclass")
    return obj


# Classes whose received messages a receive builds as a plain Message (`plain.plain_message`),
# then gives their class (the same layout), by wire name as it travels: (class, the ``__main__``
# it was found in or None, its attribute there)
_inline: dict[bytes, tuple[type[Message], ModuleType | None, str]] = {}
_METADATA = ("data", "id", "seq", "timestamp", "source", "dest", "reply_to")


def remember_inline(raw: bytes, cls: type[Message]) -> None:
    """Remember ``cls``, resolved from wire name ``raw``, for `inline_class` if its received
    messages may be built as a plain Message's, attribute by attribute, then given its class:
    no ``__setattr__`` or ``__new__`` of its own, Message's layout (no slots in any base, a
    mixin's after Message too), nothing of its own named as the metadata is, no
    ``__getstate__`` or ``__setstate__``."""
    known = _inline.get(raw)
    if (known is not None and known[0] is cls) or cls.__setattr__ is not object.__setattr__:
        return
    if cls.__new__ is not object.__new__ or cls.__basicsize__ != Message.__basicsize__:
        return
    if state_methods(cls):  # (after the cheap tests: a slotted class's every message asks)
        return  # (its state methods build it: `decoding.decode_named` each time)
    for klass in cls.__mro__:  # (every base: a mixin comes after Message)
        if klass is Message:
            continue
        found = klass.__dict__
        if found.get("__slots__") or any(name in found for name in _METADATA):
            return  # (empty slots, as typing.Generic's, change nothing)
    main = None
    attr = ""
    if cls.__module__ == "__main__":
        main = sys.modules.get("__main__")
        attr = cls.__qualname__
        if main is None or main.__dict__.get(attr) is not cls:
            return  # (nested, or not the script's own: `resolve` each time)
    if len(_inline) >= _MAIN_MAX:
        _inline.clear()
    _inline[raw] = (cls, main, attr)


def inline_class(raw: bytes) -> type[Message] | None:
    """The class `remember_inline` kept for wire name ``raw`` (a class of the job script:
    while ``__main__`` is still its module and the name still that class), else None."""
    found = _inline.get(raw)
    if found is None:
        return None
    cls, main, attr = found
    if main is not None and (
        sys.modules.get("__main__") is not main or main.__dict__.get(attr) is not cls
    ):
        return None
    return cls


GETS = 1  # a class's own ``__getstate__``: what it returns travels, not its ``__dict__``
SETS = 2  # its own ``__setstate__``: the receiver calls it with that state
_DEFAULT_GETSTATE = getattr(object, "__getstate__", None)  # (Python 3.11+)
_state_methods: dict[type, int] = {}


def state_methods(cls: type) -> int:
    """Which of ``__getstate__`` (`GETS`) and ``__setstate__`` (`SETS`) a Message class
    defines (itself or a base), as pickle would call them; 0 for neither. Those that
    ``@dataclass(slots=True)`` writes do not count: they pickle the fields alone, where the
    codec already sends every slot, and ``data`` too."""
    found = _state_methods.get(cls)
    if found is None:
        getstate = getattr(cls, "__getstate__", None)
        setstate = getattr(cls, "__setstate__", None)
        found = (GETS if _own(getstate) and getstate is not _DEFAULT_GETSTATE else 0) | (
            SETS if _own(setstate) else 0
        )
        if len(_state_methods) >= _MAIN_MAX:
            _state_methods.clear()
        _state_methods[cls] = found
    return found


def _own(method: object) -> bool:
    """Whether a state method is the class's own: not missing, not a dataclass's."""
    if method is None:
        return False
    return getattr(method, "__module__", None) != "dataclasses" or getattr(
        method, "__qualname__", ""
    ) not in ("_dataclass_getstate", "_dataclass_setstate")
