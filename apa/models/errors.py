"""The one error of model loading (its own module: every family's loader raises it)."""

from __future__ import annotations

import json
import re

from apa.errors import ApaError
from apa.schema import Stage

_MARK = "apa: the scorer cannot load its model: "
_LINE = re.compile(re.escape(_MARK) + r"(\{.*\})$", re.MULTILINE)


class ModelLoadError(ApaError):
    """A model, processor or adapter that cannot be found or loaded."""

    stage: Stage = "model"

    def as_text(self) -> str:
        """This error as one marked line (a fixed prefix and JSON), for a boundary that
        carries a failure as text only: Ray hands a failed actor start (the batch job's
        scorers) to the driver, and Serve a failed replica start to its status, as the
        error's traceback text. :meth:`in_text` and :meth:`behind` read it back."""
        code = self.reason.removeprefix(f"{self.stage}.")
        return _MARK + json.dumps({"code": code, "message": self.message})

    @classmethod
    def in_text(cls, text: str) -> ModelLoadError | None:
        """The error a line of :meth:`as_text` in ``text`` names, if one does."""
        if found := _LINE.search(text):
            fields = json.loads(found.group(1))
            return cls(fields["code"], fields["message"])
        return None

    @classmethod
    def behind(cls, err: BaseException) -> ModelLoadError | None:
        """The error an :meth:`as_text` line names anywhere in ``err``'s chain of causes."""
        seen: set[int] = set()
        stack: list[BaseException | None] = [err]
        while stack:
            e = stack.pop()
            if e is None or id(e) in seen:
                continue
            seen.add(id(e))
            if (found := cls.in_text(str(e))) is not None:
                return found
            stack += [e.__cause__, e.__context__]
        return None
