"""Explainers: shapes and dtypes on real architectures, exact values on models we can solve."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from harmonia.attribution import (
    REDUCERS,
    GradCAM,
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    create_explainer,
    find_target_layer,
    list_explainers,
    parse_explainer_spec,
    reduce_channels,
)
from harmonia.models.wrapper import IMAGENET_STD, HarmoniaModel, Preprocessing


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are too small to gain from intra-op threads, and on a shared CPU the
    OpenMP workers' spin-waiting made this file ~8x slower; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- models


def _no_fused_attn(net: nn.Module) -> nn.Module:
    for m in net.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False  # plain attention: double-backward-safe and deterministic on the CPU
    return net


def tiny_vit(global_pool: str = "token") -> HarmoniaModel:
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32,
                            patch_size=8, depth=2, global_pool=global_pool)
    return HarmoniaModel(_no_fused_attn(net), "timm:vit_tiny", Preprocessing(input_size=(32, 32))).eval()


def build(kind: str) -> HarmoniaModel:
    torch.manual_seed(0)
    if kind == "timm_resnet10t":
        net = timm.create_model("resnet10t", pretrained=False, num_classes=5)
        return HarmoniaModel(net, "timm:resnet10t", Preprocessing(input_size=(64, 64))).eval()
    if kind == "tv_resnet18":
        net = torchvision.models.resnet18(weights=None, num_classes=5)
        return HarmoniaModel(net, "torchvision:resnet18", Preprocessing(input_size=(64, 64))).eval()
    if kind == "tv_mobilenet_v3_small":
        net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=5)
        return HarmoniaModel(net, "torchvision:mobilenet_v3_small", Preprocessing(input_size=(64, 64))).eval()
    return tiny_vit()


# the layer Grad-CAM must find on its own
AUTO_LAYER = {
    "timm_resnet10t": "net.layer4",  # timm feature_info, last stage
    "tv_resnet18": "net.layer4",  # last 4-D map found by the hook search
    "tv_mobilenet_v3_small": "net.features",
    "timm_vit": "net.blocks.1",  # last block (its input: class-token head)
}

_MODELS: dict[str, HarmoniaModel] = {}


def model_of(kind: str) -> HarmoniaModel:
    if kind not in _MODELS:
        _MODELS[kind] = build(kind)
    return _MODELS[kind]


class SmoothNet(nn.Module):
    """Small CNN with smooth activations: IG's path integral converges fast."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 6, 3, padding=1), nn.Softplus())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def smooth_model() -> HarmoniaModel:
    torch.manual_seed(1)
    return HarmoniaModel(SmoothNet(), "smooth", Preprocessing(input_size=(16, 16))).eval()


def linear_model(size: int = 8, classes: int = 4) -> tuple[HarmoniaModel, nn.Linear]:
    torch.manual_seed(2)
    fc = nn.Linear(3 * size * size, classes)
    return HarmoniaModel(nn.Sequential(nn.Flatten(), fc), "linear", Preprocessing(input_size=(size, size))), fc


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def fast_explainers() -> list:
    return [Saliency(), InputXGradient(), SmoothGrad(n_samples=2, internal_batch_size=3),
            IntegratedGradients(steps=2, internal_batch_size=3), GradCAM()]


# ---------------------------------------------------------------- reducers


def test_reducers_match_their_definitions():
    g = torch.randn(2, 3, 4, 5)
    expected = {
        "mean": g.mean(1),
        "max_abs": g.abs().max(1).values,
        "abs_mean": g.mean(1).abs(),
        "sum": g.sum(1),
        "sum_abs": g.abs().sum(1),
        "l2": g.pow(2).sum(1).sqrt(),
    }
    assert set(expected) == set(REDUCERS)
    for name, want in expected.items():
        got = reduce_channels(g, name)
        assert got.shape == (2, 4, 5) and got.dtype == torch.float32
        torch.testing.assert_close(got, want)
    # the three literature reducers really differ on a pixel with mixed signs
    px = torch.tensor([1.0, -3.0, 0.5]).view(1, 3, 1, 1)
    assert [reduce_channels(px, r).item() for r in ("mean", "max_abs", "abs_mean")] == pytest.approx([-0.5, 3.0, 0.5])


def test_unknown_reducer_lists_valid_names():
    with pytest.raises(ValueError, match="max_abs.*abs_mean|abs_mean.*max_abs"):
        reduce_channels(torch.zeros(1, 3, 2, 2), "abs")
    with pytest.raises(ValueError, match="valid reducers"):
        Saliency(reducer="max")


