"""Evaluation: a model's loss and top-1/top-5 error over a split (`split_metrics`, used by train, eval, analyze
and bench), and the `namexp eval` command (`command`)."""
