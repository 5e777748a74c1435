"""ST-MAE: generative masked pretraining on dynamic functional connectivity, then evaluation.

Command:
  python -m jaxbrain.main --config=configs/stmae.py --workdir=runs/stmae
  (add `:smoke`, `:synthetic`, `:stagin` or `:paper`; `--config.a.b=value` overrides any field.)

Input: the same windows as BrainMAE (configs/brainmae.py: data section), here 16 segments of 15 s
(336 frames at TR 0.72 s); the model computes their dynamic FC (window 50, stride 16, top 30% of
edges: 18 graphs per window) on the accelerator.

Variants:
  (default)  The built-in HCP data (7 subjects, 94 AAL2 ROIs): pretrains on 4 subjects, evaluates
             on the 3 held out: masked FC reconstruction against the training-mean-graph baseline,
             subject fingerprinting from the pooled embedding, ROI-embedding similarity, and
             the same for the untrained encoder (eval.random_init). 15 min measured on 2 CPU
             cores (600 steps at ~0.7 steps/s). Expected (seed 0, measured): FC-row MSE 0.0624
             vs 0.0619 for the training-mean graph, edge BCE 0.501 vs 0.448, fingerprinting
             0.28 (chance 0.33; raw FC 1.00; untrained encoder 0.54), homologous ROI embeddings 0.68 vs 0.02 random.
  smoke      Tiny model, 20 steps: checks the pipeline (tests), not the result; ~30 s.
  synthetic  Synthetic labelled subjects: pretraining, then the linear probe and fine-tuning with
             5-fold subject-level cross-validation.
  stagin     STAGIN's dynamic-FC setting (window 50, stride 3) on the HCP data.
  paper      Paper-scale input (Schaefer-400 sized: 400 ROIs, UK Biobank-like 490 volumes at
             TR 0.735 s), hidden 128, batch 64, on synthetic data: for a GPU or TPU.
"""
import ml_collections

from configs import brainmae
from jaxbrain.models.stmae import default_model_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  c = brainmae.base_config()
  c.name = "stmae" if variant == "default" else f"stmae:{variant}"
  c.data.num_segments = 16
  c.data.stride_frames = 21
  c.model = default_model_config()  # every field documented in jaxbrain/models/stmae.py
  c.model.update(dict(num_rois=0, seg_len=0, num_segments=16))
  c.mesh.rules = tuple((name, "fsdp" if name == "embed" else None)
                       for name in ("embed", "mlp", "heads", "kv", "roi", "window", "vocab"))
  c.train.update(dict(steps=600, batch_size=16, log_every=50, checkpoint_every=200))
  c.optim.update(dict(lr=1e-3, warmup_steps=50))
  c.eval.update(dict(interpret=True, fingerprint_embedding="pooled", batch_size=16,
                     random_init_twin=True))  # also evaluate the untrained encoder (eval.random_init)
  if variant == "default":
    pass
  elif variant == "smoke":
    c.model.update(dict(hidden_dim=16, gin_depth=2, num_heads=2, decoder_dim=8))
    c.train.update(dict(steps=20, batch_size=8, log_every=10, checkpoint_every=10))
    c.optim.warmup_steps = 2
    c.eval.num_permutations = 200
  elif variant == "synthetic":
    c.data.source = "synthetic"
    c.data.holdout_subjects = 4
    c.eval.interpret = False
    c.finetune.enabled = True
  elif variant == "stagin":
    c.model.fc_stride = 3
  elif variant == "paper":
    c.data.source = "synthetic"
    c.data.synthetic.update(dict(num_subjects=64, num_rois=400, length=490, tr=0.735))
    c.data.num_segments = 24  # 24 segments of 15 s = 480 volumes at TR 0.735 s
    c.model.num_segments = 24
    c.eval.interpret = False
    c.train.update(dict(steps=20000, batch_size=64, checkpoint_every=2000))
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/stmae.py; "
                     "expected one of: default, smoke, synthetic, stagin, paper")
  return c