# ---------------------------------------------------------------- every explainer on real architectures


@pytest.mark.parametrize("kind", list(AUTO_LAYER))
def test_every_explainer_shape_dtype_finite(kind):
    model = model_of(kind)
    x = images(2, 32)
    for explainer in fast_explainers():
        maps = explainer(model, x, torch.tensor([1, 4]))
        assert maps.shape == (2, 32, 32), explainer
        assert maps.dtype == torch.float32 and maps.device == x.device and not maps.requires_grad
        assert torch.isfinite(maps).all(), explainer
        if isinstance(explainer, GradCAM):
            assert explainer.last_layer == AUTO_LAYER[kind]
            assert (maps >= 0).all()


@pytest.mark.parametrize("explainer", fast_explainers(), ids=lambda e: e.name)
def test_no_side_effects_on_model_or_images(explainer):
    """Only input gradients: no parameter .grad, no mode change, caller's tensor untouched."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model = HarmoniaModel(net, "bn", Preprocessing(input_size=(16, 16)))
    x = images(2, 16)
    before = x.clone()
    for training in (False, True):
        model.train(training)
        model.net[5].train()  # a module whose mode differs from its parent's must keep it
        modes = [m.training for m in model.modules()]
        stats = model.net[1].running_mean.clone()
        explainer(model, x, 0)
        assert [m.training for m in model.modules()] == modes
        assert all(p.grad is None for p in model.parameters())
        if not training:
            torch.testing.assert_close(model.net[1].running_mean, stats)
    assert not x.requires_grad and torch.equal(x, before)


def test_explainers_run_inside_no_grad_and_on_single_images():
    model = model_of("timm_resnet10t")
    x = images(3, 32)
    with torch.no_grad():
        batch = Saliency()(model, x, torch.tensor([0, 1, 2]))
        cams = GradCAM()(model, x, torch.tensor([0, 1, 2]))
    # batched = one at a time (eval mode: no interaction between samples)
    for i in range(3):
        torch.testing.assert_close(Saliency()(model, x[i : i + 1], i)[0], batch[i], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(GradCAM()(model, x[i : i + 1], i)[0], cams[i], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- saliency / input x gradient, exact


@pytest.mark.parametrize("reducer", REDUCERS)
def test_saliency_on_linear_model_is_the_analytic_gradient(reducer):
    model, fc = linear_model()
    x = images(3, 8)
    t = torch.tensor([0, 3, 1])
    # logit_t = w_t . (x - mean) / std: the [0, 1]-space gradient is w_t / std per channel
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    grads = fc.weight.detach()[t].view(3, 3, 8, 8) / std
    torch.testing.assert_close(Saliency(reducer)(model, x, t), reduce_channels(grads, reducer))
    torch.testing.assert_close(InputXGradient(reducer)(model, x, t), reduce_channels(grads * x, reducer))


def test_explain_returns_the_logits_of_its_own_pass():
    model = smooth_model()
    x = images(3, 16)
    with torch.no_grad():
        logits = model(x)
    for explainer in (Saliency(), InputXGradient(), GradCAM()):
        maps, got = explainer.explain(model, x, torch.tensor([0, 1, 2]))
        torch.testing.assert_close(got, logits)
        # targets=None: the predicted class, in the same single pass
        maps_pred, got_pred = explainer.explain(model, x)
        torch.testing.assert_close(maps_pred, explainer(model, x, logits.argmax(1)))
    maps, got = SmoothGrad(n_samples=2).explain(model, x)  # generic path: logits from a no-grad pass
    torch.testing.assert_close(got, logits)
    assert SmoothGrad(n_samples=2).explain(model, x, 0)[1] is None


def test_saliency_makes_one_forward_pass():
    model = smooth_model()
    calls = []
    handle = model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        Saliency().explain(model, images(4, 16), 1)
    finally:
        handle.remove()
    assert calls == [4]


# ---------------------------------------------------------------- SmoothGrad


@pytest.mark.parametrize("reducer", ["max_abs", "mean", "abs_mean"])
def test_smoothgrad_without_noise_is_saliency(reducer):
    model = smooth_model()
    x, t = images(3, 16), torch.tensor([0, 2, 1])
    sg = SmoothGrad(n_samples=3, noise=0.0, reducer=reducer, internal_batch_size=4)
    torch.testing.assert_close(sg(model, x, t), Saliency(reducer)(model, x, t), rtol=1e-5, atol=1e-8)
    # squared: the mean of g**2, reduced
    xr = x.clone().requires_grad_()
    g = torch.autograd.grad(model(xr).gather(1, t[:, None]).sum(), xr)[0]
    sq = SmoothGrad(n_samples=2, noise=0.0, reducer="mean", squared=True)(model, x, t)
    torch.testing.assert_close(sq, (g * g).mean(1), rtol=1e-5, atol=1e-12)


def test_smoothgrad_noise_is_applied_seeded_and_batch_size_free():
    model = smooth_model()
    x, t = images(3, 16), torch.tensor([0, 2, 1])
    ref = SmoothGrad(n_samples=4, noise=0.2, internal_batch_size=64, seed=3)(model, x, t)
    assert not torch.allclose(ref, Saliency()(model, x, t), rtol=1e-3)  # the noise does something
    for ibs in (1, 2, 5, 7):  # passes that split samples across images, and images across passes
        torch.testing.assert_close(SmoothGrad(n_samples=4, noise=0.2, internal_batch_size=ibs, seed=3)(model, x, t), ref)
    assert not torch.allclose(SmoothGrad(n_samples=4, noise=0.2, seed=4)(model, x, t), ref)
    torch.manual_seed(7)
    a = SmoothGrad(n_samples=2, seed=None)(model, x, t)
    torch.manual_seed(7)
    torch.testing.assert_close(SmoothGrad(n_samples=2, seed=None)(model, x, t), a)


def test_smoothgrad_on_linear_model_is_exact_whatever_the_noise():
    model, fc = linear_model()
    x, t = images(2, 8), torch.tensor([1, 2])
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    grads = fc.weight.detach()[t].view(2, 3, 8, 8) / std
    torch.testing.assert_close(SmoothGrad(n_samples=5, noise=0.5, reducer="mean")(model, x, t), grads.mean(1))
    torch.testing.assert_close(SmoothGrad(n_samples=5, noise=0.5, reducer="sum", squared=True)(model, x, t), (grads**2).sum(1))


def _pass_sizes(model, explainer, x, t):
    sizes = []
    handle = model.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try:
        explainer(model, x, t)
    finally:
        handle.remove()
    return sizes


def test_sample_expanding_methods_keep_passes_bounded():
    """Memory follows the internal batch, not the number of samples or steps."""
    model = smooth_model()
    x, t = images(5, 16), 1
    for n in (8, 32):
        sizes = _pass_sizes(model, SmoothGrad(n_samples=n, internal_batch_size=6), x, t)
        assert max(sizes) == 6 and sum(sizes) == 5 * n and len(sizes) == -(-5 * n // 6)
        sizes = _pass_sizes(model, IntegratedGradients(steps=n, internal_batch_size=6), x, t)
        assert max(sizes) <= 6 and sum(sizes) == 5 * n
    # fewer inputs per pass than images: IG splits the images too
    assert max(_pass_sizes(model, IntegratedGradients(steps=4, internal_batch_size=2), x, t)) <= 2


# ---------------------------------------------------------------- Integrated Gradients


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
@pytest.mark.parametrize("baseline", ["black", 0.5, "tensor"])
def test_integrated_gradients_completeness(method, baseline):
    """sum of attributions = f(x) - f(baseline), checked against the model itself."""
    model = smooth_model()
    x, t = images(3, 16), torch.tensor([0, 1, 2])
    if baseline == "tensor":
        baseline = images(1, 16, seed=9)[0] * 0.5  # one image, broadcast to the batch
    steps = 64 if method == "riemann_trapezoid" else 16
    maps = IntegratedGradients(steps=steps, baseline=baseline, method=method, reducer="sum", internal_batch_size=40)(model, x, t)
    b = torch.zeros_like(x) if isinstance(baseline, str) else torch.as_tensor(baseline).expand_as(x)
    with torch.no_grad():
        delta = model(x).gather(1, t[:, None])[:, 0] - model(b).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(maps.sum((1, 2)), delta, rtol=2e-3, atol=1e-5)
    assert delta.abs().min() > 1e-3  # the check is not vacuous


def test_integrated_gradients_on_linear_model_and_batch_invariance():
    model, fc = linear_model()
    x, t = images(3, 8), torch.tensor([0, 1, 3])
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    grads = fc.weight.detach()[t].view(3, 3, 8, 8) / std
    # black baseline: IG = x * gradient exactly, for any number of steps
    torch.testing.assert_close(IntegratedGradients(steps=3, reducer="mean")(model, x, t), (x * grads).mean(1))
    torch.testing.assert_close(IntegratedGradients(steps=5, baseline="white", reducer="sum")(model, x, t), ((x - 1) * grads).sum(1))
    smooth, xs, ts = smooth_model(), images(3, 16), torch.tensor([2, 0, 1])
    ref = IntegratedGradients(steps=10, internal_batch_size=100)(smooth, xs, ts)
    for ibs in (1, 4, 7):
        torch.testing.assert_close(IntegratedGradients(steps=10, internal_batch_size=ibs)(smooth, xs, ts), ref, rtol=1e-4, atol=1e-7)


def test_integrated_gradients_rejects_bad_settings():
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients(baseline="pink")
    with pytest.raises(ValueError, match="method"):
        IntegratedGradients(method="simpson")
    with pytest.raises(ValueError, match="broadcast"):
        IntegratedGradients(baseline=torch.zeros(3, 5, 5))(smooth_model(), images(1, 16), 0)


# ---------------------------------------------------------------- Grad-CAM


def test_gradcam_matches_a_hand_computation():
    model = smooth_model()
    x, t = images(2, 24), torch.tensor([2, 0])
    xn = model.preprocess(x)
    a = model.net.features(xn)
    logits = model.net.head(a)
    g = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), a)[0]
    cam = (g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True)
    want = F.interpolate(cam.relu(), size=(24, 24), mode="bilinear", align_corners=False)[:, 0]
    got = GradCAM()(model, x, t)
    assert GradCAM().config()["layer"] == "auto"
    torch.testing.assert_close(got, want.detach())
    # the same layer named without or with the wrapper's prefix, or passed as a module
    for layer in ("features", "net.features", model.net.features):
        torch.testing.assert_close(GradCAM(layer=layer)(model, x, t), want.detach())
    signed = GradCAM(relu=False)(model, x, t)
    assert (signed < 0).any()


def test_gradcam_vit_token_grid_and_class_token_head():
    vit = model_of("timm_vit")
    x = images(2, 32)
    layer = find_target_layer(vit)
    assert layer.name == "net.blocks.1" and layer.hook_input and layer.prefix_tokens == 1 and layer.grid == (4, 4)
    cam = GradCAM()(vit, x, 3)
    assert cam.shape == (2, 32, 32) and cam.abs().sum() > 0
    # why not the tokens leaving the last block: with a class-token head they never reach the logits
    assert GradCAM(layer="net.blocks.1", relu=False)(vit, x, 3).abs().max() == 0
    # an average-pooled ViT: the last block's output is used
    avg = tiny_vit("avg")
    assert not find_target_layer(avg).hook_input
    assert GradCAM()(avg, x, 3).abs().sum() > 0


def test_gradcam_avoids_a_single_position_last_stage():
    """At 32 x 32 resnet10t's last stage is 1 x 1 (a constant map): the stage before is used."""
    torch.manual_seed(0)
    small = HarmoniaModel(timm.create_model("resnet10t", pretrained=False, num_classes=3), "r10t",
                          Preprocessing(input_size=(32, 32))).eval()
    assert find_target_layer(small).name == "net.layer3"
    cam = GradCAM(relu=False)(small, images(2, 32), 0)
    assert cam[0].std() > 0
    with pytest.warns(UserWarning, match="1 x 1"):
        GradCAM(layer="layer4")(small, images(2, 32), 0)
    # the same model object at another input size gets its own layer
    small.preprocessing = Preprocessing(input_size=(64, 64))
    assert find_target_layer(small).name == "net.layer4"


