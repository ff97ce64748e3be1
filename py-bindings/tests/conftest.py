"""pytest configuration for the qlearn suite."""

from hypothesis import settings

# No example database in the working tree: every run draws fresh examples
# (the failing example is printed when a property fails).
settings.register_profile("qlearn", database=None)
settings.load_profile("qlearn")
