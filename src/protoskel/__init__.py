"""protoskel: skeleton-based human action recognition that shows why."""

from protoskel.errors import (
    CheckpointError,
    ConfigError,
    DataFormatError,
    DatasetError,
    LayoutError,
    ProtoskelError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataFormatError",
    "DatasetError",
    "LayoutError",
    "ProtoskelError",
    "__version__",
]
