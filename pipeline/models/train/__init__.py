"""Training: policy SFT (module ``sft``) and the PPM (module ``ppm``) of pipeline.models.train.

Both share :class:`pipeline.models.train.common.TrainConfig` (params groups ``warm_start``,
``train_policy``, ``train_ppm``) and one loop that runs on CPU as a single process and on
several GPUs under ``accelerate launch``. The model itself lives in :mod:`pipeline.models.ppm`.
"""
