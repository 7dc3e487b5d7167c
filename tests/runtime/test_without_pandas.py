"""The runtime image ships without pandas: DataFrame-fitted models must still serve, or say why not.

Each check runs in a fresh interpreter where `import pandas` fails, as it does in the image.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler

REPO_ROOT = Path(__file__).resolve().parents[2]
HOUSE_PRICES = REPO_ROOT / "examples" / "house-prices" / "model.joblib"

# Loads a model with pandas unimportable and prints its predictions (or its load error) as JSON.
SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, warnings
    sys.modules["pandas"] = None  # any `import pandas` now raises ImportError
    warnings.simplefilter("error")  # a stray warning would show up as a failure
    from pathlib import Path
    from mlmodel_runtime.model import ModelLoadError, SKLearnModel

    async def main(path, rows):
        model = SKLearnModel("m")
        try:
            await model.load(Path(path))
        except ModelLoadError as error:
            return {"reason": error.reason, "message": str(error)}
        outputs = await model.predict(rows)
        return {"predict": outputs["predict"].tolist()}

    print(json.dumps(asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))))
    """
)


def run_without_pandas(model_path: Path, rows: list[list[float]]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model_path), json.dumps(rows)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_dataframe_fitted_model_serves_the_same_predictions_without_pandas() -> None:
    model = joblib.load(HOUSE_PRICES)
    names = list(model.feature_names_in_)
    rng = np.random.default_rng(7)
    rows = np.abs(rng.normal(1000, 400, size=(5, len(names)))).round().tolist()
    expected = model.predict(pd.DataFrame(rows, columns=names))

    result = run_without_pandas(HOUSE_PRICES, rows)

    assert "reason" not in result, result
    np.testing.assert_allclose(result["predict"], expected, rtol=1e-9)


def test_a_model_that_selects_columns_by_name_says_it_needs_pandas(tmp_path: Path) -> None:
    frame = pd.DataFrame({"area": [50.0, 80.0, 120.0, 65.0], "rooms": [2.0, 3.0, 5.0, 2.0]})
    by_name = ColumnTransformer([("scaled", StandardScaler(), ["area"])], remainder="drop")
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(by_name, LinearRegression()).fit(frame, [100.0, 160.0, 240.0, 130.0])
    path = tmp_path / "by-name.joblib"
    joblib.dump(pipeline, path)

    result = run_without_pandas(path, [[70.0, 3.0]])

    assert result["reason"] == "MissingDependency"
    assert "install pandas" in result["message"]
