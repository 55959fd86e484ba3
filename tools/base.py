"""Tools as data: the `@tool` decorator, the `Tool` it builds, its `ToolResult`, and the `ToolRegistry`.

A tool is a typed Python function whose signature and Google-style docstring become a JSON schema the model reads
(smolagents' `@tool`). Arguments are validated by a pydantic model built from the signature before the function
runs, and everything that can go wrong while running a tool (bad arguments, an exception, a timeout) comes back as a
`ToolResult` with `ok=False` and a message for the model: the model's mistakes are data, not crashes. Only the
developer's mistakes (an untyped parameter, a duplicate name) raise, as `UserError`, when the tool is defined or
registered.

Tools receive their dependencies (the workspace folder, the run id, anything else) through a `ToolContext`
parameter that is injected and never shown to the model (pydantic-ai's `RunContext`), not through globals.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import re
import threading
import time
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, overload

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic.fields import FieldInfo

from skills.errors import UserError

# Tool names: what OpenAI-style function calling accepts, so that schemas work unchanged with other engines.
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")


def validate_tool_name(name: object) -> str:
    """Return `name` if it is a valid tool name, else raise `UserError` saying what a valid one looks like."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise UserError(
            f"invalid tool name {name!r}",
            hint="use 1-64 characters of letters, digits, '_' or '-', starting with a letter or '_'",
        )
    return name


# Code points that are not text: halves of UTF-16 pairs. Python strings hold them alone when bytes were decoded with
# `surrogateescape` (os.fsdecode of a non-UTF-8 file name, os.listdir, sys.argv) or JSON wrote "\udcff".
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def valid_text(text: str) -> str:
    """`text` as valid Unicode, which UTF-8, JSON and a trajectory can hold: each lone surrogate becomes an escape.

    A surrogate that `surrogateescape` made of a byte becomes that byte's escape (the file `b"caf\\xe9.txt"` reads
    `caf\\xe9.txt`), any other `\\udXXX`. Valid text is returned as is.
    """
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(_escape_surrogate, text)


@dataclass(frozen=True)
class ToolContext:
    """What a tool may depend on during one run, passed in by the caller of `invoke` (never a global).

    A tool asks for it with a parameter annotated `ToolContext` (by convention named `ctx`); that parameter is
    filled in by `invoke` and does not appear in the schema the model sees.
    """

    workspace: Path | None = None
    """The folder the workspace file tools are confined to; `None` means file tools refuse to run."""
    run_id: str | None = None
    """An identifier of the current agent run, for tools that log or cache per run."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Anything else a custom tool needs (a database handle, a client, ...), by name."""

    def __post_init__(self) -> None:
        if self.workspace is not None and not isinstance(self.workspace, Path):
            object.__setattr__(self, "workspace", Path(self.workspace))


class ToolError(Exception):
    """Raise inside a tool to tell the model what went wrong: the message becomes the result's `error` as is.

    Any other exception also becomes an error result, but prefixed with its type name; use `ToolError` for
    messages written for the model ("no such file: notes.txt").
    """


