"""The run package: everything about one run's process and folder, one job per module.

* :mod:`dl1.run.torchrun`: torchrun's environment (world size, rank, local rank), torch-free;
* :mod:`dl1.run.device`: seeding, device choice, memory probing;
* :mod:`dl1.run.env`: versions, git state and ``env.json`` (given the process group's facts);
* :mod:`dl1.run.files`: atomic writes, no writes through symbolic links, JSON read with limits, ``metrics.jsonl``;
* :mod:`dl1.run.lock`: ``run.lock``, the one process that writes a run folder;
* :mod:`dl1.run.folder`: :class:`~dl1.run.folder.Run`, the folder a run writes;
* :mod:`dl1.run.reader`: :class:`~dl1.run.reader.RunFolder`, the folder as report, replay and export read it;
* :mod:`dl1.run.tensorboard`: TensorBoard event files beside ``metrics.jsonl``.

Nothing is imported here, so that importing one module (``torchrun`` from the training side) loads only what it needs.
"""
