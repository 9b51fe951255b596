"""spotlight-scale: foreground-aware virtual staining (Spotlight, Kalinin et al. 2025)
at the scale of high-content screens.

Layers (imports point one way, top to bottom):

- ``core``      pure array functions (statistics, losses, segmentation, metrics)
- ``chunked``   the thin Dask layer over ``core``
- ``io``        the store (OME-Zarr HCS plates, Parquet tables), versioned
- ``models``    plain ``nn.Module`` definitions
- ``train``     sampler, trainer, DDP launch, checkpoints
- ``pipelines`` one function per CLI stage
- ``cli``       thin click commands
- ``cluster``   the one place that knows local / slurm / cuda / address
"""

__version__ = "0.1.0"
