"""Every dataset once.

* ``catalog`` (torch-free: what experiment specs and preflights read): every dataset and augmentation name the flags
  accept, and where a dataset's files are (data folder, system copy, download, the one-line offline message);
* ``vision``: CIFAR-10/100, MNIST, Fashion-MNIST as torch datasets and NumPy arrays with the course's normalisation
  and seeded splits;
* ``cifar``: the CIFAR python-version files, read through ``safe_pickle`` (plain containers and NumPy arrays only);
* ``idx``: IDX header checks and gzip decompression that leaves no partial file;
* ``augment``: augmentations by name, placed in the transform pipeline; ``transfer``: the ResNet-18 probe's datasets;
* ``images``: uint8 images for the generative models; ``text``: character corpora; ``clip``: CLIP's datasets;
  ``fashion_clip``: Fashion-MNIST and its shifted copies for CLIP, the mini-CLIP's caption batches;
* ``loaders``: batching that resumes exactly; ``fake``: tiny files in the real formats for tests.
"""
