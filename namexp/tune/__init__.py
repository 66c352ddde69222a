"""`namexp tune`: Optuna studies whose trials are K-seed namexp runs on the validation split (see command.py)."""
