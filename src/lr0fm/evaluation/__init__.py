"""Evaluation: plan (identity, cells, where views are made) -> loading (workers decode and make
views) -> passes (every model of a pass scores its views; records into the store)."""
from ..options import EvalConfig
from .loading import ViewFn, default_workers
from .passes import ImageShard, ImageShardResult, Job, check_readable, evaluate, evaluate_many, predict
from .plan import Plan, decoder_name, identify, plan, views_and_decoder

__all__ = ["EvalConfig", "ImageShard", "ImageShardResult", "Job", "Plan", "ViewFn", "check_readable", "decoder_name",
           "default_workers", "evaluate", "evaluate_many", "identify", "plan", "predict", "views_and_decoder"]
