"""SEDenseNet's Python twin: the same SE-DenseNet-BC as the C++ library, in PyTorch.

Same options, same module names and parameter keys as `sedensenet::DenseNet`, so a state dict
saved by the C++ library (`sedensenet::save_state_dict`) loads here with `load_state_dict`
(strict), and the model can then go to ONNX or torch.export:

    import torch
    from sedensenet import DenseNet, preset

    model = DenseNet(**preset("densenet_bc_100"), num_classes=10)
    model.load_state_dict(torch.load("best_weights.pt", weights_only=True))
    model.eval()
    torch.onnx.export(model, torch.randn(1, 3, 32, 32), "model.onnx")

Keys: features.conv0, features.norm0 (ImageNet stem), features.denseblock{i}.denselayer{j}.
{norm1, conv1, norm2, conv2, se.fc1, se.fc2}, features.transition{i}.{norm, conv}, features.norm5,
classifier. With se_reduction=0 the keys are exactly torchvision's DenseNet keys.

`efficient=True` checkpoints each layer's concatenation + norm1 + relu1 + conv1 with
torch.utils.checkpoint, as the original efficient_densenet_pytorch does (used by the benchmarks
as the Python reference; note that it updates norm1's running statistics twice per step, which
the C++ library's efficient mode does not).

This file depends on torch only.
"""
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp

__all__ = ["SEBlock", "DenseLayer", "DenseBlock", "Transition", "DenseNet", "preset"]


class SEBlock(nn.Module):
    """Squeeze-and-Excitation: x * gate(fc2(relu(fc1(mean_hw(x))))), no biases.

    Hidden width max(min_hidden, channels // reduction) (the original's channels // reduction is
    0 for 12 channels and r = 16). gate "sigmoid" (reference) or "scaled_sigmoid" (2 * sigmoid,
    the identity when fc2 is zero)."""

    def __init__(self, channels, reduction=16, min_hidden=1, gate="sigmoid"):
        super().__init__()
        if gate not in ("sigmoid", "scaled_sigmoid"):
            raise ValueError("gate must be 'sigmoid' or 'scaled_sigmoid', got %r" % gate)
        hidden = max(min_hidden, channels // reduction)
        self.gate = gate
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)
        if gate == "scaled_sigmoid":
            nn.init.zeros_(self.fc2.weight)

    def forward(self, x):
        z = self.fc2(F.relu(self.fc1(x.mean((2, 3)))))
        w = torch.sigmoid(z)
        if self.gate == "scaled_sigmoid":
            w = w * 2.0
        return x * w.view(x.size(0), x.size(1), 1, 1)


def _reference_conv_init(conv):
    n = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    conv.weight.data.normal_(0, math.sqrt(2.0 / n))


class DenseLayer(nn.Module):
    """cat -> norm1 -> relu1 -> conv1 (1x1) -> norm2 -> relu2 -> conv2 (3x3) -> se -> dropout."""

    def __init__(self, in_channels, growth_rate, bn_size=4, drop_rate=0.0, se_reduction=16,
                 se_min_hidden=1, se_gate="sigmoid", efficient=False):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        if se_reduction > 0:
            self.se = SEBlock(growth_rate, se_reduction, se_min_hidden, se_gate)
        else:
            self.se = None
        self.drop_rate = drop_rate
        self.efficient = efficient
        _reference_conv_init(self.conv1)
        _reference_conv_init(self.conv2)

    def bottleneck(self, *inputs):
        x = torch.cat(inputs, 1) if len(inputs) > 1 else inputs[0]
        return self.conv1(self.relu1(self.norm1(x)))

    def forward(self, inputs):
        if self.efficient and self.training and any(t.requires_grad for t in inputs):
            out = cp.checkpoint(self.bottleneck, *inputs, use_reentrant=False)
        else:
            out = self.bottleneck(*inputs)
        out = self.conv2(self.relu2(self.norm2(out)))
        if self.se is not None:
            out = self.se(out)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.Module):
    def __init__(self, num_layers, in_channels, growth_rate, **layer_options):
        super().__init__()
        for i in range(num_layers):
            self.add_module("denselayer%d" % (i + 1),
                            DenseLayer(in_channels + i * growth_rate, growth_rate,
                                       **layer_options))

    def forward(self, x):
        features = [x]
        for layer in self.children():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_channels))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, stride=2))
        _reference_conv_init(self.conv)


class DenseNet(nn.Module):
    """The SE-DenseNet-BC classifier; defaults are the reference's (DenseNet-BC-100 with SE)."""

    def __init__(self, growth_rate=12, block_config=(16, 16, 16), num_init_features=24,
                 compression=0.5, bn_size=4, drop_rate=0.0, num_classes=10, small_inputs=True,
                 se_reduction=16, se_min_hidden=1, se_gate="sigmoid", efficient=False,
                 stem_stride=1):
        super().__init__()
        if not 0 < compression <= 1:
            raise ValueError("compression must be in (0, 1], got %r" % compression)
        if stem_stride not in (1, 2) or (not small_inputs and stem_stride != 1):
            raise ValueError("stem_stride must be 1 or 2, and 1 with the ImageNet stem; got %r"
                             % stem_stride)
        if small_inputs:
            stem = [("conv0", nn.Conv2d(3, num_init_features, 3, stride=stem_stride, padding=1,
                                        bias=False))]
        else:
            stem = [("conv0", nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False)),
                    ("norm0", nn.BatchNorm2d(num_init_features)),
                    ("relu0", nn.ReLU(inplace=True)),
                    ("pool0", nn.MaxPool2d(3, stride=2, padding=1))]
        _reference_conv_init(stem[0][1])
        self.features = nn.Sequential(OrderedDict(stem))
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(
                "denseblock%d" % (i + 1),
                DenseBlock(num_layers, channels, growth_rate, bn_size=bn_size,
                           drop_rate=drop_rate, se_reduction=se_reduction,
                           se_min_hidden=se_min_hidden, se_gate=se_gate, efficient=efficient))
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                out = int(math.floor(channels * compression))
                self.features.add_module("transition%d" % (i + 1), Transition(channels, out))
                channels = out
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, num_classes)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x):
        out = F.relu(self.features(x), inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1)).flatten(1)
        return self.classifier(out)


def preset(name):
    """Shape options of a preset, as DenseNetOptions::preset in C++: densenet121/169/201/161,
    densenet_small or densenet_bc_<depth>[_k<growth>]."""
    imagenet = {
        "densenet121": (32, (6, 12, 24, 16), 64),
        "densenet169": (32, (6, 12, 32, 32), 64),
        "densenet201": (32, (6, 12, 48, 32), 64),
        "densenet161": (48, (6, 12, 36, 24), 96),
    }
    if name in imagenet:
        k, blocks, init = imagenet[name]
        return dict(growth_rate=k, block_config=blocks, num_init_features=init,
                    small_inputs=False)
    if name == "densenet_small":
        return dict(growth_rate=16, block_config=(6, 6), num_init_features=32, small_inputs=True,
                    stem_stride=2)
    if name.startswith("densenet_bc_"):
        rest = name[len("densenet_bc_"):]
        depth, _, growth = rest.partition("_k")
        depth, growth = int(depth), int(growth or 12)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError("depth must be 6n + 4, got %d" % depth)
        n = (depth - 4) // 6
        return dict(growth_rate=growth, block_config=(n, n, n), num_init_features=2 * growth,
                    small_inputs=True)
    raise ValueError("unknown preset %r" % name)
