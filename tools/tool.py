"""Tools as data: the `@tool` decorator, the `Tool` it builds, and the `ToolResult` of running one.

A tool is a typed Python function whose signature and Google-style docstring become a JSON schema the model reads
(smolagents' `@tool`). Arguments are validated by a pydantic model built from the signature before the function
runs, and everything that can go wrong while running a tool (bad arguments, an exception, a timeout) comes back as a
`ToolResult` with `ok=False` and a message for the model: the model's mistakes are data, not crashes. Only the
developer's mistakes (an untyped parameter, a duplicate name) raise, as `UserError`, when the tool is defined or
registered. The schema is built in `tools.schema`, the context is `tools.context`, the registry `tools.registry`.

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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, overload

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from skills.errors import UserError
from tools.context import ToolContext
from tools.errors import ToolError
from tools.schema import arguments_model, clean_schema, parse_docstring

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
        doc = parse_docstring(inspect.getdoc(func) or "")
        args_model, fields, ctx_param = arguments_model(func, tool_name, doc.args)
        is_async = inspect.iscoroutinefunction(func)
        return cls(
            name=tool_name,
            description=description if description is not None else doc.description,
            parameters=clean_schema(args_model.model_json_schema(by_alias=True)),
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
