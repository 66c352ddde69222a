"""Sweeps on a Slurm cluster: namexp's launcher on top of hydra-submitit-launcher."""
