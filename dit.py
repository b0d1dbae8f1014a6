"""The class-conditional Diffusion Transformer (DiT) for MNIST.

Follows Peebles & Xie, "Scalable Diffusion Models with Transformers" (2023), Figure 3:

    image (B, C, H, W) --patchify + linear--> tokens (B, N, D) + fixed 2D sin-cos positions
    c = TimestepEmbedder(t) + LabelEmbedder(y)                       (B, D)
    tokens --depth x DiTBlock(c)--> FinalLayer(c) --unpatchify--> predicted noise (B, C, H, W)

The same network denoises pixels (the default: a 28 x 28 digit is small enough) or, as in the
paper, an autoencoder's latents (the `latent` preset: 4 x 8 x 8, autoencoder.py); only the
config's image size, channels and patch differ. Unlike the paper's, it predicts the noise only
(DiT also learns the variance Sigma); the samplers use fixed variances instead.

Classifier-free guidance (Ho & Salimans 2022): label `num_classes` is a "null" label. Training drops
the true label with probability `class_dropout_prob`, so one network learns both the conditional
eps(x, t, y) and the unconditional eps(x, t, null); sampling mixes them (`forward_with_cfg`).
Autoguidance (Karras et al. 2024, `Autoguided`) adds a second push, away from a weaker version of
the same network: the EMA weights from a fifth of the way through training, which the checkpoint
keeps (TrainConfig.weak_model_at).

Letters used in shape comments: B batch, C channels, H, W image height and width, p patch size,
h = H / p, w = W / p patches per side, N = h * w tokens, D width.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from config import Config, ModelConfig
from dit_block import DiTBlock, modulate
from support.checkpoint import load_weights
from time_emb import TimestepEmbedder


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Cut images into non-overlapping p x p patches: (B, C, H, W) -> (B, N, p * p * C).

    Each token lists its patch's pixels row by row, channels last: the layout `unpatchify` undoes.
    (The model's patch embedding, a stride-p convolution, is this followed by a linear layer,
    up to the order of the weight's inputs: the convolution reads each patch channels first.)
    """
    B, C, H, W = x.shape
    h, w = H // p, W // p
    x = x.reshape(B, C, h, p, w, p)  # split each side into (patch index, pixel within patch)
    x = torch.einsum("bchpwq->bhwpqc", x)  # (B, h, w, p, p, C)
    return x.reshape(B, h * w, p * p * C)  # (B, N, p * p * C)


