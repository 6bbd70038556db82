"""Names vulture cannot see used: called by Python, by a library, or by name. `make test` runs
vulture over src/lr0fm with this file (it is parsed, never run); any other unused name fails."""
# ruff: noqa
__getattr__, __dir__  # lr0fm/__init__.py: module attributes on first use (PEP 562)
LowResolution  # public as lr0fm.LowResolution, imported by name on first use
map_wn  # lr0fm.analysis.wordnet: overrides nltk's WordNetCorpusReader.map_wn
for_model  # lr0fm.LowResolution.for_model (lr0fm.transforms): public API (docs/api.md)
LOAD_TRUNCATED_IMAGES  # a Pillow setting, read by Pillow
pooled_features  # ConSE's, looked up by name (lr0fm.tokens.trainer distillation targets)
OriginalCarrier  # lr0fm.tensor_views: what a worker sends when the device makes the views
checkpoint  # lr0fm.engines.slurm: submitit calls a job's checkpoint() when it is preempted
CELL_METRICS  # lr0fm.metrics: what tests/fake_records.py fills every per-cell metric from
numerics  # lr0fm.identity.Evaluation: one part of the description, read through dataclasses.asdict
resize_mode, rgb_order  # lr0fm.options.RunOptions: protocol overrides read by field (ProtocolChoice.overrides)
