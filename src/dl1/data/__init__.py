"""Every dataset once: CIFAR-10/100, MNIST, Fashion-MNIST (``vision``), text (``text``), batching (``loaders``)."""
