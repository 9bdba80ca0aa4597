"""One training run, dependable and recorded: what the entry point (:mod:`ghmdet.train`) does around ``fit``.

==================  ======================================================================================
``record``          ``metrics.json``: schema, statuses, atomic write, read, git commit, checkpoint path
``run_dir``         the output-dir check (writable, free space) and the run dir's lock (one process)
``config_compare``  resume or skip only a run of the same config (``RESULT_NEUTRAL_KEYS`` aside)
``checkpoint_io``   checkpoints loaded with ``weights_only=True`` and written atomically
``interrupts``      SIGTERM / SIGINT: stop at a step boundary with a checkpoint, exit 128 + signal
``rng_state``       the random states a checkpoint carries for an exact resume
``divergence``      finite checks and the last finite losses of a diverged run
``redaction``       secrets kept out of the record, logger hyperparameters, ``.hydra/`` and the log
==================  ======================================================================================

The callbacks that belong to these (``DivergenceGuard``, ``RunCheckpoints``) are in :mod:`ghmdet.callbacks`.
The rules and the faults they were tested against: ``docs/reliability.md``.
"""
