"""Test helpers shared by several test modules (fixtures live in the modules, loaded as pytest plugins)."""
