"""Neural alignment: how well a model's layers predict primate IT responses and their spatial maps.

Example:
    >>> from harmonia.neural import simulate_spatial, ground_truth_model, spatial_benchmark
    >>> rec = simulate_spatial(n_images=5, n_neurons=4, grid=(5, 5), layer="block3", seed=0)
    >>> spatial_benchmark(ground_truth_model(0), rec, n_components=4).best.layer
    'block3'
"""

from harmonia.neural.brainscore import read_brainscore, write_brainscore_assembly
from harmonia.neural.ceiling import pairwise_neuron_ceiling, spearman_brown, split_half_reliability
from harmonia.neural.data import ARCARO_PRESETS, NeuralRecording, load_neural, load_recording, read_arcaro, save_recording
from harmonia.neural.features import default_layers, extract_features, to_grid
from harmonia.neural.reduce import PCA, pca_reduce
from harmonia.neural.regression import PLS, Ridge, RidgeCV, cross_validated_pearson, fold_score, kfold, leave_one_group_out, pearson_columns
from harmonia.neural.run import plot_layer_profile, run_neural
from harmonia.neural.score import LayerScore, SweepResult, neural_predictivity, spatial_benchmark
from harmonia.neural.simulate import GroundTruthNet, ground_truth_model, simulate_flat, simulate_spatial, write_arcaro_mat

__all__ = [
    "ARCARO_PRESETS", "GroundTruthNet", "LayerScore", "NeuralRecording", "PCA", "PLS", "Ridge", "RidgeCV", "SweepResult",
    "cross_validated_pearson", "default_layers", "extract_features", "fold_score", "ground_truth_model", "kfold",
    "leave_one_group_out", "load_neural", "load_recording", "neural_predictivity", "pairwise_neuron_ceiling",
    "pca_reduce", "pearson_columns", "plot_layer_profile", "read_arcaro", "read_brainscore", "run_neural", "save_recording", "simulate_flat",
    "simulate_spatial", "spatial_benchmark", "spearman_brown", "split_half_reliability", "to_grid", "write_arcaro_mat",
    "write_brainscore_assembly",
]
