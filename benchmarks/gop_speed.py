"""Speed of the GOP aligner over a Speechocean762 corpus (by default the 200-utterance
sample beside the checkout), on one CPU core.

    .venv/bin/python benchmarks/gop_speed.py [--corpus DIR] [--limit N]

Prints the machine, the audio seconds, the wall seconds of alignment + phone loop (audio
decoding excluded), the real-time factor (wall / audio), utterances per second, and every
utterance's outcome: aligned, or an error with its reason code. Also a summary of the
features (mean GOP, share of phones judged substituted or deleted) as a sanity check.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from apa.audio import load_audio_or_error
from apa.data.speechocean762 import prepare_speechocean762
from apa.errors import ApaError
from apa.gop.aligner import GopAligner
from apa.gop.analysis import judge_phone
from apa.schema import ErrorRecord

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "speechocean762-sample"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=None, help="first N utterances only")
    args = parser.parse_args(argv)

    corpus = prepare_speechocean762(args.corpus)
    utterances = corpus.utterances[: args.limit]
    outcomes: collections.Counter[str] = collections.Counter()
    for error in corpus.all_errors:
        outcomes[error.reason] += 1

    print(f"device: {cpu_model()}; {os.cpu_count()} logical cores (one used); ", end="")
    print(f"Python {platform.python_version()}, {platform.system()} {platform.machine()}")
    print(f"corpus: {args.corpus} ({len(utterances)} utterances)")

    start = time.perf_counter()
    aligner = GopAligner()
    build_s = time.perf_counter() - start

    audio_s = wall_s = 0.0
    gops: list[float] = []
    phones = substituted = deleted = 0
    failures: list[ErrorRecord] = []
    for utt in utterances:
        audio = load_audio_or_error(utt.id, utt.audio or "")
        if isinstance(audio, ErrorRecord):
            failures.append(audio)
            continue
        assert utt.phones is not None
        audio_s += audio.duration_s
        start = time.perf_counter()
        try:
            analysis = aligner.analyse(audio, utt.words, utt.phones)
        except ApaError as exc:
            wall_s += time.perf_counter() - start
            failures.append(exc.record(utt.id))
            continue
        wall_s += time.perf_counter() - start
        outcomes["aligned"] += 1
        for phone in analysis.phones:
            phones += 1
            gops.append(phone.gop)
            verdict = judge_phone(phone, aligner.config).error
            substituted += verdict == "substitution"
            deleted += verdict == "deletion"
    for failure in failures:
        outcomes[failure.reason] += 1

    n = len(utterances)
    print(f"decoders built in {build_s:.3f} s")
    print(f"audio: {audio_s:.1f} s; wall (align + phone loop): {wall_s:.1f} s")
    print(f"RTF (wall/audio): {wall_s / audio_s:.3f}; {n / wall_s:.2f} utterances/s")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    for failure in failures:
        print(f"  {failure.utterance_id}: {failure.reason}: {failure.message}")
    if gops:
        q = statistics.quantiles(gops, n=10)
        print(
            f"phones: {phones}; gop nats/frame mean {statistics.fmean(gops):.2f}, "
            f"median {statistics.median(gops):.2f}, 10th pct {q[0]:.2f}, 90th pct {q[-1]:.2f}; "
            f"judged substituted {substituted / phones:.1%}, deleted {deleted / phones:.1%}"
        )
    return 0 if outcomes["aligned"] + len(failures) == n else 1


if __name__ == "__main__":
    sys.exit(main())
