"""The package version and the plugin API version (no imports: read by setup tools and the core alike).

``PLUGIN_API_VERSION`` is ``MAJOR.MINOR`` of what a plugin may rely on (docs/plugin-api.md): the
minor number grows when something is added or deprecated, the major number when something
deprecated is finally removed. A deprecation lasts at least one feature release of anomalykit.
"""

__version__ = "0.2.0"
PLUGIN_API_VERSION = "1.1"
