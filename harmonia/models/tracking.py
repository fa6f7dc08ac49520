"""Recurrent tracking circuits for the video challenges: InT, CV-RNN and a convolutional GRU.

All take videos N x 3 x T x H x W in [0, 1] (``harmonia.challenges.dataset`` layout) and
return one logit per video (N,). They run at full resolution (no striding) and share the
readout of the InT paper by default (``readout="published"``, :class:`MarkerReadout`): the last
excitatory state -> 1 x 1 conv to one channel, concatenated with the first frame's blue channel
(where the end marker is), a 5 x 5 conv, global average pool and Linear(1, 1). That readout is
linear in the state; ``readout="marker"`` (:class:`MarkerPoolReadout`) pools the state over the
end marker's area instead and puts a small MLP on it.

- :class:`InT`: the inhibitory / excitatory recurrent circuit (Linsley, Malik et al. 2021):
  7 x 7 orthogonally initialised kernels, BatchNorm without running statistics, an attention
  gate sigmoid(Wa x + Ua e) on e, GRU-style updates of both states.
- :class:`CVRNN`: the InT cell whose attention comes from a complex-valued branch
  (Muzellec, Linsley et al. 2025): phases seeded at random on the first frame, complex
  convolutions, a per-frame phase map for the synchrony loss (:func:`synchrony_loss`).
- :class:`ConvGRU`: a small convolutional GRU baseline with the same readout.

Complex numbers are carried as (real, imaginary) pairs of real tensors: the maths is the
complex one, but every op (norms, activations) stays a plain real op with clean gradients
(the angle of 0 has none).

Example:
    >>> import torch
    >>> m = InT(channels=4, kernel=3)
    >>> m(torch.rand(2, 3, 5, 16, 16)).shape
    torch.Size([2])
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

Complex = tuple[torch.Tensor, torch.Tensor]
_EPS = 1e-6


def _conv(c_in: int, c_out: int, k: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias)


class InTCell(nn.Module):
    """One step of the InT circuit on frame features ``x`` and states ``i`` (inhibitory), ``e`` (excitatory).

    i_hat = softplus(x - softplus(BN(W_inh * (a e)) (alpha i + mu))); i <- GRU-style mix of i, i_hat;
    e_hat = softplus(BN(W_exc * i) (kappa i + gamma)); e <- GRU-style mix of e, e_hat;
    a = sigmoid(Wa x + Ua e) unless an attention map is given (the CV-RNN's).
    """

    def __init__(self, channels: int = 32, kernel: int = 7, own_attention: bool = True) -> None:
        super().__init__()
        c = channels
        self.w_inh, self.w_exc = _conv(c, c, kernel, bias=False), _conv(c, c, kernel, bias=False)
        for w in (self.w_inh, self.w_exc):
            nn.init.orthogonal_(w.weight)
        # batch statistics in training and evaluation alike (no running averages), as in the paper
        self.bn_inh = nn.BatchNorm2d(c, track_running_stats=False)
        self.bn_exc = nn.BatchNorm2d(c, track_running_stats=False)
        if own_attention:  # the CV-RNN brings its own attention
            self.att_x, self.att_e = _conv(c, c, 1), _conv(c, c, 1, bias=False)
        self.gate_i_x, self.gate_i_h = _conv(c, c, 1), _conv(c, c, 1, bias=False)
        self.gate_e_x, self.gate_e_h = _conv(c, c, 1), _conv(c, c, 1, bias=False)
        shape = (1, c, 1, 1)
        self.alpha = nn.Parameter(torch.full(shape, 0.1))
        self.mu = nn.Parameter(torch.ones(shape))
        self.kappa = nn.Parameter(torch.full(shape, 0.5))
        self.gamma = nn.Parameter(torch.ones(shape))

    def forward(self, x: torch.Tensor, i: torch.Tensor, e: torch.Tensor,
                attention: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.sigmoid(self.att_x(x) + self.att_e(e)) if attention is None else attention
        inhibition = F.softplus(self.bn_inh(self.w_inh(e * a)) * (self.alpha * i + self.mu))
        i_hat = F.softplus(x - inhibition)
        g_i = torch.sigmoid(self.gate_i_x(x) + self.gate_i_h(i))
        i = (1 - g_i) * i + g_i * i_hat
        e_hat = F.softplus(self.bn_exc(self.w_exc(i)) * (self.kappa * i + self.gamma))
        g_e = torch.sigmoid(self.gate_e_x(i) + self.gate_e_h(e))
        e = (1 - g_e) * e + g_e * e_hat
        return i, e


class MarkerReadout(nn.Module):
    """Final state -> 1 channel, with the first frame's blue channel -> 5 x 5 conv -> mean -> Linear(1, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce = _conv(channels, 1, 1)
        self.mix = _conv(2, 1, 5)
        self.fc = nn.Linear(1, 1)

    def forward(self, state: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        blue = video[:, 2:3, 0]  # N x 1 x H x W: the end marker of the first frame
        y = self.mix(torch.cat([self.reduce(state), blue], dim=1)).mean(dim=(2, 3))
        return self.fc(y).squeeze(1)


class MarkerPoolReadout(nn.Module):
    """Final state pooled over the end marker's area, then BatchNorm and a small MLP (C -> C -> 1).

    The area is the first frame's blue channel (the hollow end marker) dilated by 3 x 3, so it
    covers the marker and the dot inside it. Unlike :class:`MarkerReadout` (linear in the state,
    and a mean over every pixel), this asks the question the task asks: what does the state say
    AT the end marker? Its BatchNorm (with running statistics) needs training batches of >= 2.

    Example:
        >>> import torch
        >>> video = torch.zeros(2, 3, 2, 8, 8)
        >>> video[:, 2, :, 2:5, 2:5] = 1.0
        >>> MarkerPoolReadout(4)(torch.rand(2, 4, 8, 8), video).shape
        torch.Size([2])
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        # BatchNorm first: the pooled state differs between videos by ~1% of its mean at init, far too
        # little for a plain linear head to pick up in a short run (its logits came out constant)
        self.head = nn.Sequential(nn.BatchNorm1d(channels), nn.Linear(channels, channels), nn.GELU(),
                                  nn.Linear(channels, 1))

    def forward(self, state: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        area = F.max_pool2d(video[:, 2:3, 0], 3, stride=1, padding=1)  # N x 1 x H x W
        pooled = (state * area).sum(dim=(2, 3)) / area.sum(dim=(2, 3)).clamp(min=_EPS)
        return self.head(pooled).squeeze(1)


READOUTS = {"published": MarkerReadout, "marker": MarkerPoolReadout}


class _Recurrent(nn.Module):
    """Shared embedding (1 x 1 x 1 conv 3 -> C, softplus) and readout (``READOUTS``) of the recurrent models."""

    uses_masks = False

    def __init__(self, channels: int, kernel: int, readout: str = "published") -> None:
        super().__init__()
        if channels < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"channels must be >= 1 and kernel odd, got channels={channels}, kernel={kernel}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
        self.channels, self.kernel = int(channels), int(kernel)
        self.embed = nn.Conv3d(3, channels, 1)
        self.readout = READOUTS[readout](channels)

    def features(self, video: torch.Tensor) -> torch.Tensor:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected videos N x 3 x T x H x W, got {tuple(video.shape)}")
        return F.softplus(self.embed(video))


class InT(_Recurrent):
    """The InT circuit: embedding, :class:`InTCell` over the frames, :class:`MarkerReadout`.

    Example:
        >>> import torch
        >>> InT(channels=4, kernel=3)(torch.rand(1, 3, 4, 8, 8)).shape
        torch.Size([1])
    """

    def __init__(self, channels: int = 32, kernel: int = 7, readout: str = "published") -> None:
        super().__init__(channels, kernel, readout)
        self.cell = InTCell(channels, kernel)

    def forward(self, video: torch.Tensor, return_states: bool = False):
        """Logits (N,); with ``return_states`` also the excitatory state of every frame, N x T x C x H x W."""
        x = self.features(video)
        i = e = torch.zeros_like(x[:, :, 0])
        states = []
        for t in range(x.shape[2]):
            i, e = self.cell(x[:, :, t], i, e)
            if return_states:
                states.append(e)
        logits = self.readout(e, video)
        return (logits, torch.stack(states, dim=1)) if return_states else logits


class ComplexConv(nn.Module):
    """A complex convolution: the same real conv W on the real and imaginary parts, psi = W z;
    magnitude 0.5 |psi| + 0.5 (W |z| + b), phase = angle(psi); output ReLU(InstanceNorm(magnitude)) e^{i phase}.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.conv = _conv(c_in, c_out, kernel, bias=False)
        self.bias = nn.Parameter(torch.zeros(1, c_out, 1, 1))
        self.norm = nn.InstanceNorm2d(c_out, affine=True)

    def forward(self, z: Complex) -> Complex:
        re, im = z
        psi_re, psi_im = self.conv(re), self.conv(im)
        psi_abs = torch.sqrt(psi_re**2 + psi_im**2 + _EPS)
        z_abs = torch.sqrt(re**2 + im**2 + _EPS)
        magnitude = 0.5 * psi_abs + 0.5 * (self.conv(z_abs) + self.bias)
        magnitude = F.relu(self.norm(magnitude))
        return magnitude * psi_re / psi_abs, magnitude * psi_im / psi_abs


class RealToComplexConv(nn.Module):
    """A real input -> a complex output: one real conv gives the real and imaginary parts."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.conv = _conv(c_in, 2 * c_out, kernel)

    def forward(self, x: torch.Tensor) -> Complex:
        re, im = self.conv(x).chunk(2, dim=1)
        return re, im


def _add(a: Complex, b: Complex) -> Complex:
    return a[0] + b[0], a[1] + b[1]


class CVRNN(_Recurrent):
    """The CV-RNN: the InT cell gated by attention from a complex-valued, phase-synchronising branch.

    First frame: random phases phi in [-pi, pi), z = |x| e^{i phi}, complex conv 3 -> C. Each frame:
    ff = real-to-complex conv(x_t); h = complex conv(ff + h); attention =
    sigmoid(InstanceNorm(|ff + real-to-complex conv(e) + h|)) gates e in the InT cell; a complex
    conv C -> 1 decodes a phase map. ``forward(video, return_phases=True)`` also returns the
    phase maps N x T x H x W for :func:`synchrony_loss`.

    Example:
        >>> import torch
        >>> logits, phases = CVRNN(channels=4, kernel=3)(torch.rand(2, 3, 4, 8, 8), return_phases=True)
        >>> logits.shape, phases.shape
        (torch.Size([2]), torch.Size([2, 4, 8, 8]))
    """

    uses_masks = True

    def __init__(self, channels: int = 32, kernel: int = 7, readout: str = "published") -> None:
        super().__init__(channels, kernel, readout)
        c = channels
        self.cell = InTCell(c, kernel, own_attention=False)
        self.seed_conv = ComplexConv(3, c, kernel)
        self.ff_conv = RealToComplexConv(c, c, 1)
        self.e_conv = RealToComplexConv(c, c, 1)
        self.hidden_conv = ComplexConv(c, c, kernel)
        self.att_norm = nn.InstanceNorm2d(c, affine=True)
        self.phase_conv = ComplexConv(c, 1, kernel)

    def forward(self, video: torch.Tensor, return_phases: bool = False):
        x = self.features(video)
        first = video[:, :, 0]
        phi = (torch.rand(first.shape, device=video.device, dtype=video.dtype) * 2 - 1) * math.pi
        h = self.seed_conv((first * torch.cos(phi), first * torch.sin(phi)))
        i = e = torch.zeros_like(x[:, :, 0])
        phases = []
        for t in range(x.shape[2]):
            ff = self.ff_conv(x[:, :, t])
            h = self.hidden_conv(_add(ff, h))
            drive = _add(_add(ff, self.e_conv(e)), h)
            attention = torch.sigmoid(self.att_norm(torch.sqrt(drive[0] ** 2 + drive[1] ** 2 + _EPS)))
            i, e = self.cell(x[:, :, t], i, e, attention=attention)
            if return_phases:
                p_re, p_im = self.phase_conv(h)
                phases.append(torch.atan2(p_im[:, 0], p_re[:, 0] + _EPS))
        logits = self.readout(e, video)
        return (logits, torch.stack(phases, dim=1)) if return_phases else logits


def synchrony_loss(phases: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Kuramoto-style grouping loss, summed over frames and averaged over videos.

    ``phases`` N x T x H x W (radians), ``masks`` N x T x H x W integer group ids (0 = background,
    ignored). Per frame: 1 - the mean over groups of each group's order parameter |<e^{i theta}>|
    (synchrony within a group) plus the order parameter of the groups' mean phases
    (desynchrony between groups).

    Example:
        >>> import torch
        >>> masks = torch.tensor([[[[1, 1, 2, 2]]]])
        >>> together = torch.tensor([[[[0.3, 0.3, 0.3 + 3.14159, 0.3 + 3.14159]]]])
        >>> float(synchrony_loss(together, masks)) < 1e-3, float(synchrony_loss(torch.zeros(1, 1, 1, 4), masks))
        (True, 1.0)
    """
    n, t = phases.shape[:2]
    ids = masks.reshape(n, t, -1).long()
    groups = int(ids.max()) + 1 if ids.numel() else 1
    onehot = F.one_hot(ids, groups).to(phases.dtype)[..., 1:]  # N x T x P x G, background dropped
    unit = torch.stack([torch.cos(phases), torch.sin(phases)], dim=-1).reshape(n, t, -1, 2)
    sums = onehot.transpose(2, 3) @ unit  # N x T x G x 2
    counts = onehot.sum(dim=2)  # N x T x G
    present = counts > 0
    norm = torch.sqrt((sums**2).sum(-1) + 1e-12)
    order = torch.where(present, norm / counts.clamp(min=1), torch.zeros_like(norm))
    n_groups = present.sum(-1).clamp(min=1)
    within = 1 - order.sum(-1) / n_groups
    means = torch.where(present[..., None], sums / norm[..., None], torch.zeros_like(sums))
    between = torch.sqrt((means.sum(2) ** 2).sum(-1) + 1e-12) / n_groups
    return (within + between).sum(dim=1).mean()


def target_map_loss(maps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Where is the target? A softmax over each frame's pixels, scored on the target's pixels.

    ``maps`` N x T x H x W logits (a 1 x 1 conv of the recurrent state), ``target`` N x T x H x W
    (1 on the target's pixels: ``ChallengeDataset``'s ``target_mask``). Per frame: minus the mean
    log-probability of the target's pixels; averaged over frames and videos. A map spread over
    two identical dots pays log 2 a frame more than one on the target alone, so, unlike a
    per-pixel loss (which finding every dot nearly satisfies), it asks *which* dot. Harmonia's
    addition for short trainings (see docs/challenges.md), not part of a published protocol.

    Example:
        >>> import torch
        >>> target = torch.zeros(1, 1, 2, 2); target[0, 0, 0, 0] = 1
        >>> round(float(target_map_loss(torch.zeros(1, 1, 2, 2), target)), 4)  # uniform over 4 pixels: log 4
        1.3863
    """
    log_p = F.log_softmax(maps.flatten(2), dim=2)
    t = target.flatten(2).to(maps.dtype)
    return (-(log_p * t).sum(2) / t.sum(2).clamp(min=1)).mean()


class ConvGRUCell(nn.Module):
    """A convolutional GRU cell (update z, reset r, candidate) with ``kernel`` x ``kernel`` convs."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.gates = _conv(2 * channels, 2 * channels, kernel)
        self.candidate = _conv(2 * channels, channels, kernel)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, dim=1)
        h_hat = torch.tanh(self.candidate(torch.cat([x, r * h], 1)))
        return (1 - z) * h + z * h_hat


class ConvGRU(_Recurrent):
    """A small convolutional GRU baseline with the InT readout.

    Example:
        >>> import torch
        >>> ConvGRU(channels=4)(torch.rand(1, 3, 3, 8, 8)).shape
        torch.Size([1])
    """

    def __init__(self, channels: int = 16, kernel: int = 3, readout: str = "published") -> None:
        super().__init__(channels, kernel, readout)
        self.cell = ConvGRUCell(channels, kernel)

    def forward(self, video: torch.Tensor, return_states: bool = False):
        """Logits (N,); with ``return_states`` also the hidden state of every frame, N x T x C x H x W."""
        x = self.features(video)
        h = torch.zeros_like(x[:, :, 0])
        states = []
        for t in range(x.shape[2]):
            h = self.cell(x[:, :, t], h)
            if return_states:
                states.append(h)
        logits = self.readout(h, video)
        return (logits, torch.stack(states, dim=1)) if return_states else logits