class ToolResult(BaseModel):
    """What one tool invocation produced. `invoke` always returns one; it never raises for the model's mistakes."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the tool that was invoked")
    arguments: dict[str, Any] = Field(default_factory=dict, description="the arguments as given (before validation)")
    ok: bool = Field(description="whether the tool ran to completion")
    output: str = Field("", description="the tool's return value; anything but a str is JSON-serialized")
    error: str | None = Field(None, description="why it failed, written for the model; None when ok")
    seconds: float = Field(0.0, ge=0.0, description="wall time of validation and the call")

    @field_validator("output", "error")
    @classmethod
    def _valid_text(cls, text: str | None) -> str | None:
        """Every tool's output and error is made valid text here, where it enters the agent: a file name or an
        exception message with undecodable bytes must not make the trajectory unserializable."""
        return None if text is None else valid_text(text)

    def observation(self) -> str:
        """The text to show the model: the output, or the error prefixed with `error:`."""
        return self.output if self.ok else f"error: {self.error}"


# Seconds a cancelled async tool gets to finish before `invoke` stops waiting for its event loop.
_CANCEL_GRACE = 1.0
# Bounds on an error the model reads, so that one bad call cannot flood its context (100k bad list items made a
# 9.7 MB message): the first few validation problems, each cut, then a count; an exception's message, cut.
MAX_PROBLEMS = 5
_PROBLEM_CHARS = 300
_MESSAGE_CHARS = 2_000


class _TimedOut(Exception):
    """Internal: the call did not finish within the timeout (kept apart from a `TimeoutError` the tool raises)."""


# Keyword arguments ready for the function, or the message explaining why the arguments were refused.
_Prepared = dict[str, Any] | str


class Tool:
    """A function the model can call: its name, description, JSON schema of arguments, and how to run it.

    Build one with `@tool` (from a typed function) or `from_langchain` (from a LangChain `BaseTool`). Calling the
    `Tool` object itself calls the wrapped function unchanged, so decorated functions stay usable as functions.
    """

    def __init__(
        self,
        *,
        name: str,
        description: str,
        parameters: Mapping[str, Any],
        func: Callable[..., Any] | None = None,
        afunc: Callable[..., Awaitable[Any]] | None = None,
        args_model: type[BaseModel] | None = None,
        fields: Mapping[str, str] | None = None,
        ctx_param: str | None = None,
    ) -> None:
        """Most code should use `@tool` or `from_langchain` instead.

        Args:
            name: the name the model calls the tool by.
            description: what the tool does, for the model.
            parameters: JSON schema (an object schema) of the arguments.
            func: the synchronous implementation, called with keyword arguments.
            afunc: the asynchronous implementation; give `func`, `afunc` or both.
            args_model: a pydantic model that validates the arguments before the call; None validates nothing
                beyond "the arguments are an object".
            fields: parameter name -> attribute of `args_model`: the function receives the validated values. Without
                it the function receives the arguments as given (after they passed validation).
            ctx_param: the name of the parameter that receives the `ToolContext`, if any.
        """
        if func is None and afunc is None:
            raise UserError(f"tool {name!r} has no implementation", hint="pass func or afunc")
        self.name = validate_tool_name(name)
        if not description or not description.strip():
            raise UserError(f"tool {name!r} has no description", hint="write a docstring or pass description= to @tool")
        self.description = description.strip()
        self.parameters: dict[str, Any] = dict(parameters)
        self.args_model = args_model
        self._func = func
        self._afunc = afunc
        self._fields = dict(fields) if fields is not None else None
        self.ctx_param = ctx_param

    # -------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_function(
        cls, func: Callable[..., Any], *, name: str | None = None, description: str | None = None
    ) -> Tool:
        """Build a tool from a typed function with a Google-style docstring (what `@tool` does)."""
        if not callable(func):
            raise UserError(f"@tool needs a function, got {type(func).__name__}")
        tool_name = validate_tool_name(name if name is not None else getattr(func, "__name__", ""))
        doc = _parse_docstring(inspect.getdoc(func) or "")
        args_model, fields, ctx_param = _arguments_model(func, tool_name, doc.args)
        is_async = inspect.iscoroutinefunction(func)
        return cls(
            name=tool_name,
            description=description if description is not None else doc.description,
            parameters=_clean_schema(args_model.model_json_schema(by_alias=True)),
            func=None if is_async else func,
            afunc=func if is_async else None,
            args_model=args_model,
            fields=fields,
            ctx_param=ctx_param,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function directly: no validation, no context injection, no timeout."""
        function = self._func if self._func is not None else self._afunc
        assert function is not None  # __init__ guarantees one of them
        return function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, parameters={sorted(self.parameters.get('properties', {}))})"

    @property
    def is_async(self) -> bool:
        """Whether the implementation is a coroutine function (it then runs on an event loop)."""
        return self._func is None

    def openai_schema(self) -> dict[str, Any]:
        """The tool in OpenAI's function-calling format, which chat templates and the system prompt use."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def check_arguments(self, arguments: object) -> str | None:
        """Why `arguments` would be refused (a message naming the tool and the field), or None if they are valid."""
        prepared = self._prepare(arguments)
        return prepared if isinstance(prepared, str) else None

    # -------------------------------------------------------------------------------------------------------------

    def invoke(
        self, arguments: Mapping[str, Any] | None = None, ctx: ToolContext | None = None, timeout: float | None = None
    ) -> ToolResult:
        """Validate `arguments`, run the tool and return a `ToolResult`; never raises for the model's mistakes.

        With a `timeout` (seconds), a synchronous tool runs in a daemon worker thread. Python cannot kill a thread:
        a tool that hangs past its timeout is abandoned (it keeps running in the background until it returns, and
        does not keep the process alive at exit). An asynchronous tool is cancelled instead, on an event loop in a
        thread of its own, which is likewise abandoned if the tool blocks that loop or ignores the cancellation.
        Without a timeout a synchronous tool runs in the calling thread.
        """
        _check_timeout(timeout)
        start = time.perf_counter()
        prepared = self._prepare(arguments)
        if isinstance(prepared, str):
            return self._result(arguments, start, error=prepared)
        kwargs = self._with_context(prepared, ctx)
        try:
            if self._func is not None:
                value = self._run_sync(self._func, kwargs, timeout)
            else:
                value = _run_blocking(lambda: self._run_async(kwargs, timeout), timeout)
        except Exception as error:  # every failure of a tool is reported to the model
            return self._result(arguments, start, error=self._describe(error, timeout))
        return self._result(arguments, start, value=value)

    async def ainvoke(
        self, arguments: Mapping[str, Any] | None = None, ctx: ToolContext | None = None, timeout: float | None = None
    ) -> ToolResult:
        """Like `invoke`, on the running event loop.

        Synchronous tools run in a daemon worker thread, so they never block the loop; with a timeout they are
        abandoned as in `invoke`. An asynchronous tool is cancelled at its timeout; one that blocks the loop itself
        (calls `time.sleep`, say) blocks the caller too, which no timeout can prevent on a shared loop.
        """
        _check_timeout(timeout)
        start = time.perf_counter()
        prepared = self._prepare(arguments)
        if isinstance(prepared, str):
            return self._result(arguments, start, error=prepared)
        kwargs = self._with_context(prepared, ctx)
        try:
            value = await self._run_async(kwargs, timeout)
        except Exception as error:  # every failure of a tool is reported to the model
            return self._result(arguments, start, error=self._describe(error, timeout))
        return self._result(arguments, start, value=value)

    # -------------------------------------------------------------------------------------------------------------

    def _prepare(self, arguments: object) -> _Prepared:
        """Validated keyword arguments for the function, or the message saying why the arguments are refused."""
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            return (
                f"invalid arguments for tool {self.name!r}: expected a JSON object of named arguments, "
                f"got {type(arguments).__name__}"
            )
        if any(not isinstance(key, str) for key in arguments):
            return f"invalid arguments for tool {self.name!r}: argument names must be strings"
        if self.args_model is None:
            return dict(arguments)
        try:
            validated = self.args_model.model_validate(dict(arguments))
        except ValidationError as error:
            return _describe_validation_error(self.name, error, self.parameters)
        if self._fields is None:
            return dict(arguments)
        return {param: getattr(validated, attr) for param, attr in self._fields.items()}

    def _with_context(self, kwargs: dict[str, Any], ctx: ToolContext | None) -> dict[str, Any]:
        if self.ctx_param is not None:
            kwargs[self.ctx_param] = ctx if ctx is not None else ToolContext()
        return kwargs

    def _run_sync(self, func: Callable[..., Any], kwargs: dict[str, Any], timeout: float | None) -> Any:
        if timeout is None:
            return func(**kwargs)
        future = _in_daemon_thread(lambda: func(**kwargs), name=f"tool-{self.name}")
        done, _ = concurrent.futures.wait([future], timeout=timeout)
        if not done:
            raise _TimedOut
        return future.result()

    async def _run_async(self, kwargs: dict[str, Any], timeout: float | None) -> Any:
        if self._afunc is not None:
            task: asyncio.Future[Any] = asyncio.ensure_future(self._afunc(**kwargs))
        else:
            func = self._func
            assert func is not None
            task = asyncio.wrap_future(_in_daemon_thread(lambda: func(**kwargs), name=f"tool-{self.name}"))
        if timeout is None:
            return await task
        # asyncio.wait rather than wait_for: a TimeoutError raised by the tool itself must not read as our timeout.
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            # Give the cancelled coroutine a moment to clean up, but never wait on one that ignores cancellation.
            await asyncio.wait({task}, timeout=0.1)
            raise _TimedOut
        return task.result()

    def _describe(self, error: Exception, timeout: float | None) -> str:
        if isinstance(error, _TimedOut):
            return f"tool {self.name!r} timed out after {timeout:g} s"
        if isinstance(error, ToolError):
            return f"tool {self.name!r}: {_cut(str(error), _MESSAGE_CHARS)}"
        return f"tool {self.name!r} raised {type(error).__name__}: {_cut(str(error), _MESSAGE_CHARS)}"

    def _result(self, arguments: object, start: float, *, value: Any = None, error: str | None = None) -> ToolResult:
        return ToolResult(
            name=self.name,
            arguments={str(key): value for key, value in arguments.items()} if isinstance(arguments, Mapping) else {},
            ok=error is None,
            output="" if error is not None else _to_text(value),
            error=error,
            seconds=time.perf_counter() - start,
        )


# ---------------------------------------------------------------------------------------------------------------
# The decorator.


@overload
def tool(func: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    func: None = None, /, *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    func: Callable[..., Any] | None = None, /, *, name: str | None = None, description: str | None = None
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a typed function (sync or async) with a Google-style docstring into a `Tool`.

    Usable bare (`@tool`) or with overrides (`@tool(name="search", description="...")`). The docstring's text
    before its sections is the description; its `Args:` section describes each parameter. Every parameter needs a
    type annotation; a parameter annotated `ToolContext` is injected by `invoke` and hidden from the model.

    Example:
        ```python
        @tool
        def add(a: int, b: int = 0) -> int:
            \"\"\"Add two integers.

            Args:
                a: the first addend.
                b: the second addend.
            \"\"\"
            return a + b
        ```
    """
    if func is not None:
        return Tool.from_function(func, name=name, description=description)

    def decorate(function: Callable[..., Any]) -> Tool:
        return Tool.from_function(function, name=name, description=description)

    return decorate


