"""What the Ray jobs hand their workers: the driver's settings environment.

Workers of a cluster started before the job do not see the driver's environment, so the
jobs pass these variables on in a ``runtime_env``: the apa settings (``APA_*``, the model
cache among them), where S3 is and how to sign in to it (``AWS_*``), and Hub settings
(``HF_*``). Credentials passed this way show in the job's runtime_env; on KubeRay, where pods
get them from a Secret, the batch job turns forwarding off (``APA_BATCH_FORWARD_ENV``).
"""

from __future__ import annotations

import os

FORWARDED_ENV_PREFIXES = ("APA_", "AWS_", "HF_")


def forwarded_env() -> dict[str, str]:
    """The driver's variables that start with one of :data:`FORWARDED_ENV_PREFIXES`."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
