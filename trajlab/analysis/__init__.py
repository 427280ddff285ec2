"""Analysis of LM trajectories from log-likelihood vectors: KL, maps, spirals, layer threads, diffusion.

numpy / scipy / scikit-learn / matplotlib only (no torch), so stores can be analysed on any machine.

    from trajlab import analysis as ta
    kl = ta.kl_matrix(ll, n_bytes)                  # (K, K) bits per byte
    xy = ta.embed(ll, "tsne", 2, n_bytes)            # (K, 2)
    fits = ta.diffusion_exponents(kl, steps)         # one local exponent per start snapshot
    ta.spiral_test(ll, "pca")["p_value"]             # |winding| against random walks with the same steps
    ta.thread_test(ll_layers)["p_value"]             # layer thread score against shuffled layer orders
    ta.bootstrap_kl(ll[0], ll[1], n_bytes)           # (KL, lo, hi): paired text bootstrap
    ta.analyze(stores, "out/")                       # every number, CSV tables and figures
"""

from trajlab.analysis.bootstrap import bootstrap_exponent_order, bootstrap_kl, bootstrap_order
from trajlab.analysis.calibrate import spiral_test, thread_test
from trajlab.analysis.config import AnalysisConfig
from trajlab.analysis.diffusion import diffusion_exponents, pairwise_sq_dist, summarize_exponents
from trajlab.analysis.kl import double_center, kl_matrix, kl_paired, prepare
from trajlab.analysis.maps import classical_mds, embed, joint_maps
from trajlab.analysis.pairs import domain_split, fixed_lag_pairs
from trajlab.analysis.spiral import fit_center, spiral_stats, winding
from trajlab.analysis.summary import analyze
from trajlab.analysis.tables import (
    Trajectory,
    comparison_pairs,
    comparison_table,
    finetune_vs_base,
    lineage_pairs,
)
from trajlab.analysis.threads import layer_map, layer_threads

__all__ = [
    "AnalysisConfig",
    "Trajectory",
    "analyze",
    "bootstrap_exponent_order",
    "bootstrap_kl",
    "bootstrap_order",
    "classical_mds",
    "comparison_pairs",
    "comparison_table",
    "diffusion_exponents",
    "domain_split",
    "double_center",
    "embed",
    "finetune_vs_base",
    "fit_center",
    "fixed_lag_pairs",
    "joint_maps",
    "kl_matrix",
    "kl_paired",
    "layer_map",
    "layer_threads",
    "lineage_pairs",
    "pairwise_sq_dist",
    "prepare",
    "spiral_stats",
    "spiral_test",
    "summarize_exponents",
    "thread_test",
    "winding",
]