# ---------------------------------------------------------------------------------------------------------------
# The registry.


class ToolRegistry:
    """The tools one agent may call, by name. Tools join through `register`, which refuses duplicates.

    `register` also accepts a LangChain `BaseTool` (converted with `from_langchain`); langchain-core is only
    imported when such an object is registered.
    """

    def __init__(self, tools: Iterable[Any] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.register(item)

    def register(self, item: Any) -> Tool:
        """Add a `Tool` (or a LangChain `BaseTool`) and return the `Tool` registered; refuses a taken name."""
        if not isinstance(item, Tool):
            from tools.langchain import is_langchain_tool

            if not is_langchain_tool(item):
                hint = "decorate the function with @tool first" if callable(item) else "pass a Tool"
                raise UserError(f"cannot register {item!r}: it is not a Tool", hint=hint)
            from tools.langchain import from_langchain

            item = from_langchain(item)
        validate_tool_name(item.name)
        if item.name in self._tools:
            raise UserError(f"a tool named {item.name!r} is already registered", hint="rename one of them")
        self._tools[item.name] = item
        return item

    def get(self, name: str) -> Tool:
        """The tool called `name`; `UserError` listing the known names if there is none."""
        try:
            return self._tools[name]
        except (KeyError, TypeError):
            known = ", ".join(self._tools) or "none"
            raise UserError(f"unknown tool {name!r}; registered tools: {known}") from None

    def names(self) -> list[str]:
        """Names of the registered tools, in registration order."""
        return list(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        """Every tool's `openai_schema()`, in registration order: what the system prompt lists."""
        return [registered.openai_schema() for registered in self._tools.values()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({self.names()!r})"


# ---------------------------------------------------------------------------------------------------------------
# Signature and docstring -> pydantic model and JSON schema.


@dataclass
class _Docstring:
    description: str
    args: dict[str, str]


_SECTION_RE = re.compile(
    r"(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Returns?|Yields?|Raises|Examples?|Notes?"
    r"|Attributes|Todo|Warnings?|See Also|References)\s*:\s*"
)
_ARG_SECTIONS = {"Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments"}
# `name: text`, `name (type): text`, `name (type, optional): text`; `*args` style names are caught later.
_ARG_RE = re.compile(r"(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)")


def _parse_docstring(doc: str) -> _Docstring:
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
    return _Docstring(description=_paragraphs(description), args=args)


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


def _arguments_model(
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


def _clean_schema(schema: Any) -> Any:
    """Drop pydantic's generated `title`s: they repeat the names and cost a small model's context for nothing."""
    if isinstance(schema, list):
        return [_clean_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _DATA_KEYS:
            cleaned[key] = value
        elif key in _MAPPING_KEYS and isinstance(value, dict):
            cleaned[key] = {name: _clean_schema(sub) for name, sub in value.items()}
        else:
            cleaned[key] = _clean_schema(value)
    return cleaned


# ---------------------------------------------------------------------------------------------------------------
# Running and reporting.


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
        raise UserError(f"timeout must be a positive number of seconds or None, got {timeout!r}")


def _in_daemon_thread(func: Callable[[], Any], *, name: str) -> concurrent.futures.Future[Any]:
    """Run `func` in a new daemon thread (with the caller's context variables) and return its future.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so one hung tool would hang the process.
    """
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = context.run(func)
        except BaseException as error:  # handed to whoever waits on the future
            future.set_exception(error)
        else:
            future.set_result(result)

    threading.Thread(target=target, name=f"habitloop-{name}", daemon=True).start()
    return future


def _run_blocking(make_coroutine: Callable[[], Awaitable[Any]], timeout: float | None) -> Any:
    """Run a coroutine to completion from synchronous code, even when this thread already runs an event loop.

    With a timeout the event loop runs in a daemon thread that is abandoned `_CANCEL_GRACE` seconds after the
    timeout: an async tool that blocks its loop (a `time.sleep` inside) or ignores cancellation cannot hang `invoke`.
    """

    async def main() -> Any:
        return await make_coroutine()

    if timeout is None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(main())
    # A timeout, or a loop already running here (a notebook, an async caller using the sync API): a fresh loop in a
    # thread of its own.
    future = _in_daemon_thread(lambda: asyncio.run(main()), name="async-tool")
    done, _ = concurrent.futures.wait([future], timeout=None if timeout is None else timeout + _CANCEL_GRACE)
    if not done:
        raise _TimedOut
    return future.result()


def _to_text(value: Any) -> str:
    """A tool's return value as the text the model reads: str as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        return pydantic_core.to_json(value, fallback=str).decode()
    except Exception:  # a value even the fallback cannot serialize (e.g. a non-str dict key type)
        return str(value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any, limit: int = 80) -> str:
    return _cut(repr(value), limit)


def _describe_validation_error(name: str, error: ValidationError, parameters: Mapping[str, Any]) -> str:
    """One clause per problem, e.g. `invalid arguments for tool 'add': 'a': Input should be a valid integer (got
    'x')`; at most `MAX_PROBLEMS` of them, each cut, then how many more there are."""
    known = ", ".join(parameters.get("properties", {})) or "none"
    problems = []
    for item in error.errors(include_url=False)[:MAX_PROBLEMS]:
        location = _short(".".join(str(part) for part in item["loc"]) or "arguments")
        if item["type"] == "missing":
            problem = f"{location}: required argument is missing"
        elif item["type"] == "extra_forbidden":
            problem = f"{location}: unknown argument (the tool takes: {known})"
        else:
            problem = f"{location}: {item['msg']} (got {_short(item.get('input'))})"
        problems.append(_cut(problem, _PROBLEM_CHARS))
    more = error.error_count() - len(problems)
    return (
        f"invalid arguments for tool {name!r}: "
        + "; ".join(problems)
        + (f"; and {more:,} more problems" if more else "")
    )
