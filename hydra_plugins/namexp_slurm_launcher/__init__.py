"""Hydra accepts launchers only from the hydra_plugins namespace (it registers them by module name): namexp's
Slurm launcher, named from there. The work is in namexp/cluster/launcher.py."""

from __future__ import annotations

from namexp.cluster.launcher import SlurmSweepLauncher


class NamexpSlurmLauncher(SlurmSweepLauncher):
    pass
