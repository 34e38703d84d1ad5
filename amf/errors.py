"""Error types that the command-line tools turn into a one-line message and a non-zero exit.

Every failure we can foresee (bad input, bad weights, bad data) is raised as a subclass of
:class:`AmfError`, so callers can tell "the user gave us something wrong" apart from a bug.
"""


class AmfError(Exception):
    """A foreseen failure, reported to the user as one line."""


class InputError(AmfError):
    """An input folder, stack or image that cannot be read as the challenge defines it."""


class WeightsError(AmfError):
    """A weights folder whose manifest or member files are missing, corrupt or of another format."""


class DatasetError(AmfError):
    """A training or evaluation dataset whose labels or images are incomplete or malformed."""


class EvaluationError(AmfError):
    """Predictions or ground truth that the official evaluation would refuse."""


class OutputError(AmfError):
    """An output that cannot be written, or a model output that must not be written (NaN or inf)."""