def test_gradcam_automatic_layer_on_other_architectures():
    tv_vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                                                  hidden_dim=16, mlp_dim=32, num_classes=3).eval()
    layer = find_target_layer(tv_vit)
    assert layer.name == "encoder.layers.0" and layer.prefix_tokens == 1 and layer.grid == (4, 4)
    assert GradCAM()(tv_vit, images(2, 32), 1).shape == (2, 32, 32)
    # generic search on a plain module (no wrapper): last 4-D map with more than one position
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    net.train()
    assert find_target_layer(net, images(1, 16)).name == "3"
    assert net.training and all(m.training for m in net.modules())
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(ValueError, match="layer="):
        GradCAM()(mlp, images(1, 8), 0)
    with pytest.raises(ValueError, match="no layer named"):
        GradCAM(layer="nope")(model_of("tv_resnet18"), images(1, 32), 0)
    with pytest.raises(ValueError, match="not a submodule"):
        GradCAM(layer=nn.Conv2d(3, 3, 1))(mlp, images(1, 8), 0)
    branch = Branch()
    with pytest.raises(ValueError, match="does not reach the logits"):
        GradCAM(layer="side")(branch, images(1, 8), 0)
    with pytest.raises(ValueError, match="did not produce a tensor"):
        GradCAM(layer="unused")(branch, images(1, 8), 0)


