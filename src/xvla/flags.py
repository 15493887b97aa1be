"""One CLI mechanism: a sub-command's flags come from its config dataclass.

Every ``xvla`` sub-command declares its settings as a dataclass (``TrainConfig``, ``EvalConfig``,
``ServeConfig``, ...). :func:`add_dataclass_flags` turns the fields into flags (``--name`` and
``--name-with-dashes``; nested dataclasses as ``--group.name``), and :func:`dataclass_from_args`
builds the dataclass back, converting each value to the field's annotated type with one error
message style. Field help comes from ``field(metadata={"help": ...})`` (:func:`documented` writes it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any


class FlagParser(argparse.ArgumentParser):
    """argparse for every ``xvla`` command: whole flag names only (``--step=5`` is not taken as ``--steps``),
    an unknown flag answered with the flags it may mean, and every usage error in one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self._chosen(namespace)
            parser.error(unknown_flags_message(extras, parser))
        return namespace

    def _chosen(self, namespace: argparse.Namespace) -> argparse.ArgumentParser:
        """The (sub-)sub-command parser the arguments selected: its flags are the ones to suggest."""
        parser: argparse.ArgumentParser = self
        while True:
            subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            name = getattr(namespace, subs[0].dest, None) if subs else None
            if name not in (subs[0].choices if subs else {}):
                return parser
            parser = subs[0].choices[name]

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def unknown_flags_message(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """``--lr`` -> "unknown flag --lr: did you mean --optimizer.lr?" (same last name, or a close spelling)."""
    flags = [e.split("=", 1)[0] for e in extras if e.startswith("-")]
    if not flags:
        return f"unrecognized arguments: {' '.join(extras)}"
    parts = []
    for flag in flags:
        hints = suggest_flags(flag, parser)
        parts.append(f"{flag}: did you mean {' or '.join(hints)}?" if hints else flag)
    return f"unknown flag {'; '.join(parts)}"


def suggest_flags(flag: str, parser: argparse.ArgumentParser) -> list[str]:
    import difflib

    actions = {
        o: a
        for o, a in parser._option_string_actions.items()
        if o.startswith("--") and a.help != argparse.SUPPRESS
    }

    def norm(option: str) -> str:
        return option.lstrip("-").replace("-", "_")

    leaf = norm(flag).rsplit(".", 1)[-1]
    found = [o for o in actions if norm(o).rsplit(".", 1)[-1] == leaf]
    by_name = {norm(o): o for o in actions}
    found += [by_name[n] for n in difflib.get_close_matches(norm(flag), list(by_name), n=3, cutoff=0.75)]
    return list(dict.fromkeys(actions[o].option_strings[0] for o in found))[:3]


def documented(
    default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING
):
    """A dataclass field with the help text its flag shows."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: Any,
    positional: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    aliases: dict[str, list[str]] | None = None,
    optional_positional: bool = False,
) -> None:
    """Add one flag per leaf field of ``cls`` (defaults stay the dataclass's: unset flags are absent).

    Several dataclasses may share one parser (``xvla eval`` takes Meta-World's and LIBERO's settings):
    ``skip`` the fields an earlier one added; :func:`dataclass_from_args` picks each class's own.
    """
    defaults = _defaults(cls)
    for name, tp in flat_fields(cls).items():
        if name in skip:
            continue
        help_text = field_help(cls, name)
        if name in positional:
            extra: dict[str, Any] = dict(nargs="?", default=argparse.SUPPRESS) if optional_positional else {}
            parser.add_argument(name, help=help_text, **extra)
            continue
        names = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        names += (aliases or {}).get(name, [])
        kwargs: dict[str, Any] = dict(dest=name, default=argparse.SUPPRESS, metavar="V")
        if _is_bool(tp):
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        shown = defaults.get(name, dataclasses.MISSING)
        said = shown is dataclasses.MISSING or "default" in (help_text or "")
        suffix = "" if said else f" (default: {_text(shown)})"
        parser.add_argument(*names, help=(help_text or "") + suffix, **kwargs)
        if _is_bool(tp) and shown is True:
            parser.add_argument(
                f"--no-{name.replace('_', '-')}",
                dest=name,
                action="store_const",
                const="false",
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )


def dataclass_from_args(cls: Any, args: argparse.Namespace, **overrides: Any) -> Any:
    """The dataclass built from the flags given (typed and validated); ``overrides`` win."""
    fields = flat_fields(cls)
    values = {k: v for k, v in vars(args).items() if k in fields}
    values.update(overrides)
    return from_dict(cls, nest_dotted_keys(values))


def nest_dotted_keys(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def flat_fields(cls: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted option name -> annotated type for every leaf field of dataclass ``cls``."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(flat_fields(tp, prefix + f.name + "."))
        else:
            out[prefix + f.name] = tp
    return out


def _defaults(cls: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(value):
            out.update(_defaults(type(value), prefix + f.name + "."))
        else:
            out[prefix + f.name] = value
    return out


def field_help(cls: Any, name: str) -> str:
    """The help text of a (dotted) field of ``cls``; empty when it has none."""
    node, *rest = name.split(".", 1)
    for f in dataclasses.fields(cls):
        if f.name == node:
            if rest:
                return field_help(typing.get_type_hints(cls)[node], rest[0])
            return str(f.metadata.get("help", ""))
    return ""


def _is_bool(tp: Any) -> bool:
    return tp is bool or (
        typing.get_origin(tp) in (typing.Union, types.UnionType) and bool in typing.get_args(tp)
    )


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)


def from_dict(cls, data: dict[str, Any], where: str = ""):
    """Build dataclass ``cls`` from nested dicts, converting values to the annotated types."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"unknown option(s) {[f'{where}{k}' for k in unknown]}; valid options here: "
            f"{sorted(f'{where}{n}' for n in names)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = convert(value, hints[name], f"{where}{name}")
    return cls(**kwargs)


def convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, args, where)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where + ".")
    if origin is list:
        return _convert_list(value, args, where)
    if origin is tuple:
        if isinstance(value, str):
            value = parse_literal(value, where)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}={value!r} is invalid: expected a list like [0.9, 0.95]")
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ValueError(f"{where}={value!r} is invalid: expected {len(args)} values")
        return tuple(convert(v, args[0] if args else Any, where) for v in value)
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = (
                parse_pairs(value, where)
                if "=" in value and not value.lstrip().startswith("{")
                else (parse_literal(value, where))
            )
        if not isinstance(value, dict):
            raise ValueError(f"{where}={value!r} is invalid: expected a mapping (JSON object)")
        return dict(value)
    if tp is bool:
        return parse_bool(value, where)
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{where}={value!r} is invalid: expected an integer")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}={value!r} is invalid: expected an integer") from None
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{where}={value!r} is invalid: expected a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}={value!r} is invalid: expected a number") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{where}={value!r} is invalid: expected a string")
        return str(value)
    return value


