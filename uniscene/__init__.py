"""uniscene: occupancy-centric driving-scene generation (a re-implementation of UniScene)."""

__version__ = "0.1.0"
