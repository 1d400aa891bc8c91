"""Reading config files and blaming every mistake on its source.

A YAML or JSON syntax error names the file, line and column; a wrong key or type names the
file, or the command line and the `key=value` argument as typed, with "did you mean" for a
misspelt key. A config file that is not there gets "did you mean" with the closest existing
config files, and resolve_path reads the inverse-heat code's `X.py` names as the `X.yaml` here.
Used by config.py for every system.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path

from .errors import UserError


def _syntax_error(path, line: int, column: int, problem: str) -> str:
    return f"cannot parse config file {path}: line {line}, column {column}: {problem}"


def _find_cause(err: BaseException, types):
    """`err` itself or the first exception of `types` it was raised from (__cause__ / __context__)."""
    seen, todo = set(), [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, types):
            return e
        todo += [e.__cause__, e.__context__]
    return None


def file_error_line(path, err: BaseException) -> str:
    """One line for a config file that cannot be read at all (permissions, not UTF-8 text, ...)."""
    import yaml

    inner = _find_cause(err, (OSError, UnicodeDecodeError, yaml.YAMLError)) or err
    if isinstance(inner, OSError):
        detail = inner.strerror or str(inner)
    elif isinstance(inner, UnicodeDecodeError):
        detail = f"not UTF-8 text (byte {inner.start})"
    else:
        lines = str(inner).strip().splitlines()
        detail = lines[0] if lines else type(inner).__name__
    return f"cannot read config file {path}: {detail}"


def yaml_error_line(path, err: BaseException) -> str:
    """The UserError message for an exception met while loading the YAML file `path`.

    A syntax error (PyYAML's MarkedYAMLError, also when wrapped by OmegaConf) gives file,
    line and column (1-based) and what is wrong; anything else one line from file_error_line.
    train.py's --config routing calls it on whatever OmegaConf.load raised.
    """
    import yaml

    marked = _find_cause(err, yaml.MarkedYAMLError)
    mark = marked and (marked.problem_mark or marked.context_mark)
    if mark is None:
        return file_error_line(path, err)
    problem = marked.problem or marked.context or "syntax error"
    ctx = marked.context_mark
    if marked.problem and marked.context:
        if ctx is not None and (ctx.line, ctx.column) != (mark.line, mark.column):
            problem += f" ({marked.context} that starts at line {ctx.line + 1}, column {ctx.column + 1})"
        else:
            problem += f" ({marked.context})"
    return _syntax_error(path, mark.line + 1, mark.column + 1, problem)


def load_yaml(path):
    """A YAML config file as an OmegaConf DictConfig; any problem reading it is a UserError."""
    import yaml
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not Path(path).is_file():
        raise UserError(missing_file_message(path))
    try:
        conf = OmegaConf.load(path)
    except (yaml.YAMLError, OSError, UnicodeDecodeError, OmegaConfBaseException) as err:
        raise UserError(yaml_error_line(path, err)) from None
    if not isinstance(conf, DictConfig):
        raise UserError(f"config file {path} must hold a mapping of key: value")
    return conf


def dotlist_item(item: str) -> dict:
    """One command-line `key=value` (OmegaConf dot-list; the value is read as YAML) as a nested dict."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([item]))
    except yaml.YAMLError as err:
        marked = _find_cause(err, yaml.MarkedYAMLError)
        problem = (marked and (marked.problem or marked.context)) or str(err).strip().splitlines()[0]
        raise UserError(f"command line: {item}: cannot parse the value: {problem}") from None
    except OmegaConfBaseException as err:
        raise UserError(f"command line: {item}: {str(err).strip().splitlines()[0]}") from None


def merge_checked(conf, values, schema, where: str):
    """OmegaConf.merge(conf, values); a wrong key or type is a UserError starting with `where`
    (a file name, or `command line: key=value`)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.merge(conf, values)
    except OmegaConfBaseException as err:
        plain = OmegaConf.to_container(values) if isinstance(values, (DictConfig, ListConfig)) else values
        raise UserError(f"{where}: {omegaconf_error(err, schema, plain)}") from None


def omegaconf_error(err, schema, values) -> str:
    """What an OmegaConf merge error means in terms of the dataclass `schema`: the key, and for a
    wrong type what the key expects and what `values` (the merged-in input) gave it."""
    from omegaconf.errors import ConfigKeyError, ValidationError

    key = getattr(err, "full_key", None) or None
    msg = (str(getattr(err, "msg", None) or err).strip().splitlines() or [type(err).__name__])[0]
    parts = _key_parts(key) if key else []
    if isinstance(err, ConfigKeyError) and parts and isinstance(parts[-1], str):
        parent = _strip_optional(_schema_type(schema, parts[:-1]))
        names = [f.name for f in dataclasses.fields(parent)] if dataclasses.is_dataclass(parent) else []
        close = difflib.get_close_matches(parts[-1], names, n=1)
        prefix = key[:len(key) - len(parts[-1])]
        return f"unknown config key '{key}'" + (f" (did you mean '{prefix}{close[0]}'?)" if close else "")
    if isinstance(err, ValidationError) and parts:
        typ = _schema_type(schema, parts)
        if typ is not None:
            found, got = _lookup(values, parts)
            return f"config key '{key}': expected {_describe(typ)}" + (
                f", got {json.dumps(got, default=str)}" if found else "")
    return msg + (f" (key: {key})" if key and key not in msg else "")


def _key_parts(key: str) -> list:
    """'model.unet.channel_mult[1]' -> ['model', 'unet', 'channel_mult', 1]."""
    import re

    return [int(i) if i else name for i, name in re.findall(r"\[(\d+)\]|([^.\[\]]+)", key)]


def _strip_optional(tp):
    import typing

    if typing.get_origin(tp) is typing.Union:
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _schema_type(schema, parts):
    """The declared type of the key `parts` in the dataclass `schema`, or None if it has none."""
    import typing

    tp = schema
    for part in parts:
        tp = _strip_optional(tp)
        if isinstance(part, int):
            if typing.get_origin(tp) is not list:
                return None
            tp = (typing.get_args(tp) or (typing.Any,))[0]
        elif dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                return None
            tp = hints[part]
        else:
            return None
    return tp


def _describe(tp) -> str:
    import typing

    if typing.get_origin(tp) is typing.Union:
        args = typing.get_args(tp)
        text = " or ".join(_describe(a) for a in args if a is not type(None))
        return text + " or null" if type(None) in args else text
    if typing.get_origin(tp) is list:
        return "a list of " + _describe((typing.get_args(tp) or (typing.Any,))[0])
    if dataclasses.is_dataclass(tp):
        return "a section of keys (a mapping)"
    if tp is bool:
        return "bool (true or false)"
    if tp is typing.Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


def _lookup(values, parts):
    """(True, value) at the key `parts` of the nested dicts/lists `values`, or (False, None)."""
    for part in parts:
        try:
            values = values[part]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, values


def parse_with_overrides(parser, argv):
    """argparse with `key=value` overrides allowed before, between or after the flags.

    The parser declares a positional `overrides` (nargs='*'); argparse alone takes only one
    unbroken run of positionals, so the rest is collected here, and anything else unknown
    is argparse's usual error.
    """
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if a.startswith("-") or "=" not in a]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.overrides = list(args.overrides) + rest
    return args


def override_item(item: str) -> dict:
    """One `key=value` command-line argument as a (nested) dict, OmegaConf dot-list syntax."""
    if "=" not in item:
        raise UserError(f"override '{item}' is not of the form key=value")
    return dotlist_item(item)


# Keys accepted in files but never part of the schema: json has no comments, so experiment
# files explain themselves in keys that start with an underscore.
COMMENT_PREFIX = "_"


def read_file(path) -> dict:
    """A JSON or YAML config file as a plain dict, comment keys ('_...') dropped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(missing_file_message(path))
    if path.suffix == ".py":
        raise UserError(python_config_message(path))
    if path.suffix in (".yaml", ".yml"):
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(load_yaml(path))
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(file_error_line(path, err)) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(_syntax_error(path, err.lineno, err.colno, err.msg)) from None
        if not isinstance(data, dict):
            raise UserError(f"config file {path} must hold a mapping of key: value")
    return {k: v for k, v in data.items() if not str(k).startswith(COMMENT_PREFIX)}


# ============================================================================ which file a path means
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
# Where the shipped configs live, relative to the repository: the candidates of "did you mean".
_REPO = Path(__file__).resolve().parents[1]
_SHIPPED = ("configs", "exps/json")


def _stand_ins(path: Path) -> list:
    """X.yaml / X.yml / X.json beside X.<anything> that exist, spelt from `path` as typed."""
    return [path.with_suffix(s) for s in CONFIG_SUFFIXES if path.with_suffix(s).is_file()]


def _shown(path: Path) -> str:
    """A path as the user would type it here: relative to the working directory when below it."""
    import os

    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except (OSError, ValueError):
        return str(path)


def _stem(p) -> str:
    # Suffixes say nothing about which experiment is meant (the heat code's X.py is X.yaml here).
    return str(Path(p).with_suffix("")) if Path(p).suffix else str(p)


def close_config_files(path, n: int = 3) -> list:
    """The existing config files whose names are closest to the missing `path`, best first: the shipped
    ones (configs/, exps/json/) by their path or their name, and those in the folder `path` names by
    their name; spelt as the user would type them."""
    path = Path(path)
    shipped = {f.resolve(): _shown(f) for folder in _SHIPPED for f in sorted((_REPO / folder).rglob("*"))
               if f.suffix in CONFIG_SUFFIXES and f.is_file()}
    beside = {}
    if path.parent.is_dir():
        # Spelt from the folder as typed.
        beside = {f.resolve(): str(f) for f in sorted(path.parent.iterdir())
                  if f.suffix in CONFIG_SUFFIXES and f.is_file()}

    def ratio(a, b) -> float:
        return difflib.SequenceMatcher(None, _stem(a), _stem(b)).ratio()

    scored = []
    for key, shown in {**shipped, **beside}.items():
        by_name, by_path = ratio(Path(shown).name, path.name), ratio(shown, _shown(path) if key in shipped else path)
        # Beside the missing file every name shares the folder, which makes no likeness: there the name decides.
        score = max(by_name, by_path) if key in shipped else by_name
        if score >= 0.6:                        # difflib.get_close_matches' own threshold
            scored.append((-score, -by_path, shown))
    scored.sort()
    # Far below the best match a name is only like it in its folder's name (exps/json/ci.json for quickstrat.json).
    return [shown for score, _, shown in scored[:n] if score <= scored[0][0] + 0.1]


def missing_file_message(path) -> str:
    close = close_config_files(path)
    hint = " or ".join(close) if len(close) < 3 else ", ".join(close[:-1]) + " or " + close[-1]
    return f"config file not found: {path}" + (f" (did you mean {hint}?)" if close else "")


def python_config_message(path) -> str:
    """Why an existing .py config is refused, and the file to give instead where there is one."""
    path = Path(path)
    head = f"config file {path} is Python code, which is not run here (the inverse-heat code's configs are YAML here)"
    options = _stand_ins(path) or [p for p in map(Path, close_config_files(path)) if _stem(p.name) == _stem(path.name)]
    if options:
        return f"{head}: use --config {options[0]}"
    return f"{head}: write its settings as a YAML or JSON file (every key: docs/config.md)"


def resolve_path(path) -> tuple:
    """(the config file that `path` means, a note or None); a UserError when there is none.

    A missing X.py with exactly one of X.yaml / X.yml / X.json beside it is that file: the
    inverse-heat code's command lines name its Python configs, whose settings are the YAML files
    here. An existing .py file is refused (Python configs are code and are not read).
    """
    path = Path(path)
    if path.is_file():
        if path.suffix == ".py":
            raise UserError(python_config_message(path))
        return str(path), None
    if path.suffix == ".py":
        stand_ins = _stand_ins(path)
        if len(stand_ins) == 1:
            return str(stand_ins[0]), f"{path} is {stand_ins[0]} here"
        if stand_ins:
            raise UserError(f"config file not found: {path} (give one of {' or '.join(map(str, stand_ins))})")
    raise UserError(missing_file_message(path))
