"""Commands that applications add to `txoutbox`, found in the entry-point group `txoutbox.cli`.

An application declares, in its pyproject:

    [project.entry-points."txoutbox.cli"]
    api = "flights.cli:api"          # the value is a click.Command or click.Group object

The root group lists plugin names without importing them and loads one only when it is run (or when the
help lists them), so `txoutbox status` never imports a web framework. A plugin that fails to import is
skipped with one warning line naming it: the library's own commands keep working.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import click

ENTRY_POINT_GROUP = "txoutbox.cli"


class PluginGroup(click.Group):
    """A click group whose extra commands come from installed entry points."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._entries: dict[str, metadata.EntryPoint] | None = None
        self._loaded: dict[str, click.Command | None] = {}

    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        if self._entries is None:
            self._entries = {}
            for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
                self._entries.setdefault(entry.name, entry)  # the first installed distribution wins a name
        return self._entries

    def _plugin(self, name: str) -> click.Command | None:
        if name in self._loaded:
            return self._loaded[name]
        entry = self._entry_points().get(name)
        command: click.Command | None = None
        if entry is not None:
            try:
                loaded = entry.load()
            except Exception as exc:  # any failure inside a plugin's import, by design
                _warn(
                    f"the command {name!r} ({entry.value}) could not be loaded: {type(exc).__name__}: {exc}"
                )
            else:
                if isinstance(loaded, click.Command):
                    command = loaded
                else:
                    _warn(f"the command {name!r} ({entry.value}) is not a click command")
        self._loaded[name] = command
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # the library's own commands cannot be replaced by a plugin of the same name
        return super().get_command(ctx, cmd_name) or self._plugin(cmd_name)


def _warn(message: str) -> None:
    from txoutbox.redact import redact

    click.echo(f"warning: {redact(message)}", err=True)
