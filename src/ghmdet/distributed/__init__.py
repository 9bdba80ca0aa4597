"""Multi-GPU, multi-node and cluster plumbing around Lightning DDP and Hydra's launchers.

Nothing here replaces an engine: Lightning's ``DDPStrategy`` runs the processes, Hydra's submitit / joblib
launchers run the sweeps. This package fixes the seams between them (``docs/scaling.md`` explains each):

===============  ===========================================================================================
``relaunch``     :func:`hydra_ddp_job`: Lightning's DDP children re-run this Hydra job, not the whole sweep
``ranks``        :func:`is_rank_zero`: global rank 0 (it writes ``metrics.json``), before any Trainer exists
``gpu_claim``    :func:`claim_gpu`: one GPU per job of ``hydra/launcher=joblib_gpus``; resolver
                 ``ghmdet.gpu_count`` for its ``n_jobs``
``lr_scaling``   :func:`scaled_lr` (resolver ``ghmdet.scaled_lr``): the paper recipe's linear scaling rule
``metric_sync``  :func:`sync_list_states`: torchmetrics list states whose length differs between ranks
===============  ===========================================================================================

Importing the package registers the ``ghmdet.*`` resolvers. The DDP consistency checks (GHM statistics,
evaluation coverage) are Lightning callbacks, in :mod:`ghmdet.callbacks`.
"""

from ghmdet.distributed.gpu_claim import claim_gpu, gpu_count, gpu_pool
from ghmdet.distributed.lr_scaling import scaled_lr
from ghmdet.distributed.metric_sync import sync_list_states
from ghmdet.distributed.ranks import is_rank_zero
from ghmdet.distributed.relaunch import hydra_child_command, hydra_ddp_job

__all__ = [
    "claim_gpu",
    "gpu_count",
    "gpu_pool",
    "hydra_child_command",
    "hydra_ddp_job",
    "is_rank_zero",
    "scaled_lr",
    "sync_list_states",
]
