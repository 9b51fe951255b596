"""Command-line interface: ``spotlight-scale <command>``.

Each command lives in its own module and is a thin call into one pipeline
function. Commands load lazily so ``spotlight-scale --help`` does not import
torch or dask.
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


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx):
        import importlib.util

        return sorted(name for name, target in COMMANDS.items()
                      if importlib.util.find_spec(f"{__name__}.{target.split(':')[0]}"))

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="""\b
Examples:
  spotlight-scale synth demo/raw --wells 2 --fields 2
  spotlight-scale ingest demo/raw/manifest.csv demo/store.ome
  spotlight-scale train demo/store.ome demo/runs/spotlight --loss spotlight
  spotlight-scale <command> --help""")
@click.version_option(__version__, prog_name="spotlight-scale")
@click.option("-v", "--verbose", count=True, help="More log output: -v info, -vv debug, -vvv debug for Dask too.")
def cli(verbose: int) -> None:
    """Foreground-aware virtual staining (Spotlight) for high-content screens.

    Stages read what the previous stage wrote into one store:
    synth -> ingest -> train -> predict -> segment -> profile -> evaluate.
    """
    logging.basicConfig(level=logging.DEBUG if verbose >= 3 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.getLogger("spotlight_scale").setLevel(ours)


def main() -> None:  # console-script entry point
    cli(prog_name="spotlight-scale")


if __name__ == "__main__":  # pragma: no cover
    main()
