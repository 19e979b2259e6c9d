"""Typed failures. Each carries the pipeline stage and a stable reason code, and turns into
an :class:`~apa.schema.ErrorRecord` for the utterance it hit, so that a job records it as an
error row instead of crashing or dropping the input."""

from apa.schema import ErrorRecord, Stage


class ApaError(Exception):
    """A failure with a stage and a reason code (``"audio.too_long"``)."""

    stage: Stage = "input"

    def __init__(self, code: str, message: str, *, raw: str | None = None) -> None:
        super().__init__(message)
        self.reason = f"{self.stage}.{code}"
        self.message = message
        self.raw = raw

    def __reduce__(self):
        # Pickle by state, not by __init__ arguments (subclasses take others), so that an
        # error survives crossing processes (Ray tasks, actors, Train workers) intact.
        return (_restore, (type(self), self.args, self.__dict__))

    def record(self, utterance_id: str) -> ErrorRecord:
        return ErrorRecord(
            utterance_id=utterance_id,
            stage=self.stage,
            reason=self.reason,
            message=self.message,
            raw=self.raw,
        )


def _restore(cls: type[ApaError], args: tuple, state: dict) -> ApaError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class InputError(ApaError):
    """A row of input that cannot become an utterance (missing id, empty text, ...)."""

    stage: Stage = "input"


class AudioError(ApaError):
    """Audio that cannot be read, decoded or accepted (too long, silent, NaN, ...)."""

    stage: Stage = "audio"


class LexiconError(ApaError):
    """A reference word with no pronunciation in the corpus lexicon or the dictionary."""

    stage: Stage = "lexicon"
