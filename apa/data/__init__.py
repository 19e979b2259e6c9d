"""Input data: the Speechocean762 corpus and manifests of utterances to score.

Both readers turn every input row into exactly one :class:`~apa.schema.Utterance` or one
:class:`~apa.schema.ErrorRecord`; bad rows are reported, never dropped.
"""

from apa.data.manifest import Manifest, read_manifest, write_manifest
from apa.data.scores_json import assessment_from_upstream, assessment_to_upstream
from apa.data.speechocean762 import Speechocean762, prepare_speechocean762

__all__ = [
    "Manifest",
    "Speechocean762",
    "assessment_from_upstream",
    "assessment_to_upstream",
    "prepare_speechocean762",
    "read_manifest",
    "write_manifest",
]
