"""Exceptions of the stream layer; the CLI prints their message and exits non-zero.

Tree::

    StreamsError
    ├── ConfigError        the configuration file or an override is invalid
    ├── SourceError        an input file or topic cannot be read
    └── DeliveryError      alerts or dead letters could not be delivered to Kafka
"""

from __future__ import annotations


class StreamsError(Exception):
    """Root of every error raised by :mod:`streams`."""


class ConfigError(StreamsError):
    """The configuration cannot be loaded or is invalid."""


class SourceError(StreamsError):
    """An input cannot be read."""


class DeliveryError(StreamsError):
    """Kafka did not acknowledge records the service must not lose."""
