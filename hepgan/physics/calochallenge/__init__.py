"""The CaloChallenge 2022 evaluation of datasets 2 and 3 (``hepgan-evaluate --suite calochallenge``).

Each module reproduces a definition of the challenge's evaluation code (``code/`` of the public
repository CaloChallenge/homepage) and says which:

| module | holds |
|---|---|
| ``binning`` | the voxel geometry of datasets 2 and 3 (binning XML files) and the readout threshold |
| ``features`` | the high-level features (``HighLevelFeatures.py``) and the 362-feature vector |
| ``separation`` | histogram separation power with the challenge's bins (``evaluate_plotting_helper.py``) |
| ``classifier`` | the DNN classifier test, low- and high-level (``evaluate.py``) |
| ``suite`` | reading files, :func:`evaluate` (everything, FPD/KPD included), writing, the hepgan adapter |
| ``plots`` | figures |
| ``published`` | the published results (``final_results/``) and a Markdown table beside them |

Showers are in the challenge's representation: flat ``[N, V]`` voxel energies in MeV in its order
``(layer, alpha, r)``, incident energies in MeV; :func:`from_showers` converts a hepgan ``Showers``.
"""

from hepgan.physics.calochallenge.binning import (
    DATASET_2,
    DATASET_3,
    THRESHOLD_MEV,
    Binning,
    dataset_for_voxels,
    get_binning,
)
from hepgan.physics.calochallenge.classifier import CHALLENGE, CPU, PRESETS, ClassifierSettings, challenge_auc
from hepgan.physics.calochallenge.features import Features, apply_threshold, compute_features
from hepgan.physics.calochallenge.published import comparison_markdown, published, published_source
from hepgan.physics.calochallenge.separation import separation_power, separation_powers, summarise
from hepgan.physics.calochallenge.suite import MIN_EVENTS, evaluate, from_showers, read_files, write_results

__all__ = [
    "CHALLENGE",
    "CPU",
    "DATASET_2",
    "DATASET_3",
    "MIN_EVENTS",
    "PRESETS",
    "THRESHOLD_MEV",
    "Binning",
    "ClassifierSettings",
    "Features",
    "apply_threshold",
    "challenge_auc",
    "comparison_markdown",
    "compute_features",
    "dataset_for_voxels",
    "evaluate",
    "from_showers",
    "get_binning",
    "published",
    "published_source",
    "read_files",
    "separation_power",
    "separation_powers",
    "summarise",
    "write_results",
]
