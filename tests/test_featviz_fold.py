"""BatchNorm folding (harmonia.models.fold_bn) and feature visualization on the folded network."""

from __future__ import annotations

import timm
import torch
import torch.nn as nn
from timm.layers import BatchNormAct2d

from harmonia.featviz import maco
from harmonia.models.fold_bn import FoldedNorm, fold_batchnorm
from harmonia.models.wrapper import HarmoniaModel, Preprocessing


def _random_statistics(net: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (a fresh BatchNorm is the identity)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return net.eval()


def _logits_and_grad(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = net(x)
    (g,) = torch.autograd.grad(y[:, 0].sum(), x)
    return y.detach(), g


def test_folded_network_gives_the_same_logits_and_gradients():
    torch.manual_seed(0)
    net = _random_statistics(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), BatchNormAct2d(8, act_layer=nn.SiLU), nn.Conv2d(8, 8, 3, groups=8, bias=False),
        nn.BatchNorm2d(8), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)))
    x = torch.rand(4, 3, 16, 16)
    folded, n = fold_batchnorm(net, x[:2])
    assert n == 2 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert isinstance(folded[1], FoldedNorm) and isinstance(folded[3], nn.Identity)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is not changed
    want, want_grad = _logits_and_grad(net, x)
    got, got_grad = _logits_and_grad(folded, x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # smooth activations: elementwise
    torch.testing.assert_close(got_grad, want_grad, atol=1e-5, rtol=1e-5)


def test_folding_a_timm_network_and_what_it_leaves_alone():
    torch.manual_seed(0)
    net = _random_statistics(timm.create_model("resnet10t", pretrained=False, num_classes=5))
    x = torch.rand(2, 3, 32, 32)
    folded, n = fold_batchnorm(net, x)
    assert n == sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 5
    torch.testing.assert_close(_logits_and_grad(folded, x)[0], _logits_and_grad(net, x)[0], atol=1e-5, rtol=1e-5)
    # a hooked conv keeps its own output (its BatchNorm stays)
    kept, n_kept = fold_batchnorm(net, x, keep={"layer1.0.conv1"})
    assert n_kept == n - 1 and isinstance(kept.get_submodule("layer1.0.bn1"), nn.BatchNorm2d)


class _ConvUsedTwice(nn.Module):
    """The conv's output goes to the BatchNorm and, unnormalised, to a skip: not foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return (self.bn(y) + y).mean((2, 3))


def test_a_conv_output_used_elsewhere_is_not_folded():
    net = _random_statistics(_ConvUsedTwice())
    same, n = fold_batchnorm(net, torch.rand(2, 3, 8, 8))
    assert n == 0 and same is net


def test_maco_on_the_folded_network_is_the_same_run():
    torch.manual_seed(0)
    net = _random_statistics(timm.create_model("resnet10t", pretrained=False, num_classes=5))
    model = HarmoniaModel(net, "timm:resnet10t", Preprocessing(input_size=(32, 32))).eval()
    specs = ["class:1", "channel:layer2.0.conv1:3"]  # a hooked conv: kept unfolded
    on = maco(model, specs, steps=1, image_size=32, crops=2, seed=3)
    off = maco(model, specs, steps=1, image_size=32, crops=2, seed=3, fold_bn=False)
    assert on.extras["batchnorms_folded"] > 0 and off.extras["batchnorms_folded"] == 0
    # one step: the same gradient (the transparency) and update, to float rounding
    torch.testing.assert_close(on.transparency, off.transparency, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(on.images, off.images, atol=1e-5, rtol=1e-5)
    # more steps: NAdam's normalised updates amplify rounding differences, slowly
    on = maco(model, specs, steps=4, image_size=32, crops=2, seed=3)
    off = maco(model, specs, steps=4, image_size=32, crops=2, seed=3, fold_bn=False)
    torch.testing.assert_close(on.trace, off.trace, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(on.images, off.images, atol=1e-2, rtol=0)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the model itself is not changed

