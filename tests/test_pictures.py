"""Tests of the lesson's pictures (support/pictures.py): each checks what the picture shows, not only
that a file was written."""

import pytest
import torch
from PIL import Image

from diffusion import GaussianDiffusion
from dit import patchify, sincos_pos_embed_2d, unpatchify
from support import pictures


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion()


def fake_digit() -> torch.Tensor:
    """A 28 x 28 "7"-like stroke in [-1, 1], (1, 28, 28)."""
    x = -torch.ones(1, 28, 28)
    x[0, 6:9, 6:22] = 1.0  # the bar
    for r in range(9, 24):  # the diagonal
        c = 21 - (r - 9) // 2
        x[0, r, c - 1 : c + 1] = 1.0
    return x


def test_forward_process_starts_at_the_digit_and_ends_in_noise(diffusion):
    x0 = fake_digit()
    rows = pictures.forward_process(diffusion, x0, timesteps=(0, 300, 999))
    assert rows.shape == (3, 1, 28, 28)
    assert (rows[0] - x0).abs().max() < 0.05  # t = 0: sqrt(alpha-bar_0) = 0.99995, noise 0.01
    eps = (rows[2] - diffusion.sqrt_alphas_cumprod[999] * x0) / diffusion.sqrt_one_minus_alphas_cumprod[999]
    # t = 999: almost pure noise. The same eps sits under every column (only t changes).
    for k, t in enumerate([0, 300, 999]):
        expected = diffusion.sqrt_alphas_cumprod[t] * x0 + diffusion.sqrt_one_minus_alphas_cumprod[t] * eps
        assert torch.allclose(rows[k], expected, atol=1e-4)
    corr = torch.corrcoef(torch.stack([rows[2].flatten(), x0.flatten()]))[0, 1]
    assert abs(corr) < 0.1


def test_token_strip_reassembles_to_the_digit():
    x0 = fake_digit()
    for p in (4, 7):
        strip = pictures.token_strip(patchify(x0[None], p)[0], p)
        n = (28 // p) ** 2
        assert strip.shape == (p, n * (p + 1) - 1)
        tiles = [strip[:, k * (p + 1) : k * (p + 1) + p] for k in range(n)]  # drop the gaps
        tokens = torch.stack([t.reshape(-1) for t in tiles])[None]  # (1, N, p * p)
        assert torch.equal(unpatchify(tokens, p, 1)[0], x0)
        assert (strip[:, p :: p + 1] == 1).all()  # the white gaps between tiles


def test_maths_pictures_are_drawn(diffusion, tmp_path):
    x0 = fake_digit()
    pictures.save_forward_process(diffusion, x0, 5.0, tmp_path / "forward.png")
    pictures.save_tokens(x0, patchify(x0[None], 7)[0], sincos_pos_embed_2d(96, 4), 7,
                         tmp_path / "tokens.png")
    for name in ["forward.png", "tokens.png"]:
        with Image.open(tmp_path / name) as img:
            assert img.size[0] > 500 and img.size[1] > 300


def test_sampling_frames_pair_each_state_with_its_prediction(tmp_path):
    S, B = 12, 4
    states = torch.rand(S + 1, B, 1, 28, 28) * 2 - 1
    x0_preds = torch.rand(S, B, 1, 28, 28) * 2 - 1
    frames = pictures.sampling_frames(states, x0_preds, nrow=2, frames=5)
    assert len(frames) == 5
    grid_w = 2 * 30 + 2  # two images of 28 px with 2 px padding
    assert frames[0].shape == (2 * 30 + 2, 2 * grid_w + 8) and frames[0].dtype == torch.uint8
    left, right = frames[-1][:, :grid_w], frames[-1][:, grid_w + 8 :]
    assert torch.equal(left, right)  # at the end x_0 is its own prediction
    first = frames[0]
    # the first frame shows x_T beside the prediction made from it: top-left image of each grid
    assert torch.equal(first[2:30, 2:30], ((states[0, 0, 0] + 1) / 2 * 255).round().to(torch.uint8))
    assert torch.equal(first[2:30, grid_w + 8 + 2 : grid_w + 8 + 30],
                       ((x0_preds[0, 0, 0] + 1) / 2 * 255).round().to(torch.uint8))
    pictures.save_gif(frames, tmp_path / "sampling.gif")
    with Image.open(tmp_path / "sampling.gif") as gif:
        assert gif.n_frames == 5


def test_saved_figures_keep_their_pixels_in_a_palette(tmp_path):
    """save_figure stores a palette PNG: a figure of grey digits and text comes back pixel for
    pixel as matplotlib drew it, in a quarter of the bytes per pixel."""
    import io

    import numpy as np

    def draw():
        plt = pictures.pyplot()
        fig, axes = plt.subplots(1, 3, figsize=(4, 1.6))
        for i, ax in enumerate(axes):
            pictures.show_digit(ax, torch.rand(28, 28, generator=torch.Generator().manual_seed(i)) * 2 - 1)
            ax.set_title(f"t = {i}")
        return fig

    pictures.save_figure(draw(), tmp_path / "a.png")
    buffer = io.BytesIO()
    draw().savefig(buffer, dpi=100, format="png")
    with Image.open(tmp_path / "a.png") as saved, Image.open(buffer) as drawn:
        assert saved.mode == "P"
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(drawn.convert("RGB")))
