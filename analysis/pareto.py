"""Pareto fronts of a sweep stored in MLflow: a thin command line over ``snnconv.pareto_command.main``.

    python analysis/pareto.py                       # latest sweep of experiment "snnconv" in ./mlflow.db
    python analysis/pareto.py --sweep <RUN_ID> --compare <OTHER_RUN_ID> --out reports/cmp
    python analysis/pareto.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "library"))  # run from a checkout without install

from snnconv.pareto_command import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
