"""Run the real Pulumi program (`__main__.py`) on Pulumi's mock engine, in-process and isolated.

No Pulumi CLI, no credentials, no network: the program reads its stack through `pulumi.Config`
exactly as under `pulumi preview`, and `CloudMocks` stands in for the engine and Google Cloud.

Isolation, so that a process can plan any number of times (tests do):
- The Pulumi SDK keeps its runtime state (settings, config, the root stack) in context variables.
  Each run happens inside a fresh copy of the caller's context, with that state reset first; the
  caller's context is never touched, whatever the run leaves behind.
- Each run happens on its own short-lived thread, with its own event loop and its own bounded
  worker pool (the mock monitor answers on worker threads), all shut down before the run returns.
  The caller's thread and event loop (even a running one) are never used.
- Completion is deterministic: `run_pulumi_func` is what `@pulumi.runtime.test` and the language
  host use. It waits until no RPC is outstanding and every Output task has finished (repeating
  while new ones appear), and re-raises the program's exception after that wait.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import runpy
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pulumi
import yaml
from pulumi.runtime import settings
from pulumi.runtime.stack import Stack, run_pulumi_func

from cnctl.config.loader import ROOT
from cnctl.plan.mocks import CloudMocks, Registration

PROGRAM = ROOT / "__main__.py"
PROJECT_FILE = ROOT / "Pulumi.yaml"

# The mock monitor serves each RPC on a worker thread; a few are enough and bound the run's threads.
WORKERS = 4

T = TypeVar("T")


# Resource options the plan reports: they decide what a replacement or a destroy does to a resource.
RECORDED_OPTIONS = {"protect": "protect", "delete_before_replace": "deleteBeforeReplace"}

OptionsRecord = dict[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True)
class ProgramRun:
    """What one run of the program declared (sorted by type, then name) and what it exported.

    `options`: per (type token, name) of a custom resource, the RECORDED_OPTIONS it set.
    """

    registrations: tuple[Registration, ...]
    outputs: Mapping[str, Any]
    options: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)


def project_name() -> str:
    """The Pulumi project name, from Pulumi.yaml (its one copy)."""
    return str(yaml.safe_load(PROJECT_FILE.read_text(encoding="utf-8"))["name"])


def engine_config(config: Mapping[str, Any]) -> dict[str, str]:
    """Stack-file config as the engine hands it to a program: strings as they are, the rest as JSON."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}


def run_program(config: Mapping[str, Any], *, stack: str, program: Path = PROGRAM) -> ProgramRun:
    """Run `program` for `stack` with the stack file's `config:` mapping; raise what the program raises."""
    engine_values = engine_config(config)

    def run(loop: asyncio.AbstractEventLoop) -> ProgramRun:
        pulumi.runtime.set_all_config(engine_values, [])
        mocks = CloudMocks()
        pulumi.runtime.set_mocks(mocks, project=project_name(), stack=stack, preview=True)
        root = settings.get_root_resource()
        assert isinstance(root, Stack)
        options: OptionsRecord = {}
        pulumi.runtime.register_stack_transformation(_recording_options(options))

        def main() -> None:
            runpy.run_path(str(program), run_name="__main__")  # as the language host runs it

        loop.run_until_complete(run_pulumi_func(main))
        outputs = loop.run_until_complete(_resolve(root.outputs))
        return ProgramRun(tuple(mocks.registrations), outputs, options)

    return in_fresh_runtime(run)


def _recording_options(record: OptionsRecord) -> Callable[[pulumi.ResourceTransformationArgs], None]:
    """A stack transformation that writes each custom resource's RECORDED_OPTIONS into `record`.

    The mock engine is not told a resource's options, so the plan reads them where the SDK applies
    them; the transformation changes nothing.
    """

    def transformation(args: pulumi.ResourceTransformationArgs) -> None:
        if not isinstance(args.resource, pulumi.CustomResource):
            return
        chosen = {key: getattr(args.opts, attr) for attr, key in RECORDED_OPTIONS.items()}
        chosen = {key: value for key, value in chosen.items() if value is not None}
        if chosen:
            record[(args.type_, args.name)] = chosen

    return transformation


def in_fresh_runtime(fn: Callable[[asyncio.AbstractEventLoop], T]) -> T:
    """`fn(loop)` on a thread of its own, in a copy of the caller's context, with a fresh Pulumi runtime.

    Nothing of the run reaches the caller: not its context variables, not its thread's event loop
    (which may even be running). `fn`'s exception is re-raised here.
    """
    context = contextvars.copy_context()
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(context.run(_with_fresh_runtime, fn))
        except BaseException as exc:  # noqa: BLE001 re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name="cnctl-plan", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _with_fresh_runtime(fn: Callable[[asyncio.AbstractEventLoop], T]) -> T:
    workers = _WorkerLoops()
    loop = asyncio.new_event_loop()
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="cnctl-plan", initializer=workers.start_worker)
    )
    asyncio.set_event_loop(loop)  # this thread's, which ends with the run
    # Reset what the caller's context may hold (a previous program, a test's own set_mocks):
    # `set_mocks` installs fresh settings but keeps the tracked-Output set and the root stack.
    settings.ROOT.set(None)
    settings.SETTINGS.outputs = set()
    try:
        return fn(loop)
    finally:
        _close(loop)  # joins the worker threads
        workers.close()


class _WorkerLoops:
    """The event loops of the worker threads, made up front so that they can be closed afterwards.

    The mock monitor needs a loop on each worker thread (to (de)serialize properties); the SDK would
    create one on demand and never close it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loops: list[asyncio.AbstractEventLoop] = []

    def start_worker(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        with self._lock:
            self._loops.append(loop)

    def close(self) -> None:
        with self._lock:
            for loop in self._loops:
                loop.close()


async def _resolve(exports: Mapping[str, Any]) -> dict[str, Any]:
    """The stack outputs as plain values (an unknown value, which the mocks never produce, is None)."""
    resolved = await pulumi.Output.from_input(dict(exports)).future()
    return dict(resolved or {})


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what a failed run left pending, join the worker threads, close the loop."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()
