"""The fMRI benchmark: every BrainMAE row and every baseline on the same subjects, windows and masks.

Command:
  python -m jaxbrain.compare --config=configs/compare.py --workdir=runs/compare
  (add `:smoke` or `:full`; `--config.a.b=value` overrides any field; a killed run resumes.)

Protocol: the subjects of `brainmae.data` (by default the 7 built-in HCP subjects, 94 AAL2 ROIs,
TR 0.72 s) in `protocol.folds` subject-level folds; in each fold the held-out subjects are scored
once, and every choice (ridge penalties, the spatio-temporal ridge's lags, the model's
early-stopping step) is made on `protocol.val_subjects` validation subjects drawn from the
pretraining subjects. Held-out windows are non-overlapping, each masked `protocol.mask_draws`
times; every method sees the same windows and masks. Intervals: 95% bootstrap over held-out
subjects, then windows (paired for differences). Results:
comparison.json, comparison.md, comparison.png in the workdir.

Your own scans: the `brainmae.data` section names the subjects of every row, BrainMAE's and
ST-MAE's alike (jaxbrain.compare.family_config: a family keeps only its own `num_segments` and
`stride_frames`), with the fields of configs/brainmae.py's data section, e.g. a folder of
per-subject files at TR 2 s resampled to the models' 0.72 s:
  python -m jaxbrain.compare --config=configs/compare.py:smoke --workdir=runs/cmp_mine \
      --config.brainmae.data.source=folder --config.brainmae.data.path=DIR \
      --config.brainmae.data.tr=2.0 --config.brainmae.data.resample_tr=0.72
All subjects need the same ROIs; each fold holds out about 1/`protocol.folds` of them and needs
`protocol.val_subjects` + 1 more for validation and pretraining (fingerprinting asks for two or
more held out per fold). `cross_tr` decimates the held-out scans (as loaded, after resampling) to
those TRs and back; for scans recorded at a longer TR than those, set `--config.cross_tr=()`. The
labelled tasks stay on the synthetic cohort (`labelled`, with `brainmae.data.synthetic`'s ROIs and
TR, whatever the data), each row's recipe pretrained on its unlabelled part;
`--config.labelled.enabled=False` skips them. comparison.md titles the native set with the
subjects' TR as loaded.

Variants:
  (default)  Small BrainMAE rows (d=32) trained 600 steps each and a small ST-MAE row (hidden 64,
             300 steps), 3 folds, the synthetic labelled cohort: 13-22 min on 2 CPU cores (12 min 45 s
             on 2026-12-04; 21.6 min on a slower day). Expected (README.md, generated
             by this command): the spatio-temporal ridge is the bar; BrainMAE with the linear
             prior ties it at the native TR (+0.2%, CI -0.1..+0.5%) and loses after a TR change;
             the paper's model loses by 25%; ST-MAE loses to the training-mean graph at masked
             FC reconstruction (+4.9% MSE) and does not beat its untrained twin on
             fingerprinting or the labelled tasks.
  smoke      Tiny and short: checks the pipeline (tests), not the result.
  full       The `brainmae` demo model (d=64, batch 32, 1500 steps) in every BrainMAE row, plus
             the `brainmae` row (temporal attention, no prior) and the paper's other ablations.
  full_prior The `full` variant's baselines and `brainmae_prior` row alone (the same cells, so a
             later `full` run in the same workdir reuses them), without the labelled tasks.
"""
import ml_collections

