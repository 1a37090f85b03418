"""Every ``evomm_*`` hook, in one file. Implement them in a plugin with ``@evomm.hookimpl``.

Plugins are found through the entry-point group ``evomm`` (built-in plugins too), or as one-file
plugins in a ``--plugins-dir``. Misspelt hook implementations are errors (``check_pending``).
docs/hooks.md has one section per hook, with an example.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from evomm.adapters import ModelAdapter
    from evomm.cli.command import Command
    from evomm.executors import ExecutorKind
    from evomm.operators import MergeOperator
    from evomm.records import CandidateRecord, RunInfo
    from evomm.registry import Registry
    from evomm.space import SpaceKind
    from evomm.tasks import Task

PROJECT = "evomm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------------------------------
# registration hooks: called once, when the plugin manager is created
# -------------------------------------------------------------------------------------------------


@hookspec
def evomm_register_model_adapters(registry: Registry[type[ModelAdapter]]) -> None:
    """Add model adapters (:class:`evomm.adapters.ModelAdapter` subclasses) to ``registry``.

    Called once per plugin manager, before any model is opened.

    Example::

        @hookimpl
        def evomm_register_model_adapters(registry):
            registry.add(HFCausalLMAdapter)

    .. versionadded:: 0.1
    """


@hookspec
def evomm_register_merge_operators(registry: Registry[type[MergeOperator]]) -> None:
    """Add merge operators (:class:`evomm.operators.MergeOperator` subclasses) to ``registry``.

    Called once per plugin manager, before a recipe is validated.

    Example::

        @hookimpl
        def evomm_register_merge_operators(registry):
            registry.add(TiesOperator)

    .. versionadded:: 0.1
    """


@hookspec
def evomm_register_tasks(registry: Registry[type[Task]]) -> None:
    """Add fitness tasks (:class:`evomm.tasks.Task` subclasses) to ``registry``.

    Called once per plugin manager, before a recipe's objectives are resolved.

    Example::

        @hookimpl
        def evomm_register_tasks(registry):
            registry.add(JaMathTask)

    .. versionadded:: 0.1
    """


@hookspec
def evomm_register_search_spaces(registry: Registry[SpaceKind]) -> None:
    """Add kinds of search space (:class:`evomm.space.SpaceKind`) to ``registry``: a stage with
    ``kind: NAME`` is searched in the :class:`~evomm.space.SearchSpace` its factory builds.

    Called once per plugin manager; ``params`` (parameter-space merging) is already there. Build
    nothing heavy here: the factory runs when a stage starts.

    Example::

        @hookimpl
        def evomm_register_search_spaces(registry):
            registry.add(SpaceKind("dfs", build_dfs_space, "data-flow space: layer paths"))

    .. versionadded:: 0.2
    """


@hookspec
def evomm_register_commands(registry: Registry[Command]) -> None:
    """Add subcommands to the ``evomm`` command line (:class:`evomm.cli.command.Command`).

    Called once per plugin manager; the command line is built from the registry when ``evomm``
    starts (``--help`` included), so import nothing heavy here: import what a command needs in
    the function it runs. A name evomm already has (``merge``, ``evolve``...) is an error.

    Example::

        @hookimpl
        def evomm_register_commands(registry):
            registry.add(Command("zoo", add_parser))  # add_parser(subparsers) sets func

    .. versionadded:: 0.2
    """


@hookspec
def evomm_register_executors(registry: Registry[ExecutorKind]) -> None:
    """Add executors (:class:`evomm.executors.ExecutorKind`): where a run's candidates are
    scored. ``local``, ``processes`` and ``ray`` are already there; the recipe's
    ``executor: {name: NAME, workers: N}`` (or ``evomm evolve --executor NAME``) picks one.

    Called once per plugin manager. The factory receives an
    :class:`~evomm.executors.ExecutorContext` (settings, a picklable
    :class:`~evomm.executors.WorkerSpec` whose ``build()`` makes a worker, the driver's local
    worker) and returns an :class:`~evomm.executors.Executor` whose ``run(jobs, before)`` yields
    ``(index, JobResult)`` as jobs finish; the driver archives in ask order whatever the order.

    Example::

        @hookimpl
        def evomm_register_executors(registry):
            registry.add(ExecutorKind("threads", ThreadExecutor, "a thread pool"))

    .. versionadded:: 0.3
    """


# -------------------------------------------------------------------------------------------------
# lifecycle hooks: called by the evolution loop; return values are ignored
# -------------------------------------------------------------------------------------------------


@hookspec
def evomm_candidate_evaluated(run: RunInfo, record: CandidateRecord) -> None:
    """Called after each candidate is evaluated and its record is flushed to the archive.

    Example::

        @hookimpl
        def evomm_candidate_evaluated(run, record):
            print(record.id, record.objectives)

    .. versionadded:: 0.1
    """


@hookspec
def evomm_generation_end(run: RunInfo, generation: int, front: list[CandidateRecord]) -> None:
    """Called when a generation is complete and the algorithm state is checkpointed;
    ``front`` is the current Pareto front (non-dominated archived candidates).

    Example::

        @hookimpl
        def evomm_generation_end(run, generation, front):
            print(f"generation {generation}: {len(front)} on the front")

    .. versionadded:: 0.1
    """


@hookspec
def evomm_run_end(run: RunInfo, front: list[CandidateRecord], reason: str) -> None:
    """Called once when a run stops; ``reason`` is ``"budget"``, ``"interrupted"`` or ``"error"``.

    Example::

        @hookimpl
        def evomm_run_end(run, front, reason):
            (run.run_dir / "DONE").write_text(reason)

    .. versionadded:: 0.1
    """
