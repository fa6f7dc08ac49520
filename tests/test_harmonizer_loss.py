"""The neural harmonizer loss against hand / numpy computations, and its cheap path against the reference."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from harmonia.models.wrapper import IMAGENET_MEAN, IMAGENET_STD, HarmoniaModel, Preprocessing
from harmonia.training import (
    disable_fused_attention,
    harmonizer_loss,
    pyramid,
    same_padding,
    standardize_cut,
    weight_params,
)

K = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


# ----------------------------------------------------------------------------- numpy references


def np_standardize_cut(m: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = m.mean(axis=(-2, -1), keepdims=True)
    std = m.std(axis=(-2, -1), keepdims=True)  # numpy's default is the population std
    return np.maximum((m - mean) / (std + eps), 0.0)


def np_down(m: np.ndarray) -> np.ndarray:
    """One pyramid step with explicit loops: TF SAME zero padding, 5x5 binomial, stride 2."""
    out = []
    for size in m.shape:
        n_out = -(-size // 2)
        total = max((n_out - 1) * 2 + 5 - size, 0)
        out.append((n_out, total // 2))
    (h_out, top), (w_out, left) = out
    res = np.zeros((h_out, w_out))
    for i in range(h_out):
        for j in range(w_out):
            for u in range(5):
                for v in range(5):
                    r, c = 2 * i + u - top, 2 * j + v - left
                    if 0 <= r < m.shape[0] and 0 <= c < m.shape[1]:
                        res[i, j] += K[u, v] * m[r, c]
    return res


def np_pyramid(m: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [m]
    for _ in range(levels - 1):
        out.append(np_down(out[-1]))
    return out


def np_harmonization(sal: np.ndarray, human: np.ndarray, tokens: np.ndarray, levels: int) -> float:
    z_s, z_h = np_standardize_cut(sal), np_standardize_cut(human)
    h = z_h / (z_h.max(axis=(1, 2), keepdims=True) + 1e-6) * (z_s.max(axis=(1, 2), keepdims=True) + 1e-6)
    mses = []
    for lvl in range(levels):
        diffs = []
        for n in range(sal.shape[0]):
            diffs.append((np_pyramid(z_s[n], levels)[lvl] - np_pyramid(h[n], levels)[lvl]) ** 2 * tokens[n])
        mses.append(np.mean(np.stack(diffs)))  # mean over (n, h, w) of the whole batch
    return float(np.mean(mses))


def np_cross_entropy(logits: np.ndarray, labels: np.ndarray, smoothing: float = 0.1) -> float:
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    nll = -logp[np.arange(len(labels)), labels]
    return float(np.mean((1 - smoothing) * nll - smoothing * logp.mean(1)))


# ----------------------------------------------------------------------------- tiny models


def linear_model(size: int = 8, classes: int = 4) -> HarmoniaModel:
    """logit = W . normalise(x) + b: the saliency is W_y / std per channel, independent of x."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, classes))
    return HarmoniaModel(net, "linear", Preprocessing(input_size=(size, size))).double().eval()


