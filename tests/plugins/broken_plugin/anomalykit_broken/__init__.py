"""Test fixture: importing this plugin fails, as a plugin with a missing dependency would."""
raise ImportError("this fixture plugin is broken on purpose (missing dependency 'nonexistent_lib')")
