"""Tests of the lesson's pictures (support/pictures.py): each checks what the picture shows, not only
that a file was written."""

import numpy as np
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


def test_grid_draws_minus_one_black_and_one_white_on_white_padding(tmp_path):
    images = torch.stack([torch.full((1, 28, 28), v) for v in (-1.0, 0.0, 1.0, -1.0)])
    pictures.save_grid(images, tmp_path / "g.png", nrow=2)
    with Image.open(tmp_path / "g.png") as img:
        grid = np.asarray(img.convert("L"))
    assert grid.shape == (2 * 30 + 2, 2 * 30 + 2)  # 2 x 2 images of 28 px, 2 px padding
    for k, want in enumerate([0, 128, 255, 0]):  # image k in row k // 2, column k % 2
        r, c = divmod(k, 2)
        assert (grid[2 + 30 * r : 30 + 30 * r, 2 + 30 * c : 30 + 30 * c] == want).all(), k
    assert (grid[:2] == 255).all() and (grid[:, 30:32] == 255).all()  # the padding is white


def test_shown_columns_are_the_nearest_to_evenly_spaced_and_each_shown_once():
    assert pictures.shown_columns(21) == [0, 2, 4, 7, 9, 11, 13, 16, 18, 20]  # i * 20 / 9, rounded
    assert pictures.shown_columns(4) == [0, 1, 2, 3]  # fewer states than columns


def test_trajectory_and_guidance_strip_put_each_image_in_its_row_and_column(tmp_path, monkeypatch):
    """The trajectory: x_t in row 2r and x0-hat under it in row 2r + 1 for the r-th label, one
    column per state. The strip: row r for the r-th digit, column c for the c-th scale."""
    drawn = []
    monkeypatch.setattr(pictures, "save_figure", lambda fig, path: drawn.append(fig))
    g = torch.Generator().manual_seed(0)
    states, x0_preds, strip = (torch.rand(shape, generator=g) * 2 - 1  # 3 columns, 2 digits
                               for shape in [(3, 2, 1, 28, 28)] * 2 + [(2, 3, 1, 28, 28)])
    pictures.save_trajectory(states, x0_preds, ["x_T", "t=500", "x_0"], [7, 2], tmp_path / "t.png")
    pictures.save_guidance_strip(strip, [7, 2], (0.0, 1.0, 4.0), tmp_path / "s.png")

    def cells(fig):  # {(row, column): (the image shown there, its axis)}
        spec = lambda ax: (ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start)
        return {spec(ax): (torch.from_numpy(np.asarray(ax.images[0].get_array())), ax)
                for ax in fig.axes}

    trajectory, guidance = map(cells, drawn)
    for r, label in enumerate([7, 2]):
        for c in range(3):
            assert torch.equal(trajectory[2 * r, c][0], states[c, r, 0])
            assert torch.equal(trajectory[2 * r + 1, c][0], x0_preds[c, r, 0])
            assert torch.equal(guidance[r, c][0], strip[r, c, 0])
        assert trajectory[2 * r, 0][1].get_ylabel() == f"{label}: x_t"
        assert guidance[r, 0][1].get_ylabel() == str(label)
    assert [guidance[0, c][1].get_title() for c in range(3)] == [
        "s = 0\nunconditional", "s = 1\nconditional", "s = 4"]
    for fig in drawn:
        pictures.pyplot().close(fig)


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
    # the seed chooses that noise (figures.py --seed); the default is seed 0
    assert torch.equal(pictures.forward_process(diffusion, x0, (0, 300, 999), seed=0), rows)
    assert not torch.allclose(pictures.forward_process(diffusion, x0, (0, 300, 999), seed=1), rows)


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
    states[-1, 0, 0, 0, :2] = torch.tensor([3.0, -3.0])  # beyond [-1, 1]: clipped, not wrapped
    frames = pictures.sampling_frames(states, x0_preds, nrow=2, frames=5)
    assert frames[-1][2, 2:4].tolist() == [255, 0]
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
        assert gif.n_frames == 5 and gif.info.get("loop") == 0  # loops for ever
        durations = []
        for k in range(gif.n_frames):
            gif.seek(k)
            durations.append(gif.info["duration"])
    assert durations == [120] * 4 + [1000]  # the finished digits are held for a second


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
