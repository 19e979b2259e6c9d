"""The feature memo gives exactly the processor's own batches, extracting each clip once."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from apa.engine.feature_memo import FeatureMemo, _Packed, with_feature_memo
from apa.models.families import TINY_PHI4MM, TINY_QWEN2_AUDIO
from apa.models.inputs import build_batch, chat_prompt
from apa.models.qwen2_audio.backend import Qwen2AudioBackend


def _clips(test_utterances) -> list[np.ndarray]:
    from apa.audio import load_audio

    clips = [load_audio(u.audio).samples for u in test_utterances[:4]]
    return [*clips, np.zeros(4000, np.float32)]  # and a silent quarter second


def _assert_same(a, b) -> None:
    assert torch.equal(a.input_ids, b.input_ids)
    assert a.answer_starts == b.answer_starts
    assert a.audio.keys() == b.audio.keys()
    for key in a.audio:
        assert a.audio[key].dtype == b.audio[key].dtype, key
        assert torch.equal(a.audio[key], b.audio[key]), key


@pytest.mark.parametrize("name", [TINY_QWEN2_AUDIO, TINY_PHI4MM])
def test_memo_batches_equal_the_processors_own(name, loaded_models, test_utterances) -> None:
    processor = loaded_models[name].processor
    memo = with_feature_memo(processor)
    if name == TINY_PHI4MM:  # its audio processor pads to the batch's longest clip
        assert memo is processor
        return
    assert memo is not processor and not isinstance(processor.feature_extractor, FeatureMemo)
    clips = _clips(test_utterances)
    prompt = chat_prompt(processor, "Score it.")
    for order in ([0, 1, 2, 3, 4], [4, 2, 0], [3, 3, 1, 0]):  # reordered, repeated, subsets
        batch = [clips[i] for i in order]
        args = ([prompt] * len(batch), batch, [[5, 6]] * len(batch))
        backend = Qwen2AudioBackend()
        _assert_same(
            build_batch(processor, *args, backend=backend),
            build_batch(memo, *args, backend=backend),
        )
    extractor = memo.feature_extractor  # Whisper pads each clip to 30 s alone: memoised
    assert (len(extractor), extractor.misses, extractor.hits) == (5, 5, 7)
    # a call whose rows depend on the batch goes straight through
    features = extractor(clips[:2], sampling_rate=16_000, padding="longest", return_tensors="pt")
    assert features["input_features"].shape[-1] < 3000 and len(extractor) == 5
    # it copies and pickles with what it holds (a Ray worker may receive one)
    again = pickle.loads(pickle.dumps(copy.deepcopy(extractor)))
    assert len(again) == 5 and again.sampling_rate == extractor.sampling_rate


def test_rows_are_kept_without_their_padding_and_rebuilt_exactly() -> None:
    row = torch.full((1, 3, 10), -1.5)
    row[0, :, :4] = torch.arange(12.0).reshape(3, 4)
    row[0, 1, 6] = 2.0  # one differing value ends the padding later
    packed = _Packed.pack(row)
    assert packed.head.shape == (1, 3, 7) and packed.fill == -1.5
    assert torch.equal(packed.unpack(), row)
    mask = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.int32)
    packed = _Packed.pack(mask)
    assert packed.head.shape == (1, 3) and torch.equal(packed.unpack(), mask)
    assert packed.unpack().dtype == torch.int32
    full = torch.arange(6.0).reshape(1, 6)
    assert _Packed.pack(full).head.shape == (1, 5)  # the last column is its own run
    assert torch.equal(_Packed.pack(full).unpack(), full)
