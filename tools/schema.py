"""A typed function's signature and Google-style docstring as the pydantic model that validates its arguments and
the JSON schema the model reads (smolagents' `@tool`).

The docstring's text before its sections is the tool's description and its `Args:` section describes each
parameter; a parameter annotated `ToolContext` is left out (it is injected, never shown to the model). Pydantic's
generated `title`s are dropped from the schema (`clean_schema`): they cost a small model's context for nothing.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from skills.errors import UserError
from tools.context import ToolContext


@dataclass
class Docstring:
    """A docstring's description (the text before any section) and its Args entries, by parameter name."""

    description: str
    args: dict[str, str]


_SECTION_RE = re.compile(
    r"(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Returns?|Yields?|Raises|Examples?|Notes?"
    r"|Attributes|Todo|Warnings?|See Also|References)\s*:\s*"
)
_ARG_SECTIONS = {"Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments"}
# `name: text`, `name (type): text`, `name (type, optional): text`; `*args` style names are caught later.
_ARG_RE = re.compile(r"(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)")


def parse_docstring(doc: str) -> Docstring:
    """Split a Google-style docstring into its description (the text before any section) and its Args entries."""
    lines = doc.expandtabs().splitlines()
    description: list[str] = []
    args: dict[str, str] = {}
    index = 0
    while index < len(lines) and not _SECTION_RE.fullmatch(lines[index].strip()):
        description.append(lines[index])
        index += 1
    while index < len(lines):
        header = lines[index]
        header_indent = len(header) - len(header.lstrip())
        section = _SECTION_RE.fullmatch(header.strip())
        index += 1
        body: list[str] = []
        while index < len(lines):
            line = lines[index]
            stripped = line.strip()
            indent = len(line) - len(line.lstrip())
            if stripped and indent <= header_indent:
                break
            body.append(line)
            index += 1
        if section is not None and section.group(1) in _ARG_SECTIONS:
            args.update(_parse_args_section(body))
        while index < len(lines) and not _SECTION_RE.fullmatch(lines[index].strip()):
            index += 1  # text after a section that is not itself a section: ignored, like sphinx's napoleon
    return Docstring(description=_paragraphs(description), args=args)


def _parse_args_section(body: list[str]) -> dict[str, str]:
    entries: dict[str, list[str]] = {}
    entry_indent: int | None = None
    current: str | None = None
    for line in body:
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if entry_indent is None:
            entry_indent = indent
        match = _ARG_RE.fullmatch(stripped) if indent <= entry_indent else None
        if match is not None:
            current = match.group(1)
            entries[current] = [match.group(2)]
        elif current is not None:
            entries[current].append(stripped)
    return {name: " ".join(" ".join(parts).split()) for name, parts in entries.items()}


def _paragraphs(lines: list[str]) -> str:
    """Join wrapped lines into one line per paragraph; paragraphs stay separated by a blank line."""
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return "\n\n".join(" ".join(paragraph) for paragraph in paragraphs if paragraph)


def _is_context_type(annotation: Any) -> bool:
    """True for `ToolContext`, a subclass of it, or either of those `| None`."""
    if isinstance(annotation, type):
        return issubclass(annotation, ToolContext)
    if typing.get_origin(annotation) is Annotated:
        return _is_context_type(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return len(members) == 1 and _is_context_type(members[0])
    return False


def _has_description(annotation: Any, default: Any) -> bool:
    """Whether the developer already described the parameter with `Field(description=...)`."""
    if isinstance(default, FieldInfo) and default.description:
        return True
    if typing.get_origin(annotation) is Annotated:
        return any(isinstance(meta, FieldInfo) and meta.description for meta in annotation.__metadata__)
    return False


def arguments_model(
    func: Callable[..., Any], tool_name: str, documented: dict[str, str]
) -> tuple[type[BaseModel], dict[str, str], str | None]:
    """The pydantic model of `func`'s arguments, parameter name -> model attribute, and the context parameter."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as error:
        raise UserError(f"tool {tool_name!r}: cannot read the signature of {func!r}: {error}") from error
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as error:  # NameError for an undefined name; anything else the annotations evaluate to
        raise UserError(
            f"tool {tool_name!r}: cannot resolve the type annotations of {func.__qualname__}: {error}",
            hint="define the types the signature names at module level",
        ) from error

    definitions: dict[str, Any] = {}
    fields: dict[str, str] = {}
    ctx_param: str | None = None
    for index, (param_name, param) in enumerate(signature.parameters.items()):
        where = f"tool {tool_name!r}: parameter {param_name!r}"
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise UserError(
                f"{where}: *args and **kwargs cannot be described to the model",
                hint="list every argument as a named, typed parameter",
            )
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise UserError(f"{where} is positional-only", hint="the model passes arguments by name; drop the '/'")
        if param_name not in hints:
            raise UserError(f"{where} has no type annotation", hint=f"annotate it, e.g. `{param_name}: str`")
        annotation = hints[param_name]
        if _is_context_type(annotation):
            if ctx_param is not None:
                raise UserError(f"{where}: only one parameter may receive the ToolContext")
            ctx_param = param_name
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        extra: dict[str, Any] = {}
        if param_name in documented and not _has_description(annotation, default):
            extra["description"] = documented[param_name]
        # Names pydantic reserves (BaseModel attributes, leading underscores) get an internal name and keep the
        # parameter's own name as alias, which is what the schema shows and what validation reads.
        attr = param_name
        if param_name.startswith(("_", "model_")) or hasattr(BaseModel, param_name):
            attr = f"arg{index}_{param_name.lstrip('_')}"
            extra["alias"] = param_name
        if extra:
            annotation = Annotated[annotation, Field(**extra)]
        definitions[attr] = (annotation, default)
        fields[param_name] = attr

    unknown = sorted(set(documented) - set(signature.parameters))
    if unknown:
        raise UserError(
            f"tool {tool_name!r}: the docstring's Args section describes {', '.join(unknown)}, "
            "which the function does not take",
            hint="fix the docstring so that the model is not told about arguments that do not exist",
        )
    model_name = "".join(part.capitalize() for part in re.split(r"[_\-]+", tool_name) if part) + "Arguments"
    try:
        model = create_model(model_name or "Arguments", __config__=ConfigDict(extra="forbid"), **definitions)
        model.model_json_schema(by_alias=True)
    except Exception as error:  # pydantic's schema errors: a type it cannot validate or describe
        raise UserError(
            f"tool {tool_name!r}: its parameter types cannot be described as JSON schema: {error}",
            hint="use JSON-compatible types (str, int, float, bool, list, dict, Literal, pydantic models)",
        ) from error
    return model, fields, ctx_param


# Keys whose values are data, not schemas: never rewritten.
_DATA_KEYS = {"default", "examples", "const", "enum"}
# Keys whose values map names to schemas: the names are kept even when a property is called "title".
_MAPPING_KEYS = {"properties", "$defs", "definitions", "patternProperties"}


def clean_schema(schema: Any) -> Any:
    """Drop pydantic's generated `title`s: they repeat the names and cost a small model's context for nothing."""
    if isinstance(schema, list):
        return [clean_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _DATA_KEYS:
            cleaned[key] = value
        elif key in _MAPPING_KEYS and isinstance(value, dict):
            cleaned[key] = {name: clean_schema(sub) for name, sub in value.items()}
        else:
            cleaned[key] = clean_schema(value)
    return cleaned
