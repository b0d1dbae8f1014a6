"""A screen of condition-annealed sampling (CADS, Sadat et al. 2024) on a checkpoint: MNIST-FD,
precision, recall and class accuracy of 1,000 digits per setting, averaged over --seeds draws.

    python benchmarks/cads_screen.py --checkpoint pretrained/model.pth \
        --settings 1.2,1.5,0,1,0 1.5,1.5,0.5,0.9,2 --seeds 0 1

Each setting is G,W,TAU1,TAU2,S[,noweak]: guidance G, autoguidance W, and the label's embedding
noised while t/(T-1) > TAU1, wholly past TAU2 (gamma falls linearly from 1 to 0 between them):
    y' = sqrt(gamma) y + S sqrt(1 - gamma) std(y) n,   n ~ N(0, I) drawn afresh at each step,
then rescaled to y's own mean and standard deviation (CADS's psi = 1). The noise is S times the
embedding's own spread (CADS's S is for unit-scale text embeddings); S = 0 is plain sampling.
The null label stays as it is; `noweak` leaves the weak model's label clean too. A screen kept
at one commit for the lab notebook ("Condition-annealed sampling"): it patches DiT.embed.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import dit  # noqa: E402
from common import MnistJudge, load_decoder, load_model  # noqa: E402
from diffusion import GaussianDiffusion  # noqa: E402
from support.sampling import class_labels, generate  # noqa: E402

STATE = {"on": False}


def annealed_embed(self, x, t, y):
    """DiT.embed with the label's embedding noised as the module docstring says."""
    tokens = self.x_embedder(x.to(self.pos_embed.dtype)) + self.pos_embed
    y_emb = self.y_embedder(y)
    if STATE["on"] and (STATE["weak"] or not getattr(self, "is_weak", False)):
        frac = t.float() / (STATE["T"] - 1)
        gamma = ((STATE["tau2"] - frac) / (STATE["tau2"] - STATE["tau1"])).clamp(0, 1)[:, None]
        cond = y != self.config.num_classes
        key = int(t[0])  # one noise per step, shared by the model and its weak model
        if key not in STATE["noise"]:
            STATE["noise"][key] = torch.randn(int(cond.sum()), y_emb.shape[1],
                                              generator=STATE["gen"])
        n, e, g = STATE["noise"][key], y_emb[cond], gamma[cond]
        mean, std = e.mean(1, keepdim=True), e.std(1, keepdim=True)
        noised = g.sqrt() * e + STATE["s"] * (1 - g).sqrt() * std * n
        noised = (noised - noised.mean(1, keepdim=True)) / noised.std(1, keepdim=True) * std + mean
        y_emb = y_emb.clone()
        y_emb[cond] = noised
    return tokens, self.t_embedder(t) + y_emb


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="pretrained/model.pth")
    p.add_argument("--settings", nargs="+", required=True, help="G,W,TAU1,TAU2,S[,noweak]")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args()
    dit.DiT.embed = annealed_embed
    judge = MnistJudge(None, "cpu")
    labels = class_labels(10, 100)
    for setting in args.settings:
        parts = setting.split(",")
        g, w, tau1, tau2, s = map(float, parts[:5])
        model, cfg = load_model(args.checkpoint, "cpu", cfg_scale=g, autoguide_scale=w)
        if isinstance(model, dit.Autoguided):
            model.weak.is_weak = True
        decoder = load_decoder(args.checkpoint, "cpu")
        diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        draws, start = [], time.perf_counter()
        for seed in args.seeds:
            STATE.update(on=s > 0, tau1=tau1, tau2=tau2, s=s, T=cfg.diffusion.num_timesteps,
                         weak=parts[5:] != ["noweak"], gen=torch.Generator().manual_seed(1000 + seed))
            generator = torch.Generator().manual_seed(seed)
            images = []
            for chunk in labels.split(100):
                STATE["noise"] = {}
                images.append(generate(model, diffusion, chunk, cfg, generator, autoencoder=decoder))
            draws.append(judge.score(torch.cat(images), labels))
        m = {k: sum(d[k] for d in draws) / len(draws)
             for k in ["mnist_fd", "precision", "recall", "class_accuracy"]}
        print(f"{setting:28s} {m['mnist_fd']:6.2f} / {m['precision']:.3f} / {m['recall']:.3f} / "
              f"{m['class_accuracy']:.4f}  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
