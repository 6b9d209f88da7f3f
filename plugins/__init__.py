"""The plugin manager: ``hookimpl`` for plugin authors, built-ins, entry points.

Built-in features are plugins listed in ``DEFAULT_PLUGINS`` (a module, or the
object its ``plugin_factory()`` returns when the plugin keeps state).  External plugins
load from the setuptools entry-point group ``ninja_publish`` unless
``NINJA_PUBLISH_DISABLE_PLUGIN_AUTOLOAD`` is set (or ``--no-plugin-autoload``
is given); ``--disable-plugin NAME`` blocks one by name.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from typing import Any, Iterable, Optional

import pluggy

from . import hookspecs
from .hookspecs import PROJECT_NAME

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: The entry-point group external plugins register under.
ENTRY_POINT_GROUP = PROJECT_NAME
#: Set to any non-empty value to skip loading external plugins.
AUTOLOAD_ENV = "NINJA_PUBLISH_DISABLE_PLUGIN_AUTOLOAD"

# upload before webhooks: both shut down trylast, and pluggy runs the later-registered
# trylast hook last, so upload_done events are queued before the webhooks shut down.
DEFAULT_PLUGINS = ("plugins.room_recording", "plugins.control_page", "plugins.upload", "plugins.webhooks")

log = logging.getLogger(__name__)


class ConfigurationError(Exception):
    """A plugin cannot start with the given arguments (``configure`` raises it, or
    any other exception): the client stops with this one line and a non-zero exit."""


def make_plugin_manager(
    autoload: Optional[bool] = None, blocked: Iterable[str] = (), extra: Iterable[Any] = ()
) -> pluggy.PluginManager:
    """Build the plugin manager with built-ins, entry points and ``extra`` plugins."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        if not pm.is_blocked(module_name):
            module = importlib.import_module(module_name)
            factory = getattr(module, "plugin_factory", None)  # a plugin object with state, or the module
            pm.register(factory() if factory is not None else module, name=module_name)
    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_ENV)
    if autoload:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


async def await_me_maybe(value: Any) -> Any:
    """Resolve ``value`` if it is awaitable, else return it."""
    while inspect.isawaitable(value):
        value = await value
    return value


async def call_hook(pm: pluggy.PluginManager, name: str, *, raise_errors: bool = False, **kwargs: Any) -> list:
    """Call a hook and await every awaitable result; errors are logged, not raised
    (``raise_errors=True``: the first error is raised instead, e.g. for ``configure``)."""
    try:
        results = getattr(pm.hook, name)(**kwargs)
    except Exception:
        if raise_errors:
            raise
        log.exception("plugin hook %s failed", name)
        return []
    if not isinstance(results, list):
        results = [results]
    resolved = []
    for value in results:
        try:
            resolved.append(await await_me_maybe(value))
        except Exception:
            if raise_errors:
                raise
            log.exception("plugin hook %s failed", name)
    return resolved
