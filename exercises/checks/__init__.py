"""Checks of the exercises, one module per chapter (registered with ``exercises.registry.exercise``)."""