class Branch(nn.Module):
    """A layer computed but not used for the logits, and one never called."""

    def __init__(self) -> None:
        super().__init__()
        self.side, self.unused, self.fc = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.Linear(3 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.side(x)
        return self.fc(x.flatten(1))


# ---------------------------------------------------------------- registry and specs


def test_registry_and_spec_parsing():
    assert list_explainers() == ["saliency", "input_x_gradient", "smoothgrad", "integrated_gradients", "gradcam"]
    e = parse_explainer_spec("saliency:reducer=abs_mean")
    assert isinstance(e, Saliency) and e.config() == {"name": "saliency", "reducer": "abs_mean"}
    e = parse_explainer_spec("smoothgrad:n_samples=16,noise=0.1, squared=true,seed=none")
    assert isinstance(e, SmoothGrad) and (e.n_samples, e.noise, e.squared, e.seed) == (16, 0.1, True, None)
    e = parse_explainer_spec("integrated_gradients:baseline=0.5,method=gausslegendre,steps=8")
    assert e.config()["baseline"] == 0.5 and e.config()["steps"] == 8
    assert parse_explainer_spec("Grad-CAM:layer=net.layer4").config()["layer"] == "net.layer4"
    assert isinstance(parse_explainer_spec("ig"), IntegratedGradients)
    for name in list_explainers():  # config() is complete: it rebuilds the same explainer
        cfg = create_explainer(name).config()
        assert cfg["name"] == name and create_explainer(**cfg).config() == cfg
    assert IntegratedGradients(baseline=torch.zeros(3, 2, 2)).config()["baseline"].startswith("tensor:")
    assert IntegratedGradients(baseline=torch.zeros(3, 2, 2)).config() != IntegratedGradients(baseline=torch.ones(3, 2, 2)).config()


@pytest.mark.parametrize(
    "spec, match",
    [
        ("lime", "unknown explainer"),
        ("saliency:reducr=mean", "no setting 'reducr'"),
        ("saliency:reducer", "key=value"),
        ("saliency:reducer=max", "valid reducers"),
        ("smoothgrad:n_samples=0", "positive integer"),
        ("smoothgrad:noise=-1", "noise"),
        ("saliency:reducer=mean,reducer=sum", "twice"),
        ("", "empty"),
    ],
)
def test_bad_specs_fail_clearly(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_explainer_spec(spec)


# ---------------------------------------------------------------- input validation


@pytest.mark.parametrize("explainer", fast_explainers(), ids=lambda e: e.name)
def test_bad_inputs_fail_clearly(explainer):
    model = smooth_model()
    x = images(2, 16)
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        explainer(model, x[0], 0)
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        explainer(model, x[:, :1], 0)
    with pytest.raises(ValueError, match="2 images but 3 targets"):
        explainer(model, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="out of range"):
        explainer(model, x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=">= 0"):
        explainer(model, x, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="integer"):
        explainer(model, x, torch.tensor([0.0, 1.0]))
    assert explainer(model, x[:0], torch.zeros(0, dtype=torch.long)).shape == (0, 16, 16)


def test_smoothgrad_noise_is_per_image_so_batch_composition_does_not_matter():
    model = smooth_model()
    x, t = images(4, 16), torch.tensor([0, 2, 1, 1])
    sg = SmoothGrad(n_samples=3, noise=0.2, seed=5)
    ids = ["a", "b", "c", "d"]
    whole = sg(model, x, t, ids=ids)
    for part in ([0], [2, 3], [3, 1]):  # other batches, other orders: the same map per image
        torch.testing.assert_close(sg(model, x[part], t[part], ids=[ids[i] for i in part]), whole[part])
    assert not torch.allclose(sg(model, x, t, ids=["e", "b", "c", "d"])[0], whole[0], rtol=1e-3)  # the id seeds it
    by_pixels = sg(model, x, t)  # without ids, each image's pixels seed its noise
    torch.testing.assert_close(sg(model, x[[2, 0]], t[[2, 0]]), by_pixels[[2, 0]])
    assert SmoothGrad(internal_batch_size=1).key_config() == SmoothGrad().key_config()
    assert "internal_batch_size" in SmoothGrad().config()
