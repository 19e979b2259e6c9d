"""apa.prepare: the text's length is checked first, by one function that apa score,
the batch job's prepare stage and the service's requests share, from one setting."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from apa.lexicon import Lexicon
from apa.prepare import prepare
from apa.schema import ErrorRecord, Utterance
from apa.scorer import PreparedUtterance
from apa.scoring.request import prepare_request
from apa.scoring.settings import ScoringSettings
from apa.text import DEFAULT_MAX_TEXT_CHARS

LEXICON = Lexicon({"WE": [["W", "IY0"]]})


def _wav_bytes() -> bytes:
    t = np.arange(16000) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


def test_long_text_is_refused_before_the_lexicon_and_the_audio() -> None:
    """Unknown words and a missing audio file: the length is what is reported, nothing else
    was looked at."""
    utt = Utterance(id="u1", text="zzyzx " * 200, audio="/no/such/file.wav")
    record = prepare(utt, lexicon=LEXICON)
    assert isinstance(record, ErrorRecord)
    assert (record.utterance_id, record.reason) == ("u1", "input.text_too_long")
    assert "1,200 characters, over the 1,000-character limit" in record.message


def test_text_at_the_limit_passes_and_none_means_no_limit(tmp_path) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(_wav_bytes())
    at_limit = Utterance(id="u1", text="we " * 333 + " ", audio=str(audio))
    assert len(at_limit.text) == DEFAULT_MAX_TEXT_CHARS
    assert isinstance(prepare(at_limit, lexicon=LEXICON), PreparedUtterance)
    over = Utterance(id="u2", text="we " * 400, audio=str(audio))
    assert prepare(over, lexicon=LEXICON).reason == "input.text_too_long"
    assert isinstance(prepare(over, lexicon=LEXICON, max_text_chars=None), PreparedUtterance)
    assert prepare(at_limit, lexicon=LEXICON, max_text_chars=10).reason == "input.text_too_long"


def test_a_request_uses_its_own_limit_all_the_way_through() -> None:
    """A service configured above the default must not be refused by prepare's default."""
    text = "we " * 700
    assert len(text) > DEFAULT_MAX_TEXT_CHARS
    ok = prepare_request("r1", text, _wav_bytes(), lexicon=LEXICON, max_text_chars=5000)
    assert isinstance(ok, PreparedUtterance)
    refused = prepare_request("r1", text, _wav_bytes(), lexicon=LEXICON)
    assert refused.reason == "input.text_too_long"


def test_the_limit_is_one_scoring_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from serve.settings import ServeSettings

    assert ScoringSettings().max_text_chars == DEFAULT_MAX_TEXT_CHARS == 1000
    monkeypatch.setenv("APA_MAX_TEXT_CHARS", "50")
    assert ScoringSettings().max_text_chars == 50
    assert ServeSettings(auth="disabled").scoring.max_text_chars == 50
    assert ServeSettings(scoring={"max_text_chars": 70}).scoring.max_text_chars == 70
    with pytest.raises(ValidationError):
        ServeSettings(max_text_chars=70)  # one place for it: scoring
    with pytest.raises(ValidationError):
        ScoringSettings(max_text_chars=0)
