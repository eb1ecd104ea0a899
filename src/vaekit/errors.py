"""User-facing errors.

Every mistake a user can make (a missing file, a corrupt checkpoint, a nonsense option) is
raised as a :class:`VaekitError` whose message is one line: what is wrong, and what to do.
The CLI prints that line and exits with status 2; it never shows a traceback for them.
"""


class VaekitError(Exception):
    """A problem with the user's input, data, files or options (not a bug in vaekit)."""


class DataError(VaekitError):
    """A data file or array that cannot be used."""


class CheckpointError(VaekitError):
    """A checkpoint or run directory that cannot be used."""


class ConfigError(VaekitError):
    """An option or configuration value that makes no sense."""


class TrainingDiverged(VaekitError):
    """The loss or a gradient became NaN or infinite during training."""


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none): how a foreign
    error (torch's, MLflow's, the Hub's) is quoted inside vaekit's one-line messages. A first
    line that only leads in to the cause (it ends in a colon, as torch.compile's
    ``backend='inductor' raised:``) is quoted with the line after it."""
    lines = [line.strip() for line in str(err).strip().splitlines()]
    if not lines:
        return type(err).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}"
    return lines[0]
