"""A trial's SNN as a NIR graph, re-run in snnTorch: a thin wrapper over ``python -m snnconv.nir``
(``snnconv/nir/__main__.py``).

    python analysis/export.py RUN_ID                 # ./nir/RUN_ID/model.nir and agreement.md, logged on the run
    python analysis/export.py RUN_ID --out DIR --max-images 100
    python analysis/export.py --help

Needs the ``nir`` extra: pip install -e '.[nir]'
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "library"))  # run from a checkout without install

from snnconv.nir.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
