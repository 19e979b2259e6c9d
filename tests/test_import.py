import subprocess
import sys


def test_import_apa_does_not_import_ray_or_torch() -> None:
    """The core stays light: importing it (and its data/metrics modules) pulls in neither Ray
    nor torch; the batch and online layers import Ray, model code imports torch lazily."""
    code = (
        "import sys, apa, apa.schema, apa.storage, apa.errors, apa.text, apa.audio, apa.tables\n"
        "import apa.data.speechocean762, apa.data.manifest, apa.data.human_scores, apa.lexicon\n"
        "import apa.metrics.evaluate, apa.report, apa.cli\n"
        "heavy = sorted(m for m in ('ray', 'torch', 'transformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
