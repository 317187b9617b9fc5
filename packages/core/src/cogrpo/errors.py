"""Errors that reach the user as one line with the fix (exit code 2, no traceback)."""

from __future__ import annotations


class CogrpoError(Exception):
    """Bad input or a missing resource: the message is one line that says how to fix it.

    The CLI prints ``error: <message>`` and exits with code 2; set ``COGRPO_DEBUG=1`` for the
    traceback.
    """


class ConfigError(CogrpoError):
    """An invalid configuration value."""


class PluginError(CogrpoError):
    """An unknown plugin name, a duplicate registration, or a broken plugin."""


class CheckpointError(CogrpoError):
    """A missing, incomplete or corrupt checkpoint."""


class RewardError(CogrpoError):
    """A reward model raised or returned non-finite scores."""


class WeightsNotFoundError(CogrpoError):
    """Model weights are neither at the given path nor in the Hugging Face cache (and the hub
    cannot be reached). The message names the repo id, the files expected and the flag to pass a
    local path."""