def _convert_union(value: Any, args: tuple, where: str) -> Any:
    """The first member type that accepts the value; None (or "none"/"null") where the union allows it."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
        if type(None) in args:
            return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return convert(value, arg, where)
        except (ValueError, TypeError) as exc:
            errors.append(str(exc))
    raise ValueError(f"{where}={value!r} is invalid: {'; '.join(errors)}")


def _convert_list(value: Any, args: tuple, where: str) -> list:
    if isinstance(value, str) and args and args[0] is str and not value.lstrip().startswith("["):
        value = [part.strip() for part in value.split(",") if part.strip()]  # one item needs no comma
    elif isinstance(value, str):
        value = parse_literal(value, where)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}={value!r} is invalid: expected a list")
    if args and dataclasses.is_dataclass(args[0]):
        return [convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    return [convert(v, args[0], where) for v in value] if args else list(value)


def parse_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", "y"):
        return True
    if text in ("0", "false", "no", "off", "n"):
        return False
    raise ValueError(f"{where}={value!r} is invalid: expected true or false")


def parse_pairs(text: str, where: str) -> dict[str, str]:
    """``a=b,c=d`` -> {"a": "b", "c": "d"} (key maps: model key=source key)."""
    out = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        if "=" not in item:
            raise ValueError(f"{where}: entry {item!r} must look like key=value")
        key, value = (part.strip() for part in item.split("=", 1))
        out[key] = value
    return out


def parse_literal(text: str, where: str) -> Any:
    """A flag value: JSON first ([0.9, 0.95], {"a": "b"}), then a comma-separated list."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        import yaml

        value = yaml.safe_load(text)
        if isinstance(value, (list, dict)):
            return value
    except Exception:  # noqa: BLE001 - fall through to the comma form
        pass
    if "," in text:
        return [part.strip() for part in text.split(",") if part.strip()]
    raise ValueError(f'{where}={text!r} is invalid: give JSON, e.g. [1, 2] or {{"key": "value"}}')
