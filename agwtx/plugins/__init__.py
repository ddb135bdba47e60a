"""
Drop-in package for agw routing plugins.

Third parties ship a module in this package (like ``twisted.plugins``); agw
finds the objects providing L{agwtx.interfaces.IRoutingPlugin} with
L{twisted.plugin.getPlugins}.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # type: ignore[name-defined]
__all__: list[str] = []
