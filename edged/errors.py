"""One small error hierarchy, named by the phase in which things go wrong.

Each error carries a message meant for a person reading a log line or a terminal: what is wrong and,
where it helps, what to do about it.
"""


class EdgedError(Exception):
    """Base class of every error edged raises on purpose."""


class ConfigError(EdgedError):
    """The configuration file is unreadable or invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RecordingError(EdgedError):
    """A recording file is missing, unreadable, or lacks what was asked of it."""


class SourceError(EdgedError):
    """A device source failed to open or lost its device."""


class ModelError(EdgedError):
    """A model file or its manifest is missing, malformed, or the two disagree."""


class SinkError(EdgedError):
    """An output (MQTT broker, spool) could not be set up."""