from configs import brainmae, stmae


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  c = ml_collections.ConfigDict()
  c.name = "compare" if variant == "default" else f"compare:{variant}"
  c.seed = 0

  # The settings every BrainMAE row starts from (data, model, train, optim, mesh, eval).
  c.brainmae = brainmae.base_config()
  c.brainmae.model.update(dict(embed_dim=32, num_heads=2, tse_depth=2, encoder_depth=1,
                               decoder_dim=16, decoder_heads=2))
  c.brainmae.train.update(dict(steps=600, batch_size=16, log_every=100, checkpoint_every=100,
                               eval_every=100, best_metric="val/recon_mse", best_mode="min"))
  c.brainmae.optim.warmup_steps = 50
  # The settings ST-MAE rows start from (configs/stmae.py), a smaller model on windows of 8
  # segments (168 frames: 8 FC windows of 50 frames every 16).
  c.stmae = stmae.get_config("default")
  c.stmae.data = c.brainmae.data.copy_and_resolve_references()
  c.stmae.data.num_segments = c.stmae.model.num_segments = 8
  c.stmae.model.update(dict(hidden_dim=64, gin_depth=2, num_heads=2, decoder_dim=32))
  c.stmae.train.update(dict(steps=300, batch_size=8, log_every=50, checkpoint_every=100,
                            eval_every=100, best_metric="val/recon_loss", best_mode="min"))
  c.stmae.optim.warmup_steps = 30
  c.stmae.eval.interpret = False

  c.protocol = ml_collections.ConfigDict(dict(
      folds=3, val_subjects=1, mask_ratio=0.5, mask_draws=4, mask_seed=1234,
      bootstrap=10000, level=0.95))
  c.baselines = ("roi_mean", "linear_interp", "ridge", "st_ridge")
  # Model rows: overrides of c.<family>.model, the family named by the row's `name` (default
  # brainmae). `brainmae_prior` is ours; then the paper's BrainMAE, its plain-autoencoder ablation
  # and ST-MAE (`full` adds BrainMAE with temporal attention and the paper's other ablations).
  c.rows = ml_collections.ConfigDict({
      "brainmae_prior": {"linear_prior": True},          # ours: linear prior + residual network
      "brainmae_paper": {"roi_temporal": "none"},        # the paper's model
      "plain_autoencoder": {"mask_ratio": 0.0},
      "stmae": {"name": "stmae"},                        # ST-MAE (configs/stmae.py), c.stmae
  })
  # The rows also scored with their untrained encoder and run on the labelled tasks (ours first).
  c.reference_rows = ("brainmae_prior", "stmae")
  c.cross_tr = (1.44, 2.16)           # held-out scans decimated to these TRs and resampled back
  c.fingerprint_segments = (1, 2)     # query lengths: one 15 s segment, 30 s

  # Labelled tasks on the synthetic cohort: pretrained vs random init vs static-FC baselines.
  # Modes: 'probe' (L2 logistic / ridge on the frozen encoder, penalty by inner CV), 'full'
  # (fine-tuning on the engine: `full` variant only, as it needs ~10 min on 2 cores), 'fc_linear'
  # and 'fc_mlp' (static FC).
  c.labelled = ml_collections.ConfigDict(dict(
      enabled=True, folds=5, targets=("class:classification", "score:regression"),
      modes=("probe", "fc_linear", "fc_mlp"), pretrain_subjects=16, labelled_subjects=24,
      length=1200, seed=7))

  if variant == "smoke":
    c.brainmae.model.update(dict(embed_dim=16, tse_depth=1, decoder_dim=8))
    c.brainmae.train.update(dict(steps=20, batch_size=8, log_every=10, checkpoint_every=10,
                                 eval_every=10))
    c.brainmae.optim.warmup_steps = 2
    c.brainmae.finetune.update(dict(steps=10, batch_size=8))
    c.protocol.update(dict(mask_draws=1, bootstrap=200))
    c.stmae.model.update(dict(hidden_dim=16, gin_depth=1, decoder_dim=8))
    c.stmae.train.update(dict(steps=20, log_every=10, checkpoint_every=10, eval_every=10))
    c.stmae.optim.warmup_steps = 2
    c.stmae.finetune.update(dict(steps=10, batch_size=8))
    c.rows = ml_collections.ConfigDict({"brainmae_prior": {"linear_prior": True},
                                        "plain_autoencoder": {"mask_ratio": 0.0},
                                        "stmae": {"name": "stmae"}})
    c.cross_tr = (1.44,)
    c.labelled.update(dict(folds=2, pretrain_subjects=4, labelled_subjects=6, length=300))
  elif variant == "full":
    full = brainmae.get_config("default")
    c.brainmae.model.update(full.model.to_dict())
    c.brainmae.train.update(dict(steps=full.train.steps, batch_size=full.train.batch_size,
                                 checkpoint_every=250, eval_every=250))
    c.brainmae.optim.warmup_steps = full.optim.warmup_steps
    c.labelled.modes = ("probe", "full", "fc_linear", "fc_mlp")
    c.rows.update(dict(brainmae={},  # per-ROI temporal attention without the prior, and its
                       no_embedding_attention={"embedding_attention": False},  # ablations
                       fixed_roi_embedding={"roi_embedding": "fixed"},
                       self_loops={"self_loops": True}))
  elif variant == "full_prior":  # the `full` variant's cells of our row alone, no labelled tasks
    c = get_config("full")
    c.name = "compare:full_prior"
    c.rows = ml_collections.ConfigDict({"brainmae_prior": c.rows.brainmae_prior.to_dict()})
    c.reference_rows = ("brainmae_prior",)
    c.labelled.enabled = False
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} of configs/compare.py; "
                     "expected one of: default, smoke, full, full_prior")
  return c
