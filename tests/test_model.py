"""Tests of the model: patchify, adaLN-Zero, attention, time embedding, guidance."""

import math

import pytest
import torch

from config import ModelConfig, get_preset
from dit import (Autoguided, DiT, FinalLayer, LabelEmbedder, patchify, sincos_pos_embed_2d,
                 unpatchify, with_autoguidance)
from dit_block import DiTBlock, modulate
from time_emb import TimestepEmbedder, timestep_embedding


def small_model(patch_size=2, **kw):
    cfg = ModelConfig(patch_size=patch_size, hidden_size=32, depth=2, num_heads=4, **kw)
    return DiT(cfg)


def randomize(model, std=0.2):
    """Replace every parameter by random values, so zero-initialised layers do real work."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.mark.parametrize("p", [1, 2, 4, 7, 14])
def test_patchify_unpatchify_is_identity(p):
    x = torch.randn(3, 1, 28, 28)
    tokens = patchify(x, p)
    assert tokens.shape == (3, (28 // p) ** 2, p * p)
    assert torch.equal(unpatchify(tokens, p, 1), x)


def test_patchify_multichannel_roundtrip_and_layout():
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(unpatchify(patchify(x, 4), 4, 3), x)
    # token 1 is the top-right 4x4 patch, its first entries are pixel (0, 4) for channels 0..2
    assert torch.equal(patchify(x, 4)[:, 1, :3], x[:, :, 0, 4])


def test_patch_embedding_is_linear_map_of_patchify():
    model = randomize(small_model(patch_size=4))
    x = torch.randn(2, 1, 28, 28)
    conv = model.x_embedder.proj
    w = conv.weight.permute(0, 2, 3, 1).reshape(conv.weight.shape[0], -1)  # (D, p*p*C) in patchify order
    expected = patchify(x, 4) @ w.T + conv.bias
    assert torch.allclose(model.x_embedder(x), expected, atol=1e-5)


@pytest.mark.parametrize("p", [2, 4, 7])
def test_output_has_input_shape(p):
    model = randomize(small_model(patch_size=p))
    x = torch.randn(4, 1, 28, 28)
    out = model(x, torch.randint(0, 1000, (4,)), torch.randint(0, 10, (4,)))
    assert out.shape == x.shape
    assert out.abs().sum() > 0


def test_fresh_dit_outputs_exactly_zero():
    model = small_model()
    x = torch.randn(4, 1, 28, 28)
    out = model(x, torch.tensor([0, 10, 500, 999]), torch.tensor([0, 3, 9, 10]))
    assert torch.equal(out, torch.zeros_like(out))


def test_every_modulation_and_the_output_layer_start_at_zero():
    # adaLN-Zero: each block's and the final layer's shift, scale and gate regressions, and the
    # output projection, start at zero (the output above would stay zero with the last alone)
    model = small_model()
    layers = [block.adaLN_modulation[-1] for block in model.blocks]
    layers += [model.final_layer.adaLN_modulation[-1], model.final_layer.linear]
    for layer in layers:
        assert not layer.weight.any() and not layer.bias.any()


def test_fresh_embeddings_are_drawn_as_in_dit():
    # DiT's initialisation: the label table and the timestep MLP from N(0, 0.02^2)
    torch.manual_seed(0)
    model = DiT(get_preset("cpu").model)
    for weight in [model.y_embedder.embedding_table.weight, model.t_embedder.mlp[0].weight,
                   model.t_embedder.mlp[2].weight]:
        assert weight.std().item() == pytest.approx(0.02, rel=0.1)
        assert weight.mean().abs().item() < 0.003


def test_fresh_blocks_are_identity():
    model = small_model()
    x = torch.randn(2, 196, 32)
    c = torch.randn(2, 32)
    for block in model.blocks:
        assert torch.equal(block(x, c), x)


def test_trained_block_is_not_identity():
    # the identity test above could pass for a block that ignores its input; this one could not
    block = randomize(DiTBlock(32, 4))
    x = torch.randn(2, 10, 32)
    assert not torch.allclose(block(x, torch.randn(2, 32)), x)


def test_modulate_is_scale_around_one_plus_shift():
    """modulate(h, shift, scale) = h (1 + scale) + shift, per image and feature, on every token."""
    h = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])  # (B, N, D) = (1, 2, 2)
    shift, scale = torch.tensor([[0.5, -1.0]]), torch.tensor([[2.0, 0.0]])
    assert torch.equal(modulate(h, shift, scale), torch.tensor([[[3.5, 1.0], [9.5, -2.0]]]))


def layer_norm(x):
    """LayerNorm without learned scale and shift (eps 1e-6 as in DiT)."""
    return (x - x.mean(-1, keepdim=True)) / (x.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()


def test_mlp_is_linear_tanh_gelu_linear():
    """The block's feed-forward network: fc2(GELU(fc1(x))), with GELU in DiT's tanh form
    0.5 a (1 + tanh(sqrt(2 / pi) (a + 0.044715 a^3))) (inputs large enough that it differs from
    the exact GELU)."""
    mlp = randomize(DiTBlock(8, 2).mlp)
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(7)) * 3
    with torch.no_grad():
        a = mlp.fc1(x)
        gelu = 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))
        assert torch.allclose(mlp(x), mlp.fc2(gelu), atol=1e-6)


def test_dit_block_matches_adaln_zero_formula():
    """A block with non-zero weights computes the paper's adaLN block, written out here:
    (shift, scale, gate) x 2 = Linear(SiLU(c)), then x + gate * Attn(LN(x) (1 + scale) + shift)
    and the same with the MLP (attention and MLP used as the block's own sub-modules)."""
    block = randomize(DiTBlock(32, num_heads=4)).double()
    x, c = torch.randn(2, 5, 32, dtype=torch.float64), torch.randn(2, 32, dtype=torch.float64)
    linear = block.adaLN_modulation[-1]
    mod = torch.nn.functional.silu(c) @ linear.weight.T + linear.bias  # (B, 6 D)
    shift1, scale1, gate1, shift2, scale2, gate2 = [m[:, None, :] for m in mod.split(32, dim=1)]
    h = x + gate1 * block.attn(layer_norm(x) * (1 + scale1) + shift1)
    expected = h + gate2 * block.mlp(layer_norm(h) * (1 + scale2) + shift2)
    assert torch.allclose(block(x, c), expected, atol=1e-10)


def test_final_layer_matches_formula():
    """The final layer: Linear(LN(x) (1 + scale) + shift) with (shift, scale) = Linear(SiLU(c))."""
    layer = randomize(FinalLayer(32, patch_size=2, out_channels=1)).double()
    x, c = torch.randn(2, 5, 32, dtype=torch.float64), torch.randn(2, 32, dtype=torch.float64)
    linear = layer.adaLN_modulation[-1]
    mod = torch.nn.functional.silu(c) @ linear.weight.T + linear.bias  # (B, 2 D)
    shift, scale = mod[:, None, :32], mod[:, None, 32:]
    expected = (layer_norm(x) * (1 + scale) + shift) @ layer.linear.weight.T + layer.linear.bias
    assert torch.allclose(layer(x, c), expected, atol=1e-10)


def test_attention_matches_softmax_formula():
    block = randomize(DiTBlock(32, num_heads=4))
    attn = block.attn
    B, N, D, H = 2, 7, 32, 4
    Dh = D // H
    x = torch.randn(B, N, D, dtype=torch.float64)
    attn = attn.double()
    W, b = attn.qkv.weight, attn.qkv.bias
    q, k, v = (x @ W.T + b).split(D, dim=-1)  # each (B, N, D)
    heads = []
    for h in range(H):
        sl = slice(h * Dh, (h + 1) * Dh)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(Dh)  # (B, N, N)
        heads.append(torch.softmax(scores, dim=-1) @ v[..., sl])
    expected = torch.cat(heads, dim=-1) @ attn.proj.weight.T + attn.proj.bias
    assert torch.allclose(attn(x), expected, atol=1e-10)


def test_attention_under_cpu_bf16_autocast_matches_fp32(monkeypatch):
    """Under bf16 autocast on a CPU the attention core runs in fp32 (its bf16 backward is slow):
    the block still returns bf16, and output and gradients agree with fp32 to bf16 precision."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    attn = randomize(DiTBlock(32, num_heads=4)).attn
    x = torch.randn(2, 16, 32)
    out32 = attn(x)
    out32.square().sum().backward()
    grad32 = attn.qkv.weight.grad.clone()
    attn.zero_grad()
    seen, sdpa = [], F.scaled_dot_product_attention

    def spy(q, k, v):  # the dtype the kernel computed in (autocast may cast the inputs)
        out = sdpa(q, k, v)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = attn(x)
    assert seen == [torch.float32] and out16.dtype == torch.bfloat16
    out16.float().square().sum().backward()
    scale = out32.abs().max()
    assert (out16.float() - out32).abs().max() < 0.03 * scale
    assert (attn.qkv.weight.grad - grad32).abs().max() < 0.05 * grad32.abs().max()
    # bf16 weights without autocast: the core still runs in fp32, and returns to bf16
    seen.clear()
    out_bf16 = attn.bfloat16()(x.bfloat16())
    assert seen == [torch.float32] and out_bf16.dtype == torch.bfloat16


def test_timestep_embedding_matches_formula():
    dim, half = 8, 4
    t = torch.tensor([0, 1, 17, 999])
    emb = timestep_embedding(t, dim)
    for row, tv in enumerate(t.tolist()):
        for i in range(half):
            freq = 10000 ** (-i / half)
            assert emb[row, i].item() == pytest.approx(math.cos(tv * freq), abs=1e-4)
            assert emb[row, half + i].item() == pytest.approx(math.sin(tv * freq), abs=1e-4)


def test_odd_embedding_size_is_refused():
    with pytest.raises(ValueError, match="must be even"):
        timestep_embedding(torch.tensor([1]), 7)


def test_timestep_embedder_is_an_mlp_of_the_sinusoids():
    """TimestepEmbedder(t) = Linear(SiLU(Linear(timestep_embedding(t, 256)))), with DiT's max
    period 10,000 (random weights, so every layer does visible work)."""
    embedder = randomize(TimestepEmbedder(32))
    t = torch.tensor([0, 7, 500, 999])
    first, second = embedder.mlp[0], embedder.mlp[2]
    with torch.no_grad():
        want = second(torch.nn.functional.silu(first(timestep_embedding(t, 256, max_period=10000))))
        assert torch.allclose(embedder(t), want, atol=1e-5)


def test_distinct_timesteps_give_distinct_embeddings():
    emb = timestep_embedding(torch.arange(1000), 256)
    dists = torch.cdist(emb, emb)
    dists.fill_diagonal_(float("inf"))
    assert dists.min() > 1e-3
    out = TimestepEmbedder(32)(torch.arange(1000))
    assert out.shape == (1000, 32)


def test_position_embedding_distinct_and_bounded():
    pe = sincos_pos_embed_2d(32, 14)
    assert pe.shape == (196, 32)
    assert pe.abs().max() <= 1.0
    d = torch.cdist(pe, pe)
    d.fill_diagonal_(float("inf"))
    assert d.min() > 1e-3


def test_position_embedding_matches_formula():
    """Token n = r g + c (row-major) gets the row's 1D sin-cos code in the first half of the
    channels and the column's in the second, each code sines then cosines at the frequencies
    w_i = 10000^(-i / q), q = D / 4 (a row of 5 tokens, so rows and columns differ)."""
    D, g = 16, 5
    q = D // 4
    pe = sincos_pos_embed_2d(D, g)
    for n in range(g * g):
        r, c = divmod(n, g)
        for i in range(q):
            w = 10000 ** (-i / q)
            want = [math.sin(r * w), math.cos(r * w), math.sin(c * w), math.cos(c * w)]
            got = [pe[n, i], pe[n, q + i], pe[n, 2 * q + i], pe[n, 3 * q + i]]
            assert [v.item() for v in got] == pytest.approx(want, abs=1e-6), f"token {n}, i {i}"


def test_tokens_carry_their_positions():
    """Without the position embedding a DiT would be blind to where a patch lies: patch-wise
    embedding, attention and a patch-wise output layer commute with any shuffle of the patches.
    The embedding adds pos_embed to every image's tokens, and so shuffling the patches of the
    input no longer just shuffles the patches of the output."""
    p = 4
    model = randomize(small_model(patch_size=p)).eval()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 1, 28, 28, generator=g)
    t, y = torch.tensor([10, 700]), torch.tensor([3, 8])
    perm = torch.randperm(49, generator=g)
    shuffled = unpatchify(patchify(x, p)[:, perm], p, 1)
    with torch.no_grad():
        tokens, _ = model.embed(x, t, y)
        assert torch.allclose(tokens - model.x_embedder(x), model.pos_embed.expand_as(tokens),
                              atol=1e-5)

        def shuffle_gap():
            out, out_shuffled = model(x, t, y), model(shuffled, t, y)
            return (patchify(out_shuffled, p) - patchify(out, p)[:, perm]).abs().max().item()

        assert shuffle_gap() > 1e-3
        model.pos_embed.zero_()  # the same network without positions: blind to the shuffle
        assert shuffle_gap() < 1e-4


def test_guidance_scale_one_is_conditional_zero_is_unconditional():
    model = randomize(small_model()).eval()
    x = torch.randn(3, 1, 28, 28)
    t = torch.tensor([5, 500, 900])
    y = torch.tensor([1, 2, 3])
    null = torch.full_like(y, 10)
    cond, uncond = model(x, t, y), model(x, t, null)
    assert not torch.allclose(cond, uncond)
    assert torch.allclose(model.forward_with_cfg(x, t, y, 1.0), cond, atol=1e-5)
    assert torch.allclose(model.forward_with_cfg(x, t, y, 0.0), uncond, atol=1e-5)
    # the batched two-half path used for any other scale agrees with the formula
    s = 3.0
    assert torch.allclose(model.forward_with_cfg(x, t, y, s), uncond + s * (cond - uncond), atol=1e-4)


def test_label_dropout_only_in_training():
    model = randomize(small_model(class_dropout_prob=1.0))
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([3, 4]), torch.tensor([1, 2])
    null = torch.full_like(y, 10)
    model.train()
    assert torch.allclose(model(x, t, y), model(x, t, null))  # every label dropped
    model.eval()
    assert not torch.allclose(model(x, t, y), model(x, t, null))


@pytest.mark.parametrize("s", [0.0, 1.0, 2.5])
def test_guidance_equals_formula_from_two_separate_passes(s):
    """Classifier-free guidance on a DiT with non-zero weights is eps_null + s (eps_y - eps_null),
    with eps_y and eps_null from two separate forward passes: each row is guided by its own label
    (distinct labels and timesteps per row, so a swapped half or row shows)."""
    model = randomize(small_model()).eval()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 1, 28, 28, generator=g)
    t, y = torch.tensor([3, 250, 600, 999]), torch.tensor([7, 0, 9, 2])
    with torch.no_grad():
        eps_y, eps_null = model(x, t, y), model(x, t, torch.full_like(y, 10))
        guided = model.forward_with_cfg(x, t, y, s)
    expected = eps_null + s * (eps_y - eps_null)
    assert (eps_y - eps_null).abs().max() > 0.1  # the label matters, so a wrong mix would show
    assert (guided - expected).abs().max() < 1e-4 * expected.abs().max()


@pytest.mark.parametrize("s", [0.0, 1.0, 2.0])
def test_autoguidance_is_guidance_away_from_the_weaker_models_prediction(s):
    """Autoguidance adds (W - 1) (eps_y - eps_weak,y) to classifier-free guidance's eps, each
    term from its own separate pass; with s = 1 it is Karras et al.'s
    eps_weak + W (eps - eps_weak)."""
    model = randomize(small_model()).eval()
    weak = randomize(small_model(), std=0.25).eval()  # other weights: randomize's draw, scaled
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    t, y = torch.tensor([3, 250, 600, 999]), torch.tensor([7, 0, 9, 2])
    with torch.no_grad():
        eps_y, eps_weak = model(x, t, y), weak(x, t, y)
        eps_null = model(x, t, torch.full_like(y, 10))
        got = Autoguided(model, weak, 2.5).forward_with_cfg(x, t, y, s)
        plain = with_autoguidance(model, weak, 1.0).forward_with_cfg(x, t, y, s)
        alone = with_autoguidance(model, None, 2.5).forward_with_cfg(x, t, y, s)
    expected = eps_null + s * (eps_y - eps_null) + 1.5 * (eps_y - eps_weak)
    assert (eps_y - eps_weak).abs().max() > 0.1  # the weak model differs, so a wrong sum would show
    assert (got - expected).abs().max() < 1e-4 * expected.abs().max()
    if s == 1.0:
        assert torch.allclose(got, eps_weak + 2.5 * (eps_y - eps_weak), atol=1e-4)
    # W = 1, or no weak model, is classifier-free guidance alone
    guided = model.forward_with_cfg(x, t, y, s)
    assert torch.equal(plain, guided) and torch.equal(alone, guided)
    with torch.no_grad():
        unit = Autoguided(model, weak, 1.0).forward_with_cfg(x, t, y, s)
    assert torch.allclose(unit, guided, atol=1e-5)
    assert (got - guided).abs().max() > 0.1


def test_only_autoguidance_one_is_no_autoguidance():
    """W = 1 adds nothing and gives back the model itself; W = 0 is a guidance like any other
    (it subtracts the difference), not "off"."""
    model, weak = small_model(), small_model()
    assert with_autoguidance(model, weak, 1.0) is model
    for scale in [0.0, 0.5, 2.0]:
        guided = with_autoguidance(model, weak, scale)
        assert isinstance(guided, Autoguided) and guided.scale == scale


def test_cfg_predictions_returns_the_guided_and_the_conditional_eps():
    model = randomize(small_model()).eval()
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([5, 500, 900]), torch.tensor([1, 2, 3])
    with torch.no_grad():
        for s in [1.0, 2.0]:
            guided, cond = model.cfg_predictions(x, t, y, s)
            assert torch.allclose(cond, model(x, t, y), atol=1e-5)
            assert torch.allclose(guided, model.forward_with_cfg(x, t, y, s), atol=1e-5)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_labels_are_dropped_at_the_configured_rate(p):
    """In training mode each label becomes the null label (row num_classes of the table) with
    probability class_dropout_prob, evenly over the classes; kept labels use their own row; in
    eval mode nothing is dropped. Rows are told apart by making row k the k-th unit vector."""
    emb = LabelEmbedder(num_classes=10, hidden_size=11, dropout_prob=p)
    with torch.no_grad():
        emb.embedding_table.weight.copy_(torch.eye(11))
    n = 20_000
    y = torch.arange(n) % 10
    torch.manual_seed(0)
    rows = emb.train()(y).argmax(dim=1)
    dropped = rows == 10
    assert torch.equal(rows[~dropped], y[~dropped])
    share, se = dropped.float().mean().item(), (p * (1 - p) / n) ** 0.5
    assert abs(share - p) < 4 * se, (share, p)
    for k in range(10):  # each class alone: n / 10 labels, so 4 standard errors of that size
        assert abs(dropped[y == k].float().mean().item() - p) < 4 * (p * (1 - p) / (n / 10)) ** 0.5
    assert torch.equal(emb.eval()(y).argmax(dim=1), y)


def test_presets_build_and_roundtrip():
    from config import PRESETS, Config
    for name in PRESETS:
        cfg = get_preset(name)
        assert Config.from_dict(cfg.to_dict()) == cfg
    DiT(get_preset("tiny").model)


def test_config_from_dict_refuses_what_it_does_not_know():
    """An unknown section or field in a checkpoint's config is a one-line UserError naming the
    checkpoint, never silently dropped."""
    from config import Config
    from support.cli import UserError
    for damaged in [{**get_preset("tiny").to_dict(), "scheduler": {"kind": "cosine"}},
                    {**get_preset("tiny").to_dict(), "train": {"batch_size": 16, "momentum": 0.9}}]:
        with pytest.raises(UserError, match="^run/model.pth has a config this code does not know"):
            Config.from_dict(damaged, source="run/model.pth")


def test_config_check_covers_every_section_and_their_fit():
    """Config.check runs the sampling checks too (guidance scales of 0 are allowed) and refuses a
    DiT whose channels are not the latents'; the autoencoder's section checks itself when built."""
    from config import AutoencoderConfig, Config, SampleConfig
    from support.cli import UserError
    SampleConfig(cfg_scale=0.0, autoguide_scale=0.0).check(1000)  # 0: unconditional, allowed
    with pytest.raises(UserError, match="--steps must be between 1 and 1000"):
        Config(sample=SampleConfig(steps=0)).check()
    with pytest.raises(UserError, match="the DiT takes 1 channels but the autoencoder gives 4"):
        Config(model=ModelConfig(image_size=8, patch_size=2),
               autoencoder=AutoencoderConfig()).check()
    with pytest.raises(UserError, match="lr positive, got 0.001 and 0"):
        AutoencoderConfig(lr=0)


def test_bad_model_config_is_a_user_error():
    """One line naming what to change: train.py's flag where the field has one, the field where
    it has none (no message names a flag that does not exist)."""
    from support.cli import UserError
    with pytest.raises(UserError, match="patch size 5"):
        ModelConfig(patch_size=5)
    with pytest.raises(UserError, match=r"image size 8: pass a --patch-size of 1, 2, 4, 8$"):
        ModelConfig(image_size=8, patch_size=3)
    for field in ["image_size", "in_channels", "num_classes"]:
        with pytest.raises(UserError, match=f"^{field} must be positive") as e:
            ModelConfig(**{field: 0})
        assert "--" not in str(e.value)
    with pytest.raises(UserError, match="^--depth must be positive"):
        ModelConfig(depth=0)
    with pytest.raises(UserError, match="divisible"):
        ModelConfig(hidden_size=30, num_heads=4)


def test_the_ends_run_in_fp32_under_bf16_autocast():
    """The patch embedding and the final layer stay fp32 under bf16 autocast (the digit is a
    correction of under 1% of the input at high noise, which bf16 would round off): with every
    block at adaLN-Zero's identity and the final modulation at zero, the whole path from x_t to
    the output is fp32, so the output matches fp32's to fp32 precision, though the blocks and
    the conditioning ran in bf16; bf16 at either end would put it about 1e-3 off."""
    torch.manual_seed(0)
    model = randomize(small_model()).eval()
    with torch.no_grad():
        for block in model.blocks:  # gates at zero: each block adds nothing
            block.adaLN_modulation[-1].weight.zero_()
            block.adaLN_modulation[-1].bias.zero_()
        model.final_layer.adaLN_modulation[-1].weight.zero_()  # shift = scale = 0
        model.final_layer.adaLN_modulation[-1].bias.zero_()
    x, t = torch.randn(4, 1, 28, 28), torch.tensor([0, 300, 700, 999])
    y = torch.tensor([0, 3, 7, 10])  # 10: the null label
    with torch.no_grad():
        out32 = model(x, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out16 = model(x, t, y)
            tokens, c = model.embed(x, t, y)
            after_block = model.blocks[0](tokens, c)
            t_emb = model.t_embedder(t)
    assert out16.dtype == torch.float32 and t_emb.dtype == torch.bfloat16  # the middle is bf16
    assert tokens.dtype == after_block.dtype == torch.float32  # the residual stream sums in fp32
    assert torch.allclose(out16, out32, rtol=1e-5, atol=1e-6)
