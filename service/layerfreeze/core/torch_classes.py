# ruff: noqa: E501  (generated data: one class per line)
"""torch.nn's own class hierarchy as data, so ``types`` rules get ``isinstance`` semantics without torch.

``BASES[qualified class] = direct nn.Module bases`` (``torch.nn.modules.module.Module`` implied and left
out). Generated from torch 2.13.0 by ``python tests/core/torch_nn_classes.py``; a test checks it against
the real MROs of every nn.Module class torch.nn exposes. Classes outside this table (user classes,
``transformers`` ...) are known by their own name only: a pickle records a class's name, never its bases.
"""

from __future__ import annotations

from functools import lru_cache

MODULE = "torch.nn.modules.module.Module"

_BY_MODULE: dict[str, dict[str, tuple[str, ...]]] = {
    "torch.nn.modules.activation": {
        "CELU": (),
        "ELU": (),
        "GELU": (),
        "GLU": (),
        "Hardshrink": (),
        "Hardsigmoid": (),
        "Hardswish": (),
        "Hardtanh": (),
        "LeakyReLU": (),
        "LogSigmoid": (),
        "LogSoftmax": (),
        "Mish": (),
        "MultiheadAttention": (),
        "PReLU": (),
        "RReLU": (),
        "ReLU": (),
        "ReLU6": ("torch.nn.modules.activation.Hardtanh",),
        "SELU": (),
        "SiLU": (),
        "Sigmoid": (),
        "Softmax": (),
        "Softmax2d": (),
        "Softmin": (),
        "Softplus": (),
        "Softshrink": (),
        "Softsign": (),
        "Tanh": (),
        "Tanhshrink": (),
        "Threshold": (),
    },
    "torch.nn.modules.adaptive": {
        "AdaptiveLogSoftmaxWithLoss": (),
    },
    "torch.nn.modules.batchnorm": {
        "BatchNorm1d": ("torch.nn.modules.batchnorm._BatchNorm",),
        "BatchNorm2d": ("torch.nn.modules.batchnorm._BatchNorm",),
        "BatchNorm3d": ("torch.nn.modules.batchnorm._BatchNorm",),
        "LazyBatchNorm1d": ("torch.nn.modules.batchnorm._LazyNormBase", "torch.nn.modules.batchnorm._BatchNorm"),
        "LazyBatchNorm2d": ("torch.nn.modules.batchnorm._LazyNormBase", "torch.nn.modules.batchnorm._BatchNorm"),
        "LazyBatchNorm3d": ("torch.nn.modules.batchnorm._LazyNormBase", "torch.nn.modules.batchnorm._BatchNorm"),
        "SyncBatchNorm": ("torch.nn.modules.batchnorm._BatchNorm",),
        "_BatchNorm": ("torch.nn.modules.batchnorm._NormBase",),
        "_LazyNormBase": ("torch.nn.modules.batchnorm._NormBase",),
        "_NormBase": (),
    },
    "torch.nn.modules.channelshuffle": {
        "ChannelShuffle": (),
    },
    "torch.nn.modules.container": {
        "Container": (),
        "ModuleDict": (),
        "ModuleList": (),
        "ParameterDict": (),
        "ParameterList": (),
        "Sequential": (),
    },
    "torch.nn.modules.conv": {
        "Conv1d": ("torch.nn.modules.conv._ConvNd",),
        "Conv2d": ("torch.nn.modules.conv._ConvNd",),
        "Conv3d": ("torch.nn.modules.conv._ConvNd",),
        "ConvTranspose1d": ("torch.nn.modules.conv._ConvTransposeNd",),
        "ConvTranspose2d": ("torch.nn.modules.conv._ConvTransposeNd",),
        "ConvTranspose3d": ("torch.nn.modules.conv._ConvTransposeNd",),
        "LazyConv1d": ("torch.nn.modules.conv.Conv1d",),
        "LazyConv2d": ("torch.nn.modules.conv.Conv2d",),
        "LazyConv3d": ("torch.nn.modules.conv.Conv3d",),
        "LazyConvTranspose1d": ("torch.nn.modules.conv.ConvTranspose1d",),
        "LazyConvTranspose2d": ("torch.nn.modules.conv.ConvTranspose2d",),
        "LazyConvTranspose3d": ("torch.nn.modules.conv.ConvTranspose3d",),
        "_ConvNd": (),
        "_ConvTransposeMixin": ("torch.nn.modules.conv._ConvTransposeNd",),
        "_ConvTransposeNd": ("torch.nn.modules.conv._ConvNd",),
    },
    "torch.nn.modules.distance": {
        "CosineSimilarity": (),
        "PairwiseDistance": (),
    },
    "torch.nn.modules.dropout": {
        "AlphaDropout": ("torch.nn.modules.dropout._DropoutNd",),
        "Dropout": ("torch.nn.modules.dropout._DropoutNd",),
        "Dropout1d": ("torch.nn.modules.dropout._DropoutNd",),
        "Dropout2d": ("torch.nn.modules.dropout._DropoutNd",),
        "Dropout3d": ("torch.nn.modules.dropout._DropoutNd",),
        "FeatureAlphaDropout": ("torch.nn.modules.dropout._DropoutNd",),
        "_DropoutNd": (),
    },
    "torch.nn.modules.flatten": {
        "Flatten": (),
        "Unflatten": (),
    },
    "torch.nn.modules.fold": {
        "Fold": (),
        "Unfold": (),
    },
    "torch.nn.modules.instancenorm": {
        "InstanceNorm1d": ("torch.nn.modules.instancenorm._InstanceNorm",),
        "InstanceNorm2d": ("torch.nn.modules.instancenorm._InstanceNorm",),
        "InstanceNorm3d": ("torch.nn.modules.instancenorm._InstanceNorm",),
        "LazyInstanceNorm1d": ("torch.nn.modules.batchnorm._LazyNormBase", "torch.nn.modules.instancenorm._InstanceNorm"),
        "LazyInstanceNorm2d": ("torch.nn.modules.batchnorm._LazyNormBase", "torch.nn.modules.instancenorm._InstanceNorm"),
        "LazyInstanceNorm3d": ("torch.nn.modules.batchnorm._LazyNormBase", "torch.nn.modules.instancenorm._InstanceNorm"),
        "_InstanceNorm": ("torch.nn.modules.batchnorm._NormBase",),
    },
    "torch.nn.modules.linear": {
        "Bilinear": (),
        "Identity": (),
        "LazyLinear": ("torch.nn.modules.linear.Linear",),
        "Linear": (),
        "NonDynamicallyQuantizableLinear": ("torch.nn.modules.linear.Linear",),
    },
    "torch.nn.modules.loss": {
        "BCELoss": ("torch.nn.modules.loss._WeightedLoss",),
        "BCEWithLogitsLoss": ("torch.nn.modules.loss._Loss",),
        "CTCLoss": ("torch.nn.modules.loss._Loss",),
        "CosineEmbeddingLoss": ("torch.nn.modules.loss._Loss",),
        "CrossEntropyLoss": ("torch.nn.modules.loss._WeightedLoss",),
        "GaussianNLLLoss": ("torch.nn.modules.loss._Loss",),
        "HingeEmbeddingLoss": ("torch.nn.modules.loss._Loss",),
        "HuberLoss": ("torch.nn.modules.loss._Loss",),
        "KLDivLoss": ("torch.nn.modules.loss._Loss",),
        "L1Loss": ("torch.nn.modules.loss._Loss",),
        "LinearCrossEntropyLoss": ("torch.nn.modules.loss._WeightedLoss",),
        "MSELoss": ("torch.nn.modules.loss._Loss",),
        "MarginRankingLoss": ("torch.nn.modules.loss._Loss",),
        "MultiLabelMarginLoss": ("torch.nn.modules.loss._Loss",),
        "MultiLabelSoftMarginLoss": ("torch.nn.modules.loss._WeightedLoss",),
        "MultiMarginLoss": ("torch.nn.modules.loss._WeightedLoss",),
        "NLLLoss": ("torch.nn.modules.loss._WeightedLoss",),
        "NLLLoss2d": ("torch.nn.modules.loss.NLLLoss",),
        "PoissonNLLLoss": ("torch.nn.modules.loss._Loss",),
        "SmoothL1Loss": ("torch.nn.modules.loss._Loss",),
        "SoftMarginLoss": ("torch.nn.modules.loss._Loss",),
        "TripletMarginLoss": ("torch.nn.modules.loss._Loss",),
        "TripletMarginWithDistanceLoss": ("torch.nn.modules.loss._Loss",),
        "_Loss": (),
        "_WeightedLoss": ("torch.nn.modules.loss._Loss",),
    },
    "torch.nn.modules.module": {
        "Module": (),
    },
    "torch.nn.modules.normalization": {
        "CrossMapLRN2d": (),
        "GroupNorm": (),
        "LayerNorm": (),
        "LocalResponseNorm": (),
        "RMSNorm": (),
    },
    "torch.nn.modules.padding": {
        "CircularPad1d": ("torch.nn.modules.padding._CircularPadNd",),
        "CircularPad2d": ("torch.nn.modules.padding._CircularPadNd",),
        "CircularPad3d": ("torch.nn.modules.padding._CircularPadNd",),
        "ConstantPad1d": ("torch.nn.modules.padding._ConstantPadNd",),
        "ConstantPad2d": ("torch.nn.modules.padding._ConstantPadNd",),
        "ConstantPad3d": ("torch.nn.modules.padding._ConstantPadNd",),
        "ReflectionPad1d": ("torch.nn.modules.padding._ReflectionPadNd",),
        "ReflectionPad2d": ("torch.nn.modules.padding._ReflectionPadNd",),
        "ReflectionPad3d": ("torch.nn.modules.padding._ReflectionPadNd",),
        "ReplicationPad1d": ("torch.nn.modules.padding._ReplicationPadNd",),
        "ReplicationPad2d": ("torch.nn.modules.padding._ReplicationPadNd",),
        "ReplicationPad3d": ("torch.nn.modules.padding._ReplicationPadNd",),
        "ZeroPad1d": ("torch.nn.modules.padding.ConstantPad1d",),
        "ZeroPad2d": ("torch.nn.modules.padding.ConstantPad2d",),
        "ZeroPad3d": ("torch.nn.modules.padding.ConstantPad3d",),
        "_CircularPadNd": (),
        "_ConstantPadNd": (),
        "_ReflectionPadNd": (),
        "_ReplicationPadNd": (),
    },
    "torch.nn.modules.pixelshuffle": {
        "PixelShuffle": (),
        "PixelUnshuffle": (),
    },
    "torch.nn.modules.pooling": {
        "AdaptiveAvgPool1d": ("torch.nn.modules.pooling._AdaptiveAvgPoolNd",),
        "AdaptiveAvgPool2d": ("torch.nn.modules.pooling._AdaptiveAvgPoolNd",),
        "AdaptiveAvgPool3d": ("torch.nn.modules.pooling._AdaptiveAvgPoolNd",),
        "AdaptiveMaxPool1d": ("torch.nn.modules.pooling._AdaptiveMaxPoolNd",),
        "AdaptiveMaxPool2d": ("torch.nn.modules.pooling._AdaptiveMaxPoolNd",),
        "AdaptiveMaxPool3d": ("torch.nn.modules.pooling._AdaptiveMaxPoolNd",),
        "AvgPool1d": ("torch.nn.modules.pooling._AvgPoolNd",),
        "AvgPool2d": ("torch.nn.modules.pooling._AvgPoolNd",),
        "AvgPool3d": ("torch.nn.modules.pooling._AvgPoolNd",),
        "FractionalMaxPool2d": (),
        "FractionalMaxPool3d": (),
        "LPPool1d": ("torch.nn.modules.pooling._LPPoolNd",),
        "LPPool2d": ("torch.nn.modules.pooling._LPPoolNd",),
        "LPPool3d": ("torch.nn.modules.pooling._LPPoolNd",),
        "MaxPool1d": ("torch.nn.modules.pooling._MaxPoolNd",),
        "MaxPool2d": ("torch.nn.modules.pooling._MaxPoolNd",),
        "MaxPool3d": ("torch.nn.modules.pooling._MaxPoolNd",),
        "MaxUnpool1d": ("torch.nn.modules.pooling._MaxUnpoolNd",),
        "MaxUnpool2d": ("torch.nn.modules.pooling._MaxUnpoolNd",),
        "MaxUnpool3d": ("torch.nn.modules.pooling._MaxUnpoolNd",),
        "_AdaptiveAvgPoolNd": (),
        "_AdaptiveMaxPoolNd": (),
        "_AvgPoolNd": (),
        "_LPPoolNd": (),
        "_MaxPoolNd": (),
        "_MaxUnpoolNd": (),
    },
    "torch.nn.modules.rnn": {
        "GRU": ("torch.nn.modules.rnn.RNNBase",),
        "GRUCell": ("torch.nn.modules.rnn.RNNCellBase",),
        "LSTM": ("torch.nn.modules.rnn.RNNBase",),
        "LSTMCell": ("torch.nn.modules.rnn.RNNCellBase",),
        "RNN": ("torch.nn.modules.rnn.RNNBase",),
        "RNNBase": (),
        "RNNCell": ("torch.nn.modules.rnn.RNNCellBase",),
        "RNNCellBase": (),
    },
    "torch.nn.modules.sparse": {
        "Embedding": (),
        "EmbeddingBag": (),
    },
    "torch.nn.modules.transformer": {
        "Transformer": (),
        "TransformerDecoder": (),
        "TransformerDecoderLayer": (),
        "TransformerEncoder": (),
        "TransformerEncoderLayer": (),
    },
    "torch.nn.modules.upsampling": {
        "Upsample": (),
        "UpsamplingBilinear2d": ("torch.nn.modules.upsampling.Upsample",),
        "UpsamplingNearest2d": ("torch.nn.modules.upsampling.Upsample",),
    },
    "torch.nn.parallel.data_parallel": {
        "DataParallel": (),
    },
}

BASES: dict[str, tuple[str, ...]] = {
    f"{module}.{name}": bases for module, names in _BY_MODULE.items() for name, bases in names.items()
}


@lru_cache(maxsize=4096)
def ancestors(qualified: str) -> tuple[str, ...]:
    """The class itself and every torch.nn class it derives from, nearest first, MODULE last: every class
    recorded in a module tree is an ``nn.Module``, even one this table does not know."""
    seen: list[str] = []
    stack = [qualified]
    while stack:
        name = stack.pop(0)
        if name in seen:
            continue
        seen.append(name)
        stack.extend(BASES.get(name, ()))
    if MODULE not in seen:
        seen.append(MODULE)
    return tuple(seen)


def public_name(qualified: str) -> str | None:
    """``torch.nn.modules.linear.Linear`` -> ``torch.nn.Linear`` (how users write torch.nn classes)."""
    if qualified.startswith("torch.nn.modules.") or qualified.startswith("torch.nn.parallel."):
        return "torch.nn." + qualified.rsplit(".", 1)[1]
    return None