class SmallNet(nn.Module):
    def __init__(self, norm: str = "batch", act: type[nn.Module] = nn.ReLU, classes: int = 4) -> None:
        super().__init__()

        def make_norm(c: int) -> nn.Module:
            return {"batch": nn.BatchNorm2d(c), "group": nn.GroupNorm(2, c), "none": nn.Identity()}[norm]

        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), make_norm(4), act(),
            nn.Conv2d(4, 4, 3, stride=2, padding=1), make_norm(4), act(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def small_model(norm: str = "batch", act: type[nn.Module] = nn.ReLU, size: int = 8) -> HarmoniaModel:
    torch.manual_seed(0)
    return HarmoniaModel(SmallNet(norm, act), "small", Preprocessing(input_size=(size, size))).double()


def batch(n: int = 5, size: int = 8, classes: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=g)
    human = torch.rand(n, size, size, generator=g, dtype=torch.float64)
    return images, labels, human


# ----------------------------------------------------------------------------- standardize_cut, pyramid


def test_standardize_cut_matches_numpy():
    m = torch.randn(3, 5, 7, dtype=torch.float64)
    np.testing.assert_allclose(standardize_cut(m).numpy(), np_standardize_cut(m.numpy()), rtol=1e-12, atol=1e-12)


def test_standardize_cut_of_a_constant_map_is_zero_with_a_finite_gradient():
    m = torch.full((1, 4, 4), 3.0, requires_grad=True)
    out = standardize_cut(m)
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.isfinite(m.grad).all()


def test_same_padding_is_tensorflows():
    # even: 1 before, 2 after; odd: 2 and 2 (out = ceil(n / 2), pad = (out - 1) * 2 + 5 - n)
    assert [same_padding(n) for n in (224, 8, 6, 7, 5, 1)] == [(1, 2), (1, 2), (1, 2), (2, 2), (2, 2), (2, 2)]


def test_pyramid_offsets_on_a_delta():
    even = torch.zeros(1, 8, 8)
    even[0, 0, 0] = 1.0
    # 1 pixel of padding before: output (0, 0) sees the delta at kernel tap (1, 1) = 4 * 4 / 256
    assert pyramid(even, 2)[1][0, 0, 0].item() == pytest.approx(16 / 256)
    odd = torch.zeros(1, 7, 7)
    odd[0, 0, 0] = 1.0
    # 2 pixels before: the delta sits under the kernel's centre tap, 6 * 6 / 256
    assert pyramid(odd, 2)[1][0, 0, 0].item() == pytest.approx(36 / 256)
    # a delta at (3, 5) of an 8x8 map lands on out(i, j) = K[3 + 1 - 2i, 5 + 1 - 2j]
    d = torch.zeros(1, 8, 8, dtype=torch.float64)
    d[0, 3, 5] = 1.0
    expected = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            u, v = 4 - 2 * i, 6 - 2 * j
            if 0 <= u < 5 and 0 <= v < 5:
                expected[i, j] = K[u, v]
    np.testing.assert_allclose(pyramid(d, 2)[1][0].numpy(), expected, atol=1e-15)


@pytest.mark.parametrize("shape", [(8, 8), (9, 12), (7, 5)])
def test_pyramid_matches_numpy(shape):
    m = torch.rand(2, *shape, dtype=torch.float64)
    levels = pyramid(m, 4)
    for n in range(2):
        for got, want in zip(levels, np_pyramid(m[n].numpy(), 4)):
            np.testing.assert_allclose(got[n].numpy(), want, rtol=1e-12, atol=1e-14)


def test_pyramid_shapes_and_layouts():
    sizes = [tuple(p.shape[-2:]) for p in pyramid(torch.zeros(1, 224, 224))]
    assert sizes == [(224, 224), (112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]
    four_d = pyramid(torch.rand(2, 1, 16, 16), 3)
    assert [tuple(p.shape) for p in four_d] == [(2, 1, 16, 16), (2, 1, 8, 8), (2, 1, 4, 4)]
    assert torch.allclose(four_d[2][:, 0], pyramid(four_d[0][:, 0], 3)[2])


# ----------------------------------------------------------------------------- the loss by hand


@pytest.mark.parametrize("only_contributing", [True, False])
@pytest.mark.parametrize(
    "saliency_input,levels,reducer",
    [("pixels", 5, "mean"), ("pixels", 6, "mean"), ("normalized", 5, "mean"), ("pixels", 5, "max_abs"), ("pixels", 5, "abs_mean")],
)
def test_each_part_matches_a_hand_computation(only_contributing, saliency_input, levels, reducer):
    model = linear_model()
    images, labels, human = batch(3)
    tokens = torch.tensor([1.0, 0.0, 1.0])
    out = harmonizer_loss(model, images, labels, human, tokens, levels=levels, reducer=reducer,
                          saliency_input=saliency_input, only_contributing=only_contributing,
                          lambda_harmonization=2.0, lambda_weights=1e-3)

    lin = model.net[1]
    W, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    # the wrapper's float32 constants, as it uses them
    mean, std = model._mean.numpy()[0], model._std.numpy()[0]
    assert np.allclose(mean[:, 0, 0], IMAGENET_MEAN) and np.allclose(std[:, 0, 0], IMAGENET_STD)
    x = images.numpy()
    logits = ((x - mean) / std).reshape(3, -1) @ W.T + b
    np.testing.assert_allclose(out.logits.detach().numpy(), logits, rtol=1e-12)

    # d logit_y / d pixel = W_y / std (per channel); w.r.t. the normalised input it is W_y itself
    grads = W[labels.numpy()].reshape(3, 3, 8, 8)
    if saliency_input == "pixels":
        grads = grads / std
    sal = {"mean": grads.mean(1), "max_abs": np.abs(grads).max(1), "abs_mean": np.abs(grads.mean(1))}[reducer]

    ce = np_cross_entropy(logits, labels.numpy())
    lh = np_harmonization(sal, human.numpy(), tokens.numpy(), levels)
    lw = 0.5 * ((W**2).sum() + (b**2).sum())
    assert out.cross_entropy.item() == pytest.approx(ce, rel=1e-10)
    assert out.harmonization.item() == pytest.approx(lh, rel=1e-6)  # maps in float32 for max_abs / abs_mean
    assert out.weights.item() == pytest.approx(lw, rel=1e-10)
    assert out.total.item() == pytest.approx(ce + 1e-3 * lw + 2.0 * lh, rel=1e-6)
    assert lh > 0


def test_six_levels_differ_from_five():
    model = linear_model()
    images, labels, human = batch(3)
    five = harmonizer_loss(model, images, labels, human).harmonization.item()
    six = harmonizer_loss(model, images, labels, human, levels=6).harmonization.item()
    assert five != pytest.approx(six)
    with pytest.raises(ValueError):
        harmonizer_loss(model, images, labels, human, levels=7)


def test_gradient_through_the_saliency_of_a_linear_model():
    # The saliency of the linear model is an explicit function of W: differentiating the
    # maps built from that formula once must give the double back-propagation's gradient.
    model = linear_model()
    images, labels, human = batch(3)
    tokens = torch.tensor([1.0, 1.0, 0.0])
    out = harmonizer_loss(model, images, labels, human, tokens)
    (g_double,) = torch.autograd.grad(out.harmonization, model.net[1].weight)

    W = model.net[1].weight.detach().clone().requires_grad_(True)
    std = model._std
    sal = (W[labels].view(3, 3, 8, 8) / std).mean(1)
    z_s, z_h = standardize_cut(sal), standardize_cut(human)
    h = z_h / (z_h.amax((1, 2), keepdim=True) + 1e-6) * (z_s.amax((1, 2), keepdim=True) + 1e-6).detach()
    lh = torch.stack([(tokens[:, None, None] * (a - c) ** 2).mean() for a, c in zip(pyramid(z_s, 5), pyramid(h, 5))]).mean()
    (g_explicit,) = torch.autograd.grad(lh, W)
    assert g_double.abs().max() > 0
    torch.testing.assert_close(g_double, g_explicit, rtol=1e-10, atol=1e-14)


def test_scores_of_the_saliency_on_a_linear_model():
    # Linear model: the logit gradient is W_y / std, the centred one (W_y - mean_k W_k) / std.
    # A direction added to every class's weights moves all logits together: it changes the
    # released map and neither the centred nor the log-probability map.
    model = linear_model()
    images, labels, human = batch(3)
    w = model.net[1].weight.detach()
    sal = {s: harmonizer_loss(model, images, labels, human, score=s, reducer="max_abs").harmonization
           for s in ("logit", "centered_logit", "log_prob")}
    with torch.no_grad():
        model.net[1].weight += 5 * torch.randn(1, w.shape[1], dtype=w.dtype)  # the same row for every class
    shifted = {s: harmonizer_loss(model, images, labels, human, score=s, reducer="max_abs").harmonization
               for s in sal}
    assert not torch.isclose(sal["logit"], shifted["logit"])
    torch.testing.assert_close(sal["centered_logit"], shifted["centered_logit"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sal["log_prob"], shifted["log_prob"], rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        model.net[1].weight.copy_(w)
    centred = (w - w.mean(0))[labels].view(3, 3, 8, 8) / model._std
    z_s, z_h = standardize_cut(centred.abs().amax(1)), standardize_cut(human)
    h = z_h / (z_h.amax((1, 2), keepdim=True) + 1e-6) * (z_s.amax((1, 2), keepdim=True) + 1e-6)
    expected = torch.stack([((a - c) ** 2).mean() for a, c in zip(pyramid(z_s, 5), pyramid(h, 5))]).mean()
    torch.testing.assert_close(sal["centered_logit"], expected, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="score must be one of"):
        harmonizer_loss(model, images, labels, human, score="margin")


def test_outside_term_by_hand_on_a_linear_model():
    model = linear_model()
    images, labels, human = batch(3)
    human[0, :4] = 0.0  # some pixels where "nobody looked"
    tokens = torch.tensor([1.0, 0.0, 1.0])
    out = harmonizer_loss(model, images, labels, human, tokens, lambda_outside=2.0, reducer="max_abs")
    plain = harmonizer_loss(model, images, labels, human, tokens, reducer="max_abs")
    w = model.net[1].weight.detach()
    sal = (w[labels].view(3, 3, 8, 8) / model._std).abs().amax(1)
    mask = human <= 0.05 * human.amax((1, 2), keepdim=True)
    expected = (tokens[:, None, None] * mask * sal.square()).sum() / 3
    assert mask[0].sum() >= 32
    torch.testing.assert_close(out.outside, expected, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(out.total, plain.total + 2.0 * expected, rtol=1e-10, atol=1e-14)
    assert plain.outside == 0 and torch.equal(out.harmonization, plain.harmonization)
    # lambda_harmonization 0 with the outside term still builds the saliency
    only = harmonizer_loss(model, images, labels, human, tokens, lambda_harmonization=0.0, lambda_outside=2.0,
                           reducer="max_abs")
    torch.testing.assert_close(only.total, only.cross_entropy + 1e-5 * only.weights + 2.0 * expected)
    with pytest.raises(ValueError, match="lambda_outside"):
        harmonizer_loss(model, images, labels, human, lambda_outside=-1.0)


def test_masked_term_by_hand_on_a_linear_model():
    model = linear_model()
    images, labels, human = batch(3)
    human[0, :4] = 0.0  # pixels where "nobody looked": greyed in the masked image
    human[2, :, :2] = 0.0
    tokens = torch.tensor([1.0, 0.0, 0.5])
    out = harmonizer_loss(model, images, labels, human, tokens, lambda_masked=2.0)
    plain = harmonizer_loss(model, images, labels, human, tokens)
    keep = (human > 0.05 * human.amax((1, 2), keepdim=True))[:, None].to(images.dtype)
    with torch.no_grad():
        logits = model(images * keep + 0.5 * (1 - keep))
    ce = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1, reduction="none")
    expected = (tokens * ce).sum() / 3  # the token-0 row adds nothing
    assert not torch.equal(images * keep + 0.5 * (1 - keep), images)
    torch.testing.assert_close(out.masked, expected, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(out.total, plain.total + 2.0 * expected, rtol=1e-10, atol=1e-14)
    assert plain.masked == 0 and torch.equal(out.harmonization, plain.harmonization)
    # the term trains the model: its gradient reaches the weights
    (g,) = torch.autograd.grad(out.masked, model.net[1].weight)
    assert g.abs().max() > 0
    with pytest.raises(ValueError, match="lambda_masked"):
        harmonizer_loss(model, images, labels, human, lambda_masked=-1.0)
    with pytest.raises(ValueError, match="image size"):
        harmonizer_loss(model, images, labels, human[:, :4, :4], lambda_harmonization=0.0, lambda_masked=1.0)


@pytest.mark.parametrize("reducer", ["mean", "max_abs", "abs_mean"])
def test_float32_reducers_back_propagate_like_float64(reducer):
    # The float32 path reduces with the explainers' reduce_channels; an in-place op there
    # once broke the backward of the harmonization term (max_abs, abs_mean).
    model64 = small_model("group")
    model32 = copy.deepcopy(model64).float()
    images, labels, human = batch(4)
    grads = []
    for model, dtype in ((model64, torch.float64), (model32, torch.float32)):
        out = harmonizer_loss(model, images.to(dtype), labels, human.to(dtype), reducer=reducer)
        (g,) = torch.autograd.grad(out.harmonization, model.net.body[0].weight)
        grads.append(g.double())
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)


def test_gradient_through_the_saliency_matches_finite_differences():
    model = small_model("none", nn.Tanh).eval()
    images, labels, human = batch(3)
    conv = model.net.body[0].weight

    def saliency_maps() -> torch.Tensor:
        x = images.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).gather(1, labels[:, None]).sum(), x)
        return g.mean(1).detach()

    def lh(scale: torch.Tensor) -> tuple[float, float]:
        """L_h with the human-map scale held at ``scale`` (as the stop-gradient sees it), and free."""
        z_s, z_h = standardize_cut(saliency_maps()), standardize_cut(human)
        values = []
        for s in (scale, z_s.amax((1, 2), keepdim=True) + 1e-6):
            h = z_h / (z_h.amax((1, 2), keepdim=True) + 1e-6) * s
            values.append(torch.stack([((a - c) ** 2).mean() for a, c in zip(pyramid(z_s, 5), pyramid(h, 5))]).mean().item())
        return values[0], values[1]

    scale = standardize_cut(saliency_maps()).amax((1, 2), keepdim=True) + 1e-6
    (g_auto,) = torch.autograd.grad(harmonizer_loss(model, images, labels, human).harmonization, conv)
    assert abs(lh(scale)[0] - harmonizer_loss(model, images, labels, human).harmonization.item()) < 1e-12

    eps, entries = 1e-6, range(0, conv.numel(), 5)  # every fifth weight of the first conv: 22 of 108
    fd, fd_free = [], []
    flat = conv.data.view(-1)
    for i in entries:
        old = flat[i].item()
        flat[i] = old + eps
        up = lh(scale)
        flat[i] = old - eps
        down = lh(scale)
        flat[i] = old
        fd.append((up[0] - down[0]) / (2 * eps))
        fd_free.append((up[1] - down[1]) / (2 * eps))
    g_auto = g_auto.reshape(-1)[list(entries)]
    fd, fd_free = torch.tensor(fd, dtype=torch.float64), torch.tensor(fd_free, dtype=torch.float64)
    torch.testing.assert_close(g_auto, fd, rtol=1e-5, atol=1e-8)
    # and the stop-gradient matters: differentiating through the max would give another gradient
    assert (g_auto - fd_free).abs().max() > 1e-3 * fd_free.abs().max()


# ----------------------------------------------------------------------------- the cheap path


def _loss_and_grads(model, images, labels, human, tokens, only_contributing, **kw):
    sizes: list[int] = []
    hook = model.net.register_forward_pre_hook(lambda mod, args: sizes.append(args[0].shape[0]))
    try:
        out = harmonizer_loss(model, images, labels, human, tokens, only_contributing=only_contributing, **kw)
        out.total.backward()
    finally:
        hook.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out, grads, sizes


@pytest.mark.parametrize(
    "norm,train,split",
    [("batch", False, True), ("batch", True, False), ("group", True, True), ("none", True, True)],
)
def test_only_contributing_gives_the_reference_loss_and_gradients(norm, train, split):
    images, labels, human = batch(6)
    tokens = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    base = small_model(norm).train(train)
    ref_model, cheap_model = copy.deepcopy(base), copy.deepcopy(base)
    kw = {"lambda_outside": 0.5, "outside_threshold": 0.3}  # the extra term too (~30% of pixels "outside")
    ref, ref_grads, ref_sizes = _loss_and_grads(ref_model, images, labels, human, tokens, False, **kw)
    cheap, cheap_grads, cheap_sizes = _loss_and_grads(cheap_model, images, labels, human, tokens, True, **kw)

    # the saliency graph is built for the two token-1 rows only, unless BatchNorm couples the rows
    assert ref_sizes == [6]
    assert cheap_sizes == ([2, 4] if split else [6])
    for part in ("total", "cross_entropy", "harmonization", "weights", "outside"):
        torch.testing.assert_close(getattr(cheap, part), getattr(ref, part), rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(cheap.logits, ref.logits, rtol=1e-10, atol=1e-12)
    assert ref.harmonization > 0 and ref.outside > 0
    for name, g in ref_grads.items():
        torch.testing.assert_close(cheap_grads[name], g, rtol=1e-6, atol=1e-12, msg=name)
    if train and norm == "batch":  # the running statistics saw the whole batch in both
        torch.testing.assert_close(cheap_model.net.body[1].running_mean, ref_model.net.body[1].running_mean)


def test_no_double_backward_without_contributing_samples(monkeypatch):
    model = small_model("batch").train()
    images, labels, human = batch(4)
    calls = []
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls.append(kwargs.get("create_graph", False))
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    zero = harmonizer_loss(model, images, labels, human, torch.zeros(4))
    off = harmonizer_loss(model, images, labels, human, torch.ones(4), lambda_harmonization=0.0)
    assert calls == []
    for out in (zero, off):
        assert out.harmonization.item() == 0.0
        torch.testing.assert_close(out.total, out.cross_entropy + 1e-5 * out.weights)
    harmonizer_loss(model, images, labels, human, torch.ones(4))
    assert calls == [True]


def test_index_and_one_hot_labels_agree_and_channels_last_is_fine():
    model = small_model("batch").eval()
    images, labels, human = batch(4)
    tokens = torch.tensor([1.0, 0.0, 1.0, 1.0])
    a = harmonizer_loss(model, images, labels, human, tokens)
    b = harmonizer_loss(model, images, nn.functional.one_hot(labels, 4).double(), human, tokens)
    c = harmonizer_loss(model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last),
                        labels, human, tokens)
    for other in (b, c):
        torch.testing.assert_close(other.total, a.total, rtol=1e-10, atol=0)


def test_runs_under_bfloat16_autocast():
    torch.manual_seed(0)
    model = small_model("batch").float().train()
    images, labels, human = (t.float() if t.is_floating_point() else t for t in batch(4))
    ref = harmonizer_loss(copy.deepcopy(model), images, labels, human)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = harmonizer_loss(model, images, labels, human)
    out.total.backward()
    assert out.total.dtype == torch.float32 and out.logits.dtype == torch.bfloat16
    assert torch.isfinite(out.total) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert out.total.item() == pytest.approx(ref.total.item(), rel=0.05)


@pytest.mark.parametrize("wrapped", [True, False])
def test_vit_with_fused_attention_double_backpropagates(wrapped):
    # fused SDPA kernels have no second derivative: the loss must run attention with the math kernel
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    for m in net.modules():  # the test environment may have switched it off
        if hasattr(m, "fused_attn"):
            m.fused_attn = True
    model = HarmoniaModel(net, "vit", Preprocessing(input_size=(16, 16))).train() if wrapped else net
    images, labels, human = (t.float() if t.is_floating_point() else t for t in batch(3, 16, 3))
    out = harmonizer_loss(model, images, labels, human, torch.tensor([1.0, 0.0, 0.0]))
    out.total.backward()
    assert out.harmonization > 0 and net.patch_embed.proj.weight.grad.abs().sum() > 0
    assert disable_fused_attention(net) == 1 and not net.blocks[0].attn.fused_attn


# ----------------------------------------------------------------------------- weight term parameters


def _names(model: nn.Module) -> set[str]:
    chosen = {id(p) for p in weight_params(model)}
    return {n for n, p in model.named_parameters() if id(p) in chosen}


def test_weight_params_of_a_timm_vit():
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=3)
    names, all_names = _names(vit), {n for n, _ in vit.named_parameters()}
    excluded = all_names - names
    assert {"cls_token", "pos_embed", "norm.weight", "norm.bias", "blocks.0.norm1.weight", "blocks.0.norm2.bias"} <= excluded
    assert all(".norm" in n or n.startswith("norm.") or n in ("cls_token", "pos_embed") for n in excluded)
    assert {"patch_embed.proj.weight", "patch_embed.proj.bias", "blocks.0.attn.qkv.bias", "head.bias"} <= names
    with_registers = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=8, embed_dim=8, depth=1, num_heads=2, reg_tokens=2)
    assert "reg_token" not in _names(with_registers)


def test_weight_params_of_resnets_and_others():
    import torchvision

    resnet = torchvision.models.resnet18(num_classes=3)
    names = _names(resnet)
    assert not any("bn" in n or "downsample.1" in n for n in names)
    assert {"conv1.weight", "fc.weight", "fc.bias", "layer2.0.downsample.0.weight"} <= names
    assert len(names) == sum(1 for n, _ in resnet.named_parameters() if "bn" not in n and "downsample.1" not in n)

    tv_vit = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=2,
                                                  hidden_dim=8, mlp_dim=16, num_classes=3)
    names = _names(tv_vit)
    assert "class_token" not in names and "encoder.pos_embedding" not in names
    assert "conv_proj.bias" in names and not any(".ln" in n for n in names)

    frozen = nn.Linear(2, 2)
    frozen.weight.requires_grad_(False)
    other = nn.ModuleDict({"emb": nn.Embedding(5, 3), "gn": nn.GroupNorm(1, 4), "lin": frozen})
    assert _names(other) == {"lin.bias"}
