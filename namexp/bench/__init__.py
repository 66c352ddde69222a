"""`namexp bench`: how fast namexp trains, against the limit and against the reference pipeline.

For one configuration (backbone, attention, batch size, device, precision, channels_last, compile -- all
from Hydra overrides, as for `namexp train`), in one process and on one model:

1. **limit**: forward + backward + optimizer step on a batch already on the device (normalised, in the
   right memory format), nothing else: namexp's own `training_step` without the sparsity term; on CUDA
   synchronised only at the timer boundaries.
2. **namexp**: namexp's own training step, i.e. whole calls of `namexp.train.loop.train_epoch` with
   `trainer.limit_train_batches` = steps: the on-device data pipeline (uint8 store, crop/flip, normalise),
   the loss with the sparsity penalty, the metric sums and the loss read-back at `trainer.log_interval`.
3. **reference**: what the official NAM script does: a torch DataLoader over per-image PIL transforms
   (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) with `trainer.num_workers`
   workers, shuffled, pinned on CUDA; per step `.to(device)`, forward, loss, backward, step, `loss.item()`.
   A persistent iterator is used, so worker start-up is not timed.

Each is timed over `--steps` steps after `--warmup` steps (which also cover torch.compile's compilation),
`--repeats` times, interleaved (limit, namexp, reference, rotating the order), and the median is reported,
as timm's benchmark.py does. Then the eval latency of one eval batch (inference mode) and, for a list of
attention types, the training-step and inference overheads over `none` on the same backbone (pure model
cost, limit-style steps, interleaved across attention types per repeat).

The steps, one module each: `plan` (options and overrides -> the configurations to time), `measure` with
`timing`, `pipelines` and `overheads` (the timing), `record` (the result dict, format `record.FORMAT`),
`publish` (terminal tables, Markdown, JSON); `command` runs them in that order.
"""
