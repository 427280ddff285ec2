"""Analysis of LM trajectories from log-likelihood vectors: KL, maps, spirals, layer threads, diffusion.

numpy / scipy / scikit-learn / matplotlib only (no torch), so stores can be analysed on any machine.

    from trajlab import analysis as ta
    kl = ta.kl_matrix(ll, n_bytes)                  # (K, K) bits per byte
    xy = ta.embed(ll, "tsne", 2, n_bytes)            # (K, 2)
    fits = ta.diffusion_exponents(kl, steps)         # one local exponent per start snapshot
    ta.spiral_test(ll, "pca")["verdict"]             # |winding| against sign-flipped increments, two-sided
    ta.thread_test(ll_layers)["verdict_walk"]        # layer order; layers against a random walk across layers
    ta.bootstrap_kl(ll[0], ll[1], n_bytes)           # (KL, lo, hi): BCa text bootstrap (texts only, runs fixed)
    ta.order_test(seed_kls, size_kls)["holds"]       # an ordering with pairs of runs as the unit
    ta.kl_scale(stores).summary                      # the paper's settings on one KL scale
    ta.analyze(stores, "out/")                       # every number and finding, CSV tables and figures
"""

from trajlab.analysis.bootstrap import bootstrap_kl, bootstrap_order
from trajlab.analysis.calibrate import spiral_test, thread_test
from trajlab.analysis.config import AnalysisConfig
from trajlab.analysis.diffusion import diffusion_exponents, pairwise_sq_dist, summarize_exponents
from trajlab.analysis.exponent_order import bootstrap_exponent_order
from trajlab.analysis.findings import findings
from trajlab.analysis.kl import double_center, kl_matrix, kl_paired, prepare
from trajlab.analysis.maps import classical_mds, embed, joint_maps
from trajlab.analysis.order import holm, order_family, order_test, paired_order_test
from trajlab.analysis.pairs import domain_split, fixed_lag_pairs
from trajlab.analysis.scale import KLScale, kl_scale
from trajlab.analysis.scale_figure import write_scale
from trajlab.analysis.scale_order import scale_orderings
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
    "paired_order_test",
    "AnalysisConfig",
    "KLScale",
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
    "findings",
    "finetune_vs_base",
    "fit_center",
    "fixed_lag_pairs",
    "holm",
    "joint_maps",
    "kl_matrix",
    "kl_paired",
    "kl_scale",
    "layer_map",
    "layer_threads",
    "lineage_pairs",
    "order_family",
    "order_test",
    "pairwise_sq_dist",
    "prepare",
    "scale_orderings",
    "spiral_stats",
    "spiral_test",
    "summarize_exponents",
    "thread_test",
    "winding",
    "write_scale",
]
