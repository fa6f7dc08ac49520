"""Datasets: harmonia's own format and readers of published formats."""

from harmonia.data.format import (
    DatasetFormatError,
    DatasetInfo,
    DatasetWriter,
    HarmoniaDataset,
    open_split,
    read_info,
)

__all__ = ["DatasetFormatError", "DatasetInfo", "DatasetWriter", "HarmoniaDataset", "open_split", "read_info"]

# ClickMe TFRecord readers (no TensorFlow) and the release's preprocessing.
from harmonia.data.clickme import ClickMeDataset, ClickMeFormatError, ClickMeIndexedDataset  # noqa: E402
from harmonia.data.clickme_preprocess import ClickMePreprocess  # noqa: E402
from harmonia.data.tfrecord import TFRecordError  # noqa: E402

__all__ += ["ClickMeDataset", "ClickMeFormatError", "ClickMeIndexedDataset", "ClickMePreprocess", "TFRecordError"]
