"""The user-turn instruction: the reference, its canonical phones, the rubric, the format.

Backend-neutral plain text: a backend wraps it in its chat template and adds its audio
placeholder (``<|AUDIO|>``, ``<|audio|>``). It names the answer tokens of
:mod:`apa.lmm.vocab`; once :func:`~apa.lmm.vocab.add_answer_tokens` has run they are the
same single tokens the answer uses.

>>> text = instruction("We call it bear.", ["WE", "CALL", "IT", "BEAR"],
...                    [["W", "IY0"], ["K", "AO0", "L"], ["IH0", "T"], ["B", "EH0", "R"]])
>>> print(text)  # doctest: +ELLIPSIS
Assess the pronunciation of a non-native English learner reading this sentence aloud:
We call it bear.
<BLANKLINE>
Score the recording on the Speechocean762 rubric.
Phone accuracy, 0-2: 2 correct; 1 right but with a heavy accent; 0 incorrect or missed.
...
Sentence total, 0-10: the overall pronunciation of the sentence.
<BLANKLINE>
Answer in exactly this form, ... Nothing else.
WE: W<score><said> IY0<score><said> | accuracy<score> stress<score> total<score>
CALL: K<score><said> AO0<score><said> L<score><said> | accuracy<score> stress<score> total<score>
IT: IH0<score><said> T<score><said> | accuracy<score> stress<score> total<score>
BEAR: B<score><said> EH0<score><said> R<score><said> | accuracy<score> stress<score> total<score>
sentence: accuracy<score> fluency<score> prosody<score> completeness<score> total<score>

The answer form is :class:`~apa.lmm.answer.AnswerTemplate`'s structure with ``<score>`` and
``<said>`` marks at the slots, so the prompt and the answer always agree.

That is the ``rubric`` style, for a model that has to be told what to do (zero-shot). A
fine-tuned model learns the rubric and the form from its targets, so ``brief`` keeps the
reference alone:

>>> instruction("We call it bear.", ["WE", "CALL", "IT", "BEAR"],
...             [["W", "IY0"], ["K", "AO0", "L"], ["IH0", "T"], ["B", "EH0", "R"]], style="brief")
'Score the pronunciation of this reading: We call it bear.'

The style is part of what an adapter was trained on: ``apa finetune`` records it
(``TrainConfig.prompt``, in the adapter's ``training.json``) and
:func:`apa.engine.scorer.adapter_prompt` reads it back, so a scorer loading that adapter asks
the way it was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from apa.lmm.answer import AnswerTemplate

PromptStyle = Literal["rubric", "brief"]
PROMPT_STYLES: tuple[str, ...] = get_args(PromptStyle)

AlignmentUse = Literal[
    "off", "spans", "spans+next", "spans+words", "spans+next+words", "spans+wide"
]
"""What of the forced alignment reaches the model besides the prompt: ``off`` nothing;
``spans`` each canonical phone's audio, added at the phone's place in the answer
(:meth:`apa.engine.scorer.LmmScorer.align`, ``docs/alignment-informed-scoring.md``);
``+next`` also the next phone's audio one token before the phone's name, so the model has
read a phone's right neighbour before it scores the phone; ``+words`` also each word's
audio where the word's scores are read; ``+wide`` widens every phone span shorter than
:data:`WIDE_SPAN_S` to that length around its centre, so a phone the aligner squeezed still
pools the audio around it. Like the style, part of what an adapter was
trained with."""
ALIGNMENT_USES: tuple[str, ...] = get_args(AlignmentUse)
WIDE_SPAN_S = 0.12
"""``+wide``: the shortest phone span pooled, in seconds (three of Qwen2-Audio's 40 ms
audio embeddings; the aligner gives most substituted phones 45 ms or less)."""

RUBRIC = """\
Score the recording on the Speechocean762 rubric.
Phone accuracy, 0-2: 2 correct; 1 right but with a heavy accent; 0 incorrect or missed.
Pronounced phone: <|ok|> said as the canonical phone; <|del|> left out; <|ph:XX|> phone XX \
said instead (ARPAbet without stress, e.g. <|ph:IH|>); <|ph:unk|> an unclear sound.
Word accuracy, 0-10: 10 perfect; 7-9 most phones right but accented; 4-6 under 30% of the \
phones wrong; 2-3 over 30% wrong, or another word said; 1 hard to make out; 0 no voice.
Word stress, 0-10: 10 correct or a one-syllable word; 5 wrong stress.
Word total, 0-10: the word's overall pronunciation.
Sentence accuracy, 0-10: 9-10 excellent; 7-8 good, a few mistakes; 5-6 understandable, many \
mistakes; 3-4 poor, serious mistakes; 0-2 only one or two words recognisable.
Sentence fluency, 0-10: 8-10 fluent, no noticeable pauses or stammering; 6-7 a few pauses \
or repetitions; 4-5 many; 0-3 intermittent speech.
Sentence prosody, 0-10: 9-10 correct intonation, stable speed and rhythm, native-like; 7-8 \
nearly so; 5-6 unstable speed, poor rhythm; 3-4 too fast or too slow, no rhythm; 0-2 poor \
intonation, cannot read the whole sentence.
Sentence completeness, 0-10: the share of the words pronounced well (10: all).
Sentence total, 0-10: the overall pronunciation of the sentence."""

FORM_NOTE = """\
Answer in exactly this form, one line per word (its canonical phones in ARPAbet, then the \
word's scores) and the sentence line last. Write each <score> as one token, <|s0|> to \
<|s10|> (a phone's: <|s0|>, <|s1|> or <|s2|>), and each <said> as one pronounced-phone \
token. Nothing else."""

_MARKS = {"score10": "<score>", "score2": "<score>", "pronounced": "<said>"}


def instruction(
    text: str,
    words: Sequence[str],
    phones: Sequence[Sequence[str]],
    *,
    style: PromptStyle = "rubric",
) -> str:
    """The instruction for reference ``text`` with ``words`` (as :func:`apa.text.words_of`
    gives them) and each word's canonical ``phones``. ``rubric``: the reference, the rubric,
    and the answer form, which lists each word's canonical phones with ``<score>`` and
    ``<said>`` where the slots go; ``brief``: the reference only.

    Raises ``ValueError`` for an unknown style, an empty text, ``words`` and ``phones`` of
    different lengths or a word without phones.
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, not {style!r}")
    if not text.strip():
        raise ValueError("the reference text is empty")
    if len(words) != len(phones):
        raise ValueError(f"{len(words)} words but phones for {len(phones)}")
    for word, word_phones in zip(words, phones, strict=True):
        if not word_phones:
            raise ValueError(f"word {word!r} has no canonical phones")
    if style == "brief":
        return f"Score the pronunciation of this reading: {text.strip()}"
    template = AnswerTemplate.from_reference(words, phones)
    form = "".join(_MARKS.get(getattr(s, "kind", None), s) for s in template.segments)
    return (
        "Assess the pronunciation of a non-native English learner reading this sentence "
        f"aloud:\n{text.strip()}\n\n{RUBRIC}\n\n{FORM_NOTE}\n{form}"
    )