def unpatchify(x: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """Inverse of `patchify`: (B, N, p * p * C) -> (B, C, H, W), assuming a square image."""
    B, N, _ = x.shape
    h = w = int(N**0.5)
    assert h * w == N, f"{N} tokens do not form a square grid"
    x = x.reshape(B, h, w, p, p, channels)  # (B, h, w, p, p, C)
    x = torch.einsum("bhwpqc->bchpwq", x)  # (B, C, h, p, w, p)
    return x.reshape(B, channels, h * p, w * p)  # (B, C, H, W)


def sincos_pos_embed_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Transformer sin-cos code of integer positions: (M,) -> (M, dim), half sines, half cosines."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # (dim/2,)
    angles = positions.double()[:, None] * omega[None, :]  # (M, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2D position embedding (as in MAE and DiT): half the channels encode the row, half the
    column, each with the 1D sin-cos code. Returns (grid_size**2, dim), tokens in row-major
    order."""
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    emb_rows = sincos_pos_embed_1d(dim // 2, rows.reshape(-1))  # (N, D/2)
    emb_cols = sincos_pos_embed_1d(dim // 2, cols.reshape(-1))  # (N, D/2)
    return torch.cat([emb_rows, emb_cols], dim=1).float()  # (N, D)


class PatchEmbed(nn.Module):
    """Image to tokens: a p x p convolution with stride p is a linear map applied to each patch."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, h, w)
        return x.flatten(2).transpose(1, 2)  # (B, N, D), tokens in row-major order


class LabelEmbedder(nn.Module):
    """Digit label -> vector, with one extra row for the null label used by guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes  # label `num_classes` itself is the null label
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout_prob > 0:
            # Label dropout: replace each label by the null label with probability dropout_prob.
            drop = torch.rand(y.shape[0], device=y.device) < self.dropout_prob
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a linear map from each token to its patch's pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # each (B, D)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, N, p * p * C)


class DiT(nn.Module):
    """Class-conditional DiT that predicts the noise eps(x_t, t, y), shaped like x_t."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        D, p = config.hidden_size, config.patch_size
        self.x_embedder = PatchEmbed(p, config.in_channels, D)
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = LabelEmbedder(config.num_classes, D, config.class_dropout_prob)
        grid = config.image_size // p
        # Fixed, not learned (as in DiT); a buffer so that .to(device) moves it. Not saved in the
        # checkpoint (persistent=False): it is rebuilt from the config.
        self.register_buffer("pos_embed", sincos_pos_embed_2d(D, grid).unsqueeze(0),
                             persistent=False)
        self.blocks = nn.ModuleList(
            [DiTBlock(D, config.num_heads, config.mlp_ratio) for _ in range(config.depth)]
        )
        self.final_layer = FinalLayer(D, p, config.in_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All initialisation in one place, following DiT's `initialize_weights`."""
        # Transformer layers: Xavier-uniform weights, zero biases.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # Patch embedding: initialise like a linear layer over the flattened patch (as in MAE/DiT).
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        # Label and timestep embeddings: small normal weights, std 0.02 (DiT's values).
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # adaLN-Zero: the modulation layers start at zero, so every gate, shift and scale is 0
        # and each block is exactly the identity at the start of training (paper, section 3.2).
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        # The output layer starts at zero too: a fresh model predicts eps = 0 everywhere.
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def embed(self, x: torch.Tensor, t: torch.Tensor,
              y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens with their positions (B, N, D), and the conditioning c (B, D)."""
        x = x.to(self.pos_embed.dtype)  # the samplers keep x_t in float64; the network is float32
        with torch.autocast(x.device.type, enabled=False):  # fp32 under bf16 too: see forward
            tokens = self.x_embedder(x) + self.pos_embed  # (B, N, D)
        return tokens, self.t_embedder(t) + self.y_embedder(y)  # c: (B, D)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) noisy images, t: (B,) integer timesteps, y: (B,) labels, where the
        label num_classes (10 for MNIST) is the null label."""
        tokens, c = self.embed(x, t, y)  # (B, N, D), (B, D)
        for block in self.blocks:
            tokens = block(tokens, c)  # (B, N, D), summed in fp32 even under bf16 autocast
        # The two ends run in fp32 even under bf16 autocast. At high noise the answer is nearly
        # the input (eps ~ x_t / sqrt(1 - alpha-bar_t)) and the digit a small correction of it
        # (sqrt(alpha-bar_t) x_0: 0.0064 x_0 at t = 999, 0.016 x_0 at 900), within a few of
        # bf16's roundings (8 bits of precision). With the patch embedding and this layer in
        # bf16, a bf16 run of the default's recipe (21 epochs, one EPYC) drew heavier strokes:
        # MNIST-FD 47.6 against fp32's 17.5, and 17.6 with both ends in fp32
        # (benchmarks/README.md, "The network's two ends in fp32"). Both are a sliver of the work.
        dtype = self.final_layer.linear.weight.dtype  # the weights' own: fp32 unless cast
        with torch.autocast(x.device.type, enabled=False):
            out = self.final_layer(tokens.to(dtype), c.to(dtype))  # (B, N, p * p * C)
        return unpatchify(out, self.config.patch_size, self.config.in_channels)  # (B, C, H, W)

    def forward_with_cfg(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float
    ) -> torch.Tensor:
        """Classifier-free guided noise prediction (Ho & Salimans 2022, Eq. 6):

            eps = eps(x, t, null) + s * (eps(x, t, y) - eps(x, t, null))

        s = 1 is the conditional model, s = 0 the unconditional one, s > 1 pushes samples towards
        what makes them look like class y. (Ho & Salimans write the same with w = s - 1:
        (1 + w) eps(y) - w eps(null).) Both halves run in one batched forward pass
        (`cfg_predictions`).
        """
        if cfg_scale == 0.0:  # the conditional half would be multiplied by zero
            return self(x, t, torch.full_like(y, self.config.num_classes))
        return self.cfg_predictions(x, t, y, cfg_scale)[0]

    def cfg_predictions(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                        cfg_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(the guided eps of `forward_with_cfg`, the conditional eps(x, t, y) it was mixed from),
        from one batched pass over both labels, or a single pass when cfg_scale is 1."""
        if cfg_scale == 1.0:  # the unconditional half would be multiplied by zero
            eps_cond = self(x, t, y)
            return eps_cond, eps_cond
        null = torch.full_like(y, self.config.num_classes)
        eps = self(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))  # (2B, C, H, W)
        eps_cond, eps_uncond = eps.chunk(2)
        return eps_uncond + cfg_scale * (eps_cond - eps_uncond), eps_cond

    # ---------------------------------------------------------------- looking inside

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, t: torch.Tensor,
                       y: torch.Tensor) -> list[torch.Tensor]:
        """Each block's attention weights on the way through the network, depth x (B, NH, N, N)
        (DiTBlock.attention_weights): row i of a head's map is where token i looks."""
        tokens, c = self.embed(x, t, y)
        maps = []
        for block in self.blocks:
            maps.append(block.attention_weights(tokens, c))
            tokens = block(tokens, c)
        return maps

    @torch.no_grad()
    def gate_magnitudes(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean |gate| of each block's attention and MLP branch over the conditions (t, y):
        (depth, 2). All 0 at initialisation (adaLN-Zero: every block is the identity); as they
        open, the blocks start to change their input. The labels go straight to the embedding
        table, never dropped."""
        c = self.t_embedder(t) + self.y_embedder.embedding_table(y)  # (B, D)
        return torch.stack([torch.stack([g.abs().mean() for g in block.gates(c)])
                            for block in self.blocks])


class Autoguided(nn.Module):
    """A DiT guided away from a weaker version of itself (Karras et al. 2024, "Guiding a diffusion
    model with a bad version of itself"), on top of classifier-free guidance:

        eps = eps_cfg(x, t, y) + (W - 1) * (eps(x, t, y) - eps_weak(x, t, y))

    eps_cfg is the model's guided prediction (DiT.forward_with_cfg), eps its conditional one and
    eps_weak the weak model's, for the same label y; W = 1 is no autoguidance, and with cfg_scale
    1 the sum is Karras et al.'s eps_weak + W (eps - eps_weak). The weak model is the same network
    trained for a fifth of the steps: it makes the same kind of errors as the final one, only more
    of them (malformed strokes, a digit that half reads as another), so the difference of the two
    predictions points away from those errors. Classifier-free guidance pushes away from the
    unconditional model instead, towards each label's commonest shapes, and so makes the digits
    alike; autoguidance sharpens them without that, so that less classifier-free guidance reaches
    the same class accuracy. One more pass of the network per step (the weak model's): three
    instead of two.

    The samplers call `forward_with_cfg` only, so they sample this as they sample a DiT."""

    def __init__(self, model: DiT, weak: DiT, scale: float):
        super().__init__()
        self.model, self.weak, self.scale = model, weak, scale

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                         cfg_scale: float) -> torch.Tensor:
        eps_cfg, eps_cond = self.model.cfg_predictions(x, t, y, cfg_scale)
        return eps_cfg + (self.scale - 1) * (eps_cond - self.weak(x, t, y))


def load_ema(checkpoint: dict, cfg: Config, path, device) -> tuple[DiT, DiT | Autoguided]:
    """(the EMA DiT, the model to sample with) of a checkpoint that support.checkpoint's
    read_checkpoint has read, on `device` in eval mode. The EMA weights are what DiT samples with
    (all its results use them, section 4); for a run as short as the default's, whose rate decays
    to 0, the raw weights score about as well (benchmarks/README.md, "The EMA's length"). The
    model to sample with is the EMA itself, or Autoguided with
    cfg.sample.autoguide_scale when that is not 1 and the checkpoint keeps a weak model
    ("weak_ema"; checkpoints of earlier versions keep none)."""
    ema = load_weights(DiT(cfg.model), checkpoint["ema"], path).to(device).eval()
    weak = None
    if "weak_ema" in checkpoint and cfg.sample.autoguide_scale != 1.0:
        weak = load_weights(DiT(cfg.model), checkpoint["weak_ema"], path).to(device).eval()
    return ema, with_autoguidance(ema, weak, cfg.sample.autoguide_scale)


def with_autoguidance(model: DiT, weak: DiT | None, scale: float) -> DiT | Autoguided:
    """`model` guided away from `weak` with W = scale, or `model` itself when there is no weak
    model or W is 1."""
    return model if weak is None or scale == 1.0 else Autoguided(model, weak, scale)


if __name__ == "__main__":
    model = DiT(ModelConfig())
    x = torch.randn(2, 1, 28, 28)
    out = model(x, torch.tensor([0, 999]), torch.tensor([3, 7]))
    print(out.shape, f"{sum(p.numel() for p in model.parameters()):,} parameters")
