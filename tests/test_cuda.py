"""The CUDA path against the CPU: one training step, sampling, and checkpoints moving between them.

Marked `cuda`: they skip on a machine without a GPU (CI has none) and run in
`benchmarks/gpu_check.sh`. Each compares the same computation on the two devices from the same
numbers: the weights are built on the CPU and copied, and every random draw (timesteps, noise,
the samplers' noise) is made on the CPU and moved, since the CPU and CUDA generators give
different numbers for the same seed.
"""

import pytest
import torch

import train
from config import get_preset
from diffusion import GaussianDiffusion
from dit import DiT
from helpers import load_model, write_tiny_mnist

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


class FixedDraws(GaussianDiffusion):
    """The training loss with t and eps given instead of drawn: the same on every device."""

    def __init__(self, t: torch.Tensor, noise: torch.Tensor):
        super().__init__()
        self.t, self.noise = t, noise

    def training_loss(self, model, x0, y, min_snr_gamma=0.0):
        t, noise = self.t.to(x0.device), self.noise.to(x0.device)
        x_t = self.q_sample(x0, t, noise)
        mse = (model(x_t, t, y).float() - noise).pow(2).mean(dim=(1, 2, 3))
        return self._min_snr_weighted(mse, t, min_snr_gamma).mean()


def tiny_model_with_signal() -> DiT:
    """The tiny preset's DiT with every weight random (adaLN-Zero starts the gates and the
    output at 0, which would make both devices trivially agree), no label dropout."""
    cfg = get_preset("tiny").model
    cfg.class_dropout_prob = 0.0
    torch.manual_seed(0)
    model = DiT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def one_step(model: DiT, device: str, bf16: bool) -> tuple[float, torch.Tensor, torch.Tensor]:
    """train.train_step on `device`; returns the loss, the flat gradient and the new weights."""
    cfg = get_preset("tiny")
    model = model.to(device)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(16, 1, 28, 28, generator=g) * 2 - 1
    y = torch.arange(16) % 10
    diffusion = FixedDraws(torch.randint(0, 1000, (16,), generator=g),
                           torch.randn(16, 1, 28, 28, generator=g))
    optimizer = train.make_optimizer(model, cfg)
    loss = train.train_step(model, diffusion, optimizer, x0.to(device), y.to(device), cfg,
                            1e-3, bf16)
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).float().cpu()
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()
    return loss, grad, weights


@pytest.fixture
def no_tf32():
    """Plain fp32 matmuls on the GPU, for the exact comparison (train.py itself turns TF32 on)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_training_step_on_cuda_equals_the_cpu_step(bf16, no_tf32):
    model = tiny_model_with_signal()
    cpu_loss, cpu_grad, cpu_weights = one_step(model, "cpu", bf16=False)
    cuda_loss, cuda_grad, cuda_weights = one_step(tiny_model_with_signal(), "cuda", bf16=bf16)
    # fp32 against fp32: rounding only. bf16 keeps 8 bits of mantissa (relative error ~4e-3 per
    # operation), so the loss agrees to about a percent and the gradient in direction.
    loss_tol, cos_min = (1e-4, 0.99999) if not bf16 else (2e-2, 0.99)
    assert cuda_loss == pytest.approx(cpu_loss, rel=loss_tol)
    assert torch.nn.functional.cosine_similarity(cpu_grad, cuda_grad, dim=0) > cos_min
    # AdamW's first step moves each weight by at most about lr (here 1e-3): the weights after it
    # agree to that, and in fp32 to far less.
    weight_tol = 1e-5 if not bf16 else 2.5e-3
    assert (cpu_weights - cuda_weights).abs().max() < weight_tol


@pytest.mark.parametrize("sampler", ["ddim", "dpm-solver++"])
def test_sampling_on_cuda_matches_the_cpu(sampler, no_tf32, monkeypatch):
    def cpu_noise(shape, generator, device):  # every draw from one CPU stream, then moved
        return torch.randn(shape, generator=cpu_stream, dtype=torch.float64).to(device)

    outs = {}
    for device in ["cpu", "cuda"]:
        cpu_stream = torch.Generator().manual_seed(3)
        diffusion = GaussianDiffusion()
        monkeypatch.setattr(diffusion, "_noise", cpu_noise)
        model = tiny_model_with_signal().to(device).eval()
        y = torch.tensor([0, 3, 7, 9], device=device)
        outs[device] = diffusion.sample(model, (4, 1, 28, 28), y, sampler=sampler, steps=20,
                                        eta=1.0, cfg_scale=1.6).cpu()
    assert (outs["cpu"] - outs["cuda"]).abs().max() < 1e-3


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_mnist(tmp_path_factory.mktemp("mnist"), n_train=64, n_test=32)


@pytest.mark.parametrize("first, then", [("cuda", "cpu"), ("cpu", "cuda")])
def test_checkpoint_resumes_on_the_other_device(tiny_data, tmp_path, first, then):
    base = ["--preset", "tiny", "--data-dir", str(tiny_data), "--out-dir", str(tmp_path),
            "--amp", "off", "--sample-every", "1000000"]
    assert train.main(base + ["--device", first, "--max-steps", "4"]) == 0
    assert train.main(base + ["--device", then, "--max-steps", "8", "--resume"]) == 0
    ckpt = torch.load(tmp_path / "model.pth", weights_only=True)
    assert ckpt["step"] == 8
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    model, _ = load_model(tmp_path / "model.pth", then)  # and it samples where it now lives
    assert next(model.parameters()).device.type == then
