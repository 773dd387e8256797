"""Training data: manifests, codec pre-extraction into shards, samples in a prompt layout, token-budget batches.

manifest.jsonl --(python -m cat_tts.data.prepare)--> DIR/shards/* --(PreparedDataset)--> Utterance
Utterance --(SampleBuilder: plain | chat layout)--> TrainingSample --(BatchStream + Collator)--> Batch
"""

from cat_tts.data.collate import Batch, BatchStream, Collator, plan_batches
from cat_tts.data.dataset import PreparedDataset, Utterance
from cat_tts.data.manifest import ManifestError, ManifestRow, read_manifest
from cat_tts.data.samples import SampleBuilder, TrainingSample, shift_labels

__all__ = [
    "Batch",
    "BatchStream",
    "Collator",
    "ManifestError",
    "ManifestRow",
    "PreparedDataset",
    "SampleBuilder",
    "TrainingSample",
    "Utterance",
    "plan_batches",
    "read_manifest",
    "shift_labels",
]
