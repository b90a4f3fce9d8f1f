"""Analyses computed from a store: decoders (probes), similarity, alignment, complexity."""

from __future__ import annotations

from actstore.probes._alignment import (
    PairAlignment,
    UnitCorrelations,
    align_pair,
    bin_units,
    bipartite_matching,
    correlations_from_moments,
    joint_clusters,
    mutual_information,
    semi_matching,
    spectral_clusters,
)
from actstore.probes._bootstrap import BootstrapResult, bootstrap_indices, bootstrap_similarity
from actstore.probes._complexity import (
    code_targets,
    codes_as_labels,
    complexity_score,
    decodable_step,
    read_codes,
    run_complexity,
    time_to_decode,
    vinfo_of_codes,
)
from actstore.probes._decode import (
    DECODERS,
    DecodeResult,
    ProbeConfig,
    decode,
    make_folds,
    probe_arrays,
)
from actstore.probes._engine import (
    Job,
    ProbeInterrupted,
    ProbePlan,
    ProbeWarning,
    export_results,
    plan_probes,
    run_probes,
    select_result,
    summary_table,
)
from actstore.probes._folds import (
    Folds,
    check_folds,
    explicit_split,
    predefined_folds,
    stratified_folds,
)
from actstore.probes._importance import (
    LinearHead,
    gradient_x_activation,
    linear_importance,
    recover_linear_head,
)
from actstore.probes._lasso import LassoPath, lasso_gram, sparse_prediction
from actstore.probes._logistic import DEFAULT_CS, fit_logistic_path, logistic_cv
from actstore.probes._metrics import METRICS, HeldOutScores, select_penalty
from actstore.probes._moments import PairMoments
from actstore.probes._nmf import NMFResult, nmf, nmf_transform
from actstore.probes._plots import (
    PLOTS,
    plot_alignment,
    plot_complexity,
    plot_probe_checkpoints,
    plot_probe_layers,
    plot_similarity,
    plot_variance,
)
from actstore.probes._rdm import RDM_COMPARES, RDM_KINDS, rsa_signature
from actstore.probes._report import Report, default_report_dir, write_report
from actstore.probes._ridge import DEFAULT_ALPHAS, ridge_cv
from actstore.probes._select import (
    RepRef,
    Selection,
    parse_selection,
    parse_selections,
    select,
    select_many,
    stimulus_subset,
)
from actstore.probes._signatures import (
    Signature,
    cka_signature,
    procrustes_signature,
    rbf_cka_signature,
)
from actstore.probes._similarity import (
    SIMILARITIES,
    LazyRep,
    SimilarityResult,
    plan_similarity,
    similarity,
    similarity_matrix,
)
from actstore.probes._simjobs import alignment_job, similarity_job, write_heatmap
from actstore.probes._stats import ArraySource, CachedSource, accumulate_gram, accumulate_groups
from actstore.probes._synthetic import write_synthetic_store
from actstore.probes._targets import Targets, encode_targets
from actstore.probes._variance import (
    ReaderSource,
    run_variance,
    variance_arrays,
    variance_explained,
)

__all__ = [
    "DECODERS",
    "DEFAULT_ALPHAS",
    "DEFAULT_CS",
    "METRICS",
    "ArraySource",
    "CachedSource",
    "DecodeResult",
    "Folds",
    "HeldOutScores",
    "Job",
    "ProbeConfig",
    "ProbeInterrupted",
    "ProbePlan",
    "ProbeWarning",
    "Targets",
    "accumulate_gram",
    "accumulate_groups",
    "check_folds",
    "decode",
    "encode_targets",
    "explicit_split",
    "export_results",
    "fit_logistic_path",
    "logistic_cv",
    "make_folds",
    "plan_probes",
    "predefined_folds",
    "probe_arrays",
    "ridge_cv",
    "run_probes",
    "select_penalty",
    "select_result",
    "stratified_folds",
    "summary_table",
    "write_synthetic_store",
]

__all__ += [
    "RDM_COMPARES",
    "RDM_KINDS",
    "SIMILARITIES",
    "BootstrapResult",
    "LassoPath",
    "LazyRep",
    "PairAlignment",
    "PairMoments",
    "RepRef",
    "Selection",
    "Signature",
    "SimilarityResult",
    "UnitCorrelations",
    "align_pair",
    "alignment_job",
    "bin_units",
    "bipartite_matching",
    "bootstrap_indices",
    "bootstrap_similarity",
    "cka_signature",
    "correlations_from_moments",
    "joint_clusters",
    "lasso_gram",
    "mutual_information",
    "parse_selection",
    "parse_selections",
    "plan_similarity",
    "procrustes_signature",
    "rbf_cka_signature",
    "rsa_signature",
    "select",
    "select_many",
    "semi_matching",
    "similarity",
    "similarity_job",
    "similarity_matrix",
    "sparse_prediction",
    "spectral_clusters",
    "stimulus_subset",
    "write_heatmap",
]

# Feature measures: variance explained, dictionary features, complexity, importance.
__all__ += [
    "PLOTS",
    "LinearHead",
    "NMFResult",
    "ReaderSource",
    "Report",
    "code_targets",
    "codes_as_labels",
    "complexity_score",
    "decodable_step",
    "default_report_dir",
    "gradient_x_activation",
    "linear_importance",
    "nmf",
    "nmf_transform",
    "plot_alignment",
    "plot_complexity",
    "plot_probe_checkpoints",
    "plot_probe_layers",
    "plot_similarity",
    "plot_variance",
    "read_codes",
    "recover_linear_head",
    "run_complexity",
    "run_variance",
    "time_to_decode",
    "variance_arrays",
    "variance_explained",
    "vinfo_of_codes",
    "write_report",
]
