"""Built-in method plugins, importable as ``anomalykit_plugins.<name>``.

Each sub-package is self-contained (networks, losses, detector, hook implementation) and is
registered only through the ``anomalykit.methods`` entry point in pyproject.toml, exactly as a
third-party plugin would be. The core never imports this package by name.
"""
