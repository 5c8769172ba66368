"""Read an MMPose 0.x (mmcv 1.x) config ``.py`` file as data, without executing any of it.

The file is parsed with :mod:`ast` and only a small expression language is evaluated: literals, ``dict()`` /
``list()`` / ``tuple()`` / ``range()`` calls, ``{}`` / ``[]`` / ``()`` displays, names assigned earlier in the same
file, subscripts (``channel_cfg['num_output_channels']``), simple arithmetic and f-strings. Every statement must
be an assignment (or a docstring). ``_base_`` files are read the same way and merged with mmcv's rules: dicts merge
recursively with the child winning, ``_delete_=True`` replaces the base's dict, anything else (lists included)
replaces; ``{{_base_.x}}`` is substituted as mmcv does it (textually before parsing, by value after).
Anything else is refused with a one-line error naming the file, the line and the construct.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Any

from posecli.errors import PoseCliError
from posecli.files import is_whole_number, with_article

MAX_CONFIG_BYTES = 1024**2  # real configs are a few KB
MAX_BASE_DEPTH = 16  # _base_ chains are 2-3 levels deep in practice
MAX_ITEMS = 100_000  # longest list / string / range an expression may build
MAX_INT_BITS = 4096  # no arithmetic on numbers bigger than this (stops 10**10**10-style denial of service)
DELETE_KEY = "_delete_"

_BASE_VAR = re.compile(r"\{\{\s*_base_\.([\w.]+)\s*\}\}")
_PREDEFINED = re.compile(r"\{\{\s*(fileDirname|fileBasename|fileBasenameNoExtension|fileExtname)\s*\}\}")
_CALLS = ("dict", "list", "tuple", "range")

_STATEMENT_NAMES = {
    ast.Import: "an import",
    ast.ImportFrom: "an import",
    ast.FunctionDef: "a function definition",
    ast.AsyncFunctionDef: "a function definition",
    ast.ClassDef: "a class definition",
    ast.If: "an if statement",
    ast.For: "a for loop",
    ast.While: "a while loop",
    ast.With: "a with statement",
    ast.Try: "a try statement",
    ast.Delete: "a del statement",
    ast.AugAssign: "an augmented assignment (+=)",
    ast.Global: "a global statement",
    ast.Assert: "an assert statement",
    ast.Raise: "a raise statement",
    ast.Expr: "an expression statement",
}
_EXPR_NAMES = {
    ast.Attribute: "attribute access",
    ast.Lambda: "a lambda",
    ast.Call: "a function call",
    ast.ListComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.IfExp: "a conditional expression",
    ast.Compare: "a comparison",
    ast.BoolOp: "a boolean operator",
    ast.NamedExpr: "an assignment expression",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.Set: "a set",
}


def _snippet(source: str, node: ast.AST) -> str:
    text = ast.get_source_segment(source, node) or ""
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


class _Evaluator:
    """Evaluates the statements of one config file into a dict of module-level names."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self.names: dict[str, Any] = {}

    def refuse(self, node: ast.AST, what: str) -> PoseCliError:
        line = getattr(node, "lineno", "?")
        return PoseCliError(
            f"line {line}: {what} is not allowed (`{_snippet(self.source, node)}`); posecli reads MMPose configs "
            "without running them and accepts only assignments of literal values, dict()/list() and names",
            self.path,
        )

    # ---------------------------------------------------------------------------------------- statements
    def run(self, tree: ast.Module) -> dict[str, Any]:
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign):
                value = self.eval(stmt.value)
                for target in stmt.targets:
                    self.assign(target, value)
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and isinstance(stmt.target, ast.Name):
                self.assign(stmt.target, self.eval(stmt.value))
            elif (
                isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                continue  # a docstring or a bare string used as a comment
            else:
                what = _STATEMENT_NAMES.get(type(stmt), f"a {type(stmt).__name__} statement")
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                    what = "a function call"
                raise self.refuse(stmt, what)
        return {k: v for k, v in self.names.items() if not k.startswith("__")}

    def assign(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.names[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(t, ast.Name) for t in target.elts):
            if not isinstance(value, (list, tuple)) or len(value) != len(target.elts):
                raise self.refuse(target, "unpacking a value of another length")
            for t, v in zip(target.elts, value, strict=True):
                self.names[t.id] = v  # type: ignore[attr-defined]
        else:
            raise self.refuse(target, "assigning to anything but a name")

    # --------------------------------------------------------------------------------------- expressions
    def eval(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            if node.value is not None and not isinstance(node.value, (str, int, float, bool)):
                raise self.refuse(node, f"a {type(node.value).__name__} literal")
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.names:
                return self.names[node.id]
            raise self.refuse(node, f"the name '{node.id}' (not assigned earlier in this file)")
        if isinstance(node, (ast.List, ast.Tuple)):
            items = self.sequence_items(node.elts)
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            out: dict[Any, Any] = {}
            for key, value in zip(node.keys, node.values, strict=True):
                if key is None:  # {**other}
                    out.update(self.mapping(value))
                else:
                    out[self.hashable(key)] = self.eval(value)
            return out
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.eval(node.operand)
            if not _is_number(value):
                raise self.refuse(node, "a sign on something that is not a number")
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node, ast.JoinedStr):
            return self.fstring(node)
        raise self.refuse(node, _EXPR_NAMES.get(type(node), f"a {type(node).__name__} expression"))

    def sequence_items(self, elts: list[ast.expr]) -> list[Any]:
        items: list[Any] = []
        for elt in elts:
            if isinstance(elt, ast.Starred):
                items.extend(self.iterable(elt.value))
            else:
                items.append(self.eval(elt))
            if len(items) > MAX_ITEMS:
                raise self.refuse(elt, f"a list of more than {MAX_ITEMS:,} items")
        return items

    def hashable(self, node: ast.expr) -> Any:
        key = self.eval(node)
        if isinstance(key, (list, dict)):
            raise self.refuse(node, "a list or dict as a dict key")
        return key

    def mapping(self, node: ast.expr) -> dict[Any, Any]:
        value = self.eval(node)
        if not isinstance(value, dict):
            raise self.refuse(node, "** on something that is not a dict")
        return value

    def iterable(self, node: ast.expr) -> list[Any]:
        value = self.eval(node)
        if isinstance(value, dict):
            return list(value)
        if isinstance(value, (list, tuple, range, str)):
            return list(value)
        raise self.refuse(node, "iterating over something that is not a list, tuple, range or string")

    def call(self, node: ast.Call) -> Any:
        func = node.func
        if not isinstance(func, ast.Name) or func.id not in _CALLS or func.id in self.names:
            name = _snippet(self.source, func)
            raise self.refuse(node, f"a call to `{name}` (only dict(), list(), tuple() and range() are read)")
        if func.id == "dict":
            out: dict[Any, Any] = {}
            if len(node.args) > 1:
                raise self.refuse(node, "dict() with more than one positional argument")
            if node.args:
                out.update(self.mapping(node.args[0]))
            for kw in node.keywords:
                if kw.arg is None:
                    out.update(self.mapping(kw.value))
                else:
                    out[kw.arg] = self.eval(kw.value)
            return out
        if node.keywords or len(node.args) > (3 if func.id == "range" else 1):
            raise self.refuse(node, f"{func.id}() with these arguments")
        if func.id == "range":
            bounds = [self.eval(a) for a in node.args]
            if not bounds or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
                raise self.refuse(node, "range() of something but integers")
            if bounds[-1] == 0 and len(bounds) == 3:
                raise self.refuse(node, "range() with step 0")
            result = range(*bounds)
            if len(result) > MAX_ITEMS:
                raise self.refuse(node, f"a range of more than {MAX_ITEMS:,} items")
            return list(result)
        items = self.iterable(node.args[0]) if node.args else []
        return items if func.id == "list" else tuple(items)

    def subscript(self, node: ast.Subscript) -> Any:
        container = self.eval(node.value)
        if isinstance(node.slice, ast.Slice):
            parts = [None if p is None else self.eval(p) for p in (node.slice.lower, node.slice.upper, node.slice.step)]
            if not all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts) or parts[2] == 0:
                raise self.refuse(node, "a slice with bounds that are not integers")
            if not isinstance(container, (list, tuple, str)):
                raise self.refuse(node, "slicing something that is not a list, tuple or string")
            return container[slice(*parts)]
        key = self.eval(node.slice)
        if not isinstance(container, (dict, list, tuple, str)):
            raise self.refuse(node, "subscripting something that is not a dict, list, tuple or string")
        try:
            return container[key]
        except (KeyError, IndexError, TypeError):
            raise self.refuse(node, f"a subscript [{key!r}] that does not exist") from None

    def binop(self, node: ast.BinOp) -> Any:
        left, right = self.eval(node.left), self.eval(node.right)
        op = node.op
        if _is_number(left) and _is_number(right):
            arith = {
                ast.Add: lambda a, b: a + b,
                ast.Sub: lambda a, b: a - b,
                ast.Mult: lambda a, b: a * b,
                ast.Div: lambda a, b: a / b,
                ast.FloorDiv: lambda a, b: a // b,
                ast.Mod: lambda a, b: a % b,
                ast.Pow: _bounded_pow,
            }.get(type(op))
            if arith is None:
                raise self.refuse(node, f"the operator {type(op).__name__}")
            try:
                result = arith(left, right)
            except (ZeroDivisionError, OverflowError, ValueError) as exc:
                raise self.refuse(node, f"arithmetic that fails ({exc})") from None
            if isinstance(result, int) and result.bit_length() > MAX_INT_BITS:
                raise self.refuse(node, "arithmetic with a number this large")
            if isinstance(result, complex) or (isinstance(result, float) and not math.isfinite(result)):
                raise self.refuse(node, "arithmetic without a finite real result")
            return result
        if isinstance(op, ast.Add) and type(left) is type(right) and isinstance(left, (list, tuple, str)):
            result = left + right
        elif isinstance(op, ast.Mult) and isinstance(left, (list, tuple, str)) and is_whole_number(right):
            result = left * right if len(left) * max(right, 0) <= MAX_ITEMS else None
        elif isinstance(op, ast.Mult) and isinstance(right, (list, tuple, str)) and is_whole_number(left):
            result = right * left if len(right) * max(left, 0) <= MAX_ITEMS else None
        else:
            raise self.refuse(
                node, f"the operator {type(op).__name__} on {type(left).__name__}, {type(right).__name__}"
            )
        if result is None or len(result) > MAX_ITEMS:
            raise self.refuse(node, f"a list or string of more than {MAX_ITEMS:,} items")
        return result

    def fstring(self, node: ast.JoinedStr) -> str:
        out = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                out.append(str(part.value))
                continue
            assert isinstance(part, ast.FormattedValue)
            value = self.eval(part.value)
            if not isinstance(value, (str, int, float, bool)) and value is not None:
                raise self.refuse(part, "an f-string field that is not a string or number")
            spec = self.fstring(part.format_spec) if part.format_spec is not None else ""
            text = repr(value) if part.conversion == ord("r") else value
            try:
                out.append(format(text, spec))
            except ValueError as exc:
                raise self.refuse(part, f"an f-string format that fails ({exc})") from None
            if sum(map(len, out)) > MAX_ITEMS:
                raise self.refuse(node, f"a string of more than {MAX_ITEMS:,} characters")
        return "".join(out)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bounded_pow(a: float, b: float) -> float:
    if is_whole_number(a) and is_whole_number(b) and (abs(b) > 256 or abs(a).bit_length() > 64):
        raise OverflowError("exponent or base too large")
    return a**b


# ------------------------------------------------------------------------------------------ files & merging
def _read_source(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise PoseCliError(f"config is larger than {MAX_CONFIG_BYTES // 1024} KB (not an MMPose config?)", path)
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PoseCliError("config file not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PoseCliError(f"cannot read config ({getattr(exc, 'strerror', None) or exc})", path) from None


def _substitute_text(source: str, path: Path) -> tuple[str, dict[str, str]]:
    """mmcv's textual pre-pass: predefined ``{{fileDirname}}``-style variables, ``{{_base_.x}}`` -> placeholders."""
    values = {
        "fileDirname": str(path.parent).replace("\\", "/"),
        "fileBasename": path.name,
        "fileBasenameNoExtension": path.stem,
        "fileExtname": path.suffix,
    }
    source = _PREDEFINED.sub(lambda m: values[m.group(1)], source)
    placeholders: dict[str, str] = {}

    def token(m: re.Match[str]) -> str:
        key = f"__posecli_base_var_{len(placeholders)}__"
        placeholders[key] = m.group(1)
        return f'"{key}"'

    return _BASE_VAR.sub(token, source), placeholders


def _strip_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [_strip_delete(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_strip_delete(v) for v in value)
    return value


def merge_into(child: dict[str, Any], base: dict[str, Any], path: Path, where: str = "") -> dict[str, Any]:
    """mmcv's merge: dicts recursively (child wins), ``_delete_=True`` replaces the base's dict, others replace."""
    out = dict(base)
    for key, value in child.items():
        if key == DELETE_KEY:
            continue
        if isinstance(value, dict) and key in out and not value.get(DELETE_KEY, False):
            if not isinstance(out[key], dict):
                raise PoseCliError(
                    f"'{where}{key}' is a dict here but {with_article(type(out[key]).__name__)} in the base config; "
                    f"set {DELETE_KEY}=True in it to replace the base's value",
                    path,
                )
            out[key] = merge_into(value, out[key], path, f"{where}{key}.")
        else:
            out[key] = _strip_delete(value)
    return out


def _lookup_base(base: dict[str, Any], dotted: str, path: Path) -> Any:
    node: Any = base
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PoseCliError(f"{{{{_base_.{dotted}}}}}: the base configs define no '{dotted}'", path)
        node = node[part]
    return node


def _substitute_values(value: Any, placeholders: dict[str, str], base: dict[str, Any], path: Path) -> Any:
    if isinstance(value, str) and value in placeholders:
        return _lookup_base(base, placeholders[value], path)
    if isinstance(value, dict):
        return {k: _substitute_values(v, placeholders, base, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_values(v, placeholders, base, path) for v in value]
    if isinstance(value, tuple):
        return tuple(_substitute_values(v, placeholders, base, path) for v in value)
    return value


def load_config(path: str | Path) -> dict[str, Any]:
    """Read an MMPose 0.x config file (and its ``_base_`` files) into a plain dict, executing nothing."""
    path = Path(path)
    if path.suffix != ".py":
        raise PoseCliError("only MMPose .py config files can be read", path)
    return _load(path, _read_source(path), ())


def load_config_text(text: str, path: str | Path) -> dict[str, Any]:
    """Like :func:`load_config` for config text that would live at ``path`` (``_base_`` is relative to it)."""
    return _load(Path(path), text, ())


def _load(path: Path, text: str, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        raise PoseCliError("the _base_ chain includes this file twice (a cycle)", path)
    if len(chain) >= MAX_BASE_DEPTH:
        raise PoseCliError(f"_base_ chain deeper than {MAX_BASE_DEPTH} files", path)
    source, placeholders = _substitute_text(text, path)
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise PoseCliError(f"line {exc.lineno}: not valid Python ({exc.msg})", path) from None
    except (ValueError, RecursionError, MemoryError):
        raise PoseCliError("cannot be parsed as Python (nested too deeply or corrupt)", path) from None
    try:
        names = _Evaluator(path, source).run(tree)
    except RecursionError:
        raise PoseCliError("expressions nested too deeply", path) from None

    base_spec = names.pop("_base_", None)
    if base_spec is None:
        if placeholders:
            raise PoseCliError("uses {{_base_.…}} but has no _base_", path)
        return _strip_delete(names)
    base_files = [base_spec] if isinstance(base_spec, str) else base_spec
    if not isinstance(base_files, (list, tuple)) or not all(isinstance(f, str) for f in base_files):
        raise PoseCliError("_base_ must be a file name or a list of file names", path)
    base: dict[str, Any] = {}
    for name in base_files:
        base_path = path.parent / name
        if base_path.suffix != ".py":
            raise PoseCliError(f"_base_ file '{name}': only .py config files can be read", path)
        one = _load(base_path, _read_source(base_path), (*chain, resolved))
        duplicate = sorted(set(one) & set(base))
        if duplicate:
            raise PoseCliError(f"key {duplicate[0]!r} is defined in two _base_ files (mmcv does not allow it)", path)
        base.update(one)
    names = _substitute_values(names, placeholders, base, path)
    return merge_into(names, base, path)
