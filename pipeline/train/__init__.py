"""Training: policy SFT (:mod:`pipeline.train.sft`) and the PPM (:mod:`pipeline.train.ppm`).

Both share :class:`pipeline.train.common.TrainConfig` (params groups ``warm_start``,
``train_policy``, ``train_ppm``) and one loop that runs on CPU as a single process and on
several GPUs under ``accelerate launch``. The model itself lives in :mod:`pipeline.ppm`.
"""
