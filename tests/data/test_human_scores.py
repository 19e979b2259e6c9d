import json
from pathlib import Path

from apa.data.human_scores import read_human_scores
from apa.data.manifest import write_manifest
from apa.data.scores_json import assessment_to_upstream
from apa.data.speechocean762 import prepare_speechocean762
from apa.schema import Assessment, Utterance
from apa.testing.factories import synthetic_scores


def _perfect(utt: Utterance, accuracy: float) -> Assessment:
    """A human assessment of ``utt`` with every score set from ``accuracy``."""
    return Assessment.model_validate(
        {
            "utterance_id": utt.id,
            "text": utt.text,
            "sentence": dict.fromkeys(
                ("accuracy", "fluency", "prosody", "completeness", "total"), accuracy
            ),
            "words": [
                {
                    "text": w,
                    "accuracy": accuracy,
                    "stress": 10,
                    "total": accuracy,
                    "phones": [{"phone": p, "accuracy": 2.0} for p in phones],
                }
                for w, phones in zip(utt.words, utt.phones, strict=True)
            ],
            "model": "human",
        }
    )


def test_scores_json_with_a_bad_entry_counts_it(tmp_path: Path) -> None:
    gold, _ = synthetic_scores(n=4)
    table = {g.utterance_id: assessment_to_upstream(g) for g in gold}
    table["bad"] = {**table[gold[0].utterance_id], "fluency": 12}
    (tmp_path / "scores.json").write_text(json.dumps(table))
    human = read_human_scores(str(tmp_path / "scores.json"))
    assert [a.utterance_id for a in human.assessments] == [g.utterance_id for g in gold]
    assert [(e.utterance_id, e.reason) for e in human.errors] == [("bad", "input.invalid_scores")]
    assert "fluency" in human.errors[0].message


def test_corpus_directory_with_scores_json(corpus_copy: Path) -> None:
    utts = prepare_speechocean762(corpus_copy, ["train"]).utterances[:5]
    scored = {u.id: assessment_to_upstream(_perfect(u, 7.0)) for u in utts}
    (corpus_copy / "resource" / "scores.json").write_text(json.dumps(scored))
    human = read_human_scores(str(corpus_copy / "train"))
    assert sorted(a.utterance_id for a in human.assessments) == sorted(scored)
    assert human.unscored == 95 and human.errors == []
    assert all(a.sentence.fluency == 7.0 for a in human.assessments)


def test_manifest_with_and_without_scores(tmp_path: Path, sample_dir: Path) -> None:
    utts = prepare_speechocean762(sample_dir, ["test"]).utterances[:3]
    rows = [utts[0].model_copy(update={"human": _perfect(utts[0], 4.0)}), *utts[1:]]
    write_manifest(rows, str(tmp_path / "m.jsonl"))
    human = read_human_scores(str(tmp_path / "m.jsonl"))
    assert [a.utterance_id for a in human.assessments] == [utts[0].id]
    assert human.assessments[0].sentence.accuracy == 4.0
    assert human.unscored == 2


def test_scores_json_on_s3(s3) -> None:
    client, bucket = s3
    gold, _ = synthetic_scores(n=3)
    body = json.dumps({g.utterance_id: assessment_to_upstream(g) for g in gold})
    client.put_object(Bucket=bucket, Key="gold/scores.json", Body=body.encode())
    human = read_human_scores(f"s3://{bucket}/gold/scores.json")
    assert len(human.assessments) == 3 and not human.errors
