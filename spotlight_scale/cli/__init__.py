"""Command-line interface: ``spotlight-scale <command>``.

Each command lives in its own module and is a thin call into one pipeline
function. Commands load lazily so ``spotlight-scale --help`` does not import
torch or dask. Expected failures become one ``Error:`` line
(:mod:`spotlight_scale.cli.errors`); ``-v``/``-q`` work before or after the
command name.
"""

from __future__ import annotations

import importlib
import logging

import click

from .. import __version__

#: command name -> "module:attribute" (module relative to this package)
COMMANDS = {
    "synth": "synth:synth",
    "ingest": "ingest:ingest",
    "train": "train:train",
    "predict": "predict:predict",
    "export": "export:export",
    "segment": "segment:segment",
    "profile": "profile:profile",
    "evaluate": "evaluate:evaluate",
    "benchmark": "benchmark:benchmark",
    "deploy": "deploy:deploy",
}


_VERBOSITY = {"verbose": 0, "quiet": False}


def _configure_logging() -> None:
    from ..progress import set_quiet

    verbose, quiet = _VERBOSITY["verbose"], _VERBOSITY["quiet"]
    logging.basicConfig(level=logging.DEBUG if verbose >= 3 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    if quiet:
        logging.getLogger().setLevel(logging.ERROR)
    ours = (logging.ERROR if quiet else logging.WARNING if verbose == 0 else
            logging.INFO if verbose == 1 else logging.DEBUG)
    logging.getLogger("spotlight_scale").setLevel(ours)
    set_quiet(quiet)


def _count_verbose(ctx, param, value):
    if value:
        _VERBOSITY["verbose"] += value
        _configure_logging()


def _set_quiet(ctx, param, value):
    if value:
        _VERBOSITY["quiet"] = True
        _configure_logging()


def verbosity_options(f):
    """``-v``/``--verbose`` (repeatable) and ``-q``/``--quiet``, accepted by the group and
    by every command, before or after its name."""
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet,
                     help="Only errors: no progress lines, no warnings from spotlight-scale.")(f)
    f = click.option("-v", "--verbose", count=True, expose_value=False,
                     callback=_count_verbose,
                     help="More log output: -v info, -vv debug, -vvv debug for Dask too.")(f)
    return f


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use; each one gets the
    verbosity options and runs inside :func:`~spotlight_scale.cli.errors.user_errors`."""

    def parse_args(self, ctx, args):
        _VERBOSITY.update(verbose=0, quiet=False)  # one invocation's flags (tests run many)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        from .errors import interrupts, user_errors

        with interrupts(ctx), user_errors():
            return super().invoke(ctx)

    def list_commands(self, ctx):
        import importlib.util

        return sorted(name for name, target in COMMANDS.items()
                      if importlib.util.find_spec(f"{__name__}.{target.split(':')[0]}"))

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        cmd = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        if not any(p.name == "quiet" for p in cmd.params):
            verbosity_options(cmd)  # appends to cmd.params once per process
        return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="""\b
Examples:
  spotlight-scale synth demo/raw --wells 2 --fields 2
  spotlight-scale ingest demo/raw/manifest.csv demo/store.ome
  spotlight-scale train demo/store.ome demo/runs/spotlight --loss spotlight
  spotlight-scale <command> --help""")
@click.version_option(__version__, prog_name="spotlight-scale")
@verbosity_options
def cli() -> None:
    """Foreground-aware virtual staining (Spotlight) for high-content screens.

    Stages read what the previous stage wrote into one store:
    synth -> ingest -> train -> predict -> segment -> profile -> evaluate.
    """
    _configure_logging()


#: The start of cubic's notice when CuPy/cuCIM are absent.
CUBIC_CPU_NOTICE = "CuPy or CuCIM is not installed"


def quiet_children() -> None:
    """Lines that are not ours stay off the user's terminal: the warning of multiprocessing's
    resource tracker (a child process, which reads ``PYTHONWARNINGS``) about semaphores
    left by Dask worker processes that were stopped."""
    import os
    import warnings

    # cubic (the metrics' reference library) announces on import that it found no CuPy and
    # falls back to the CPU: spotlight_scale.backend is where CPU or GPU is chosen, and says so
    warnings.filterwarnings("ignore", message=CUBIC_CPU_NOTICE, category=UserWarning)
    current = os.environ.get("PYTHONWARNINGS", "")
    for quiet in ("ignore:resource_tracker:UserWarning",
                  f"ignore:{CUBIC_CPU_NOTICE}:UserWarning"):  # Dask workers read it too
        if quiet not in current:
            current = ",".join(filter(None, [current, quiet]))
    os.environ["PYTHONWARNINGS"] = current


def main() -> None:  # console-script entry point
    quiet_children()
    cli(prog_name="spotlight-scale")


if __name__ == "__main__":  # pragma: no cover
    main()
