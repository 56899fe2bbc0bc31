"""Evaluate any adapter folder on manifests through lorakit's own evaluation path (the default recipe's
preprocessing and generation, encoder cache): how the README's "neither guard" cell of the forgetting
study was measured from a run's checkpoint_last/ (copy adapter_best/adapter_config.json beside its weights).

    python bench/evaluate_adapter.py ADAPTER_DIR domain.jsonl heldout.jsonl   # manifests under data/demo/, or absolute
"""
import sys, json
from peft import PeftModel
from lorakit.config import RunConfig
from lorakit.experiment.models import load_model, encoder_is_frozen
from lorakit.experiment.features import make_inputs
from lorakit.experiment.manifests import read_manifest
from lorakit.experiment.distributed import evaluate_all
import torch
adapter, *manifests = sys.argv[1:]
cfg = RunConfig()
sm = load_model(cfg.model)
sm.model = PeftModel.from_pretrained(sm.model, adapter, is_trainable=False)
inputs = make_inputs(sm, cfg, torch.device("cpu"), frozen_encoder=encoder_is_frozen(sm), autocast=None)
for m in manifests:
    utts = read_manifest(cfg.path("domain_manifest").parent / m if not m.startswith("/") else m).utterances
    res = evaluate_all(sm, utts, inputs, cfg, m, None, None)
    print(json.dumps({"manifest": m, **res.summary()}))
