"""The experiments runner: train small models with and without each technique, then report.

Data flows one way::

    cli (absl flags + ml_collections.config_flags)
      -> config (the ConfigDict schema) -> validation -> typed_config (a frozen StudyConfig)
      -> data (Dataset) -> runs (the Grid of seeds x sweep points)
      -> program.make_experiment (pure single-run init / train_chunk / evaluate, train.py)
      -> Program (compiled; strategy.py picks vmap / sequential / ... before compiling)
      -> runner (chunks, divergence, hooks.py) -> checkpoint (orbax), writer (metrics.jsonl),
         tensorboard -> report and figures

Extension points a config can name: a model factory (extensions.py), a dataset loader
(data.register_dataset or an import path) and a technique (registry.register_norm).
The built-in studies (claims measured with error bars) are in :mod:`experiments.studies`.
"""
