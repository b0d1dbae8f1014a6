"""Tests of fid_computer.py: the Frechet distance against a direct formula, the Inception path with
random weights (nothing is downloaded), the MNIST scores, the real set and its statistics cache,
and the errors a user can make (with the inference.py command when nothing was sampled yet)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fid_computer as fc
import support.mnist_classifier as mc
from dataset import load_mnist, resolve_data_dir
from helpers import needs_real_mnist, write_tiny_mnist
from support.cli import UserError
from support.frechet import feature_statistics, frechet_distance
from support.image_files import labelled_file_name, labels_from_names

N_TEST = 150  # tiny test-set size: more than the 129 images MNIST-FD needs (128-dim features)


# ------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny fake MNIST with its classifier already trained and cached (a few steps: seconds)."""
    root = write_tiny_mnist(tmp_path_factory.mktemp("tiny"), n_train=64, n_test=N_TEST)
    mc.load_classifier(root, load_mnist, "cpu", progress=False)
    return root


@pytest.fixture
def random_inception(monkeypatch, tmp_path):
    """pytorch-fid's InceptionV3 with random (seeded) weights instead of the FID download."""
    import pytorch_fid.inception as pi

    def random_fid_inception():
        torch.manual_seed(0)  # the same weights every time, so the statistics cache can hit
        return pi._inception_v3(num_classes=1008, aux_logits=False, weights=None)

    def no_download(*args, **kwargs):
        raise AssertionError("a test tried to download the Inception weights")

    monkeypatch.setattr(pi, "fid_inception_v3", random_fid_inception)
    monkeypatch.setattr(pi, "load_state_dict_from_url", no_download)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def write_pngs(folder: Path, n: int, size: int = 28, seed: int = 0, labelled: bool = True,
               brightest: int = 255, darkest: int = 0) -> Path:
    """n random grayscale images, pixels uniform in [darkest, brightest], named
    <index>_<label>.png (or img<index>.png)."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(darkest, brightest + 1, (n, size, size), generator=g, dtype=torch.uint8)
    for i in range(n):
        name = labelled_file_name(i, i % 10) if labelled else f"img{i}.png"
        Image.fromarray(pixels[i].numpy()).save(folder / name)
    return folder


def run_main(argv, capsys):
    """fid_computer.main(argv) -> (status, stdout, stderr)."""
    status = fc.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def score(out: str, name: str) -> float:
    line = next(l for l in out.splitlines() if l.startswith(f"{name}: "))
    return float(line.split(": ", 1)[1])


# ------------------------------------------------------------------------------ Inception

# Random weights and 65 images for 64 dims: a near-singular covariance, which SciPy remarks on.
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_inception_fid_end_to_end_with_random_weights(random_inception, tmp_path, capsys):
    real = write_pngs(tmp_path / "real", 65, seed=0)  # --dims 64 needs 65 images
    fake = write_pngs(tmp_path / "fake", 65, seed=1, labelled=False, brightest=60)  # darker
    common = ["--metric", "inception", "--dims", "64", "--real", real,
              "--cache-dir", tmp_path / "cache", "--batch-size", 65]

    status, out, err = run_main(common + ["--fake", real], capsys)
    assert status == 0, err
    assert abs(score(out, "FID")) < 0.01  # a set against itself
    assert "saved to" in out
    assert len(list((tmp_path / "cache").glob("real_inception64_*.npz"))) == 1

    status, out, err = run_main(common + ["--fake", fake], capsys)
    assert status == 0, err
    assert "(cached)" in out  # the real set was not processed again
    assert score(out, "FID") > 0.01  # random weights give small features: small, but not 0


def test_missing_inception_weights(monkeypatch, tiny, tmp_path, capsys):
    """Offline: --metric all says where the weights go and carries on; --metric inception fails."""
    import pytorch_fid.inception as pi
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(pi, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    where = str(tmp_path / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth")
    real = tmp_path / "real"
    fc.export_real_images(tiny, real, progress=False)
    common = ["--real", real, "--fake", real, "--data-dir", tiny, "--dims", "64",
              "--cache-dir", tmp_path / "cache"]

    status, out, err = run_main(common + ["--metric", "all"], capsys)
    assert status == 0, err
    warning = [l for l in err.splitlines() if "FID skipped" in l]
    assert len(warning) == 1 and where in warning[0]
    assert "FID: " not in out and abs(score(out, "MNIST-FD")) < 1e-3

    status, out, err = run_main(common + ["--metric", "inception"], capsys)
    assert status == 1
    assert err.startswith("error: ") and where in err and "Traceback" not in err


def test_damaged_inception_weights_are_a_user_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    where = tmp_path / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    where.parent.mkdir(parents=True)
    where.write_bytes(b"half a download")  # there, so torch.hub does not try to download it
    real = write_pngs(tmp_path / "real", 65)
    status, out, err = run_main(["--metric", "inception", "--dims", "64", "--real", real,
                                 "--fake", real, "--cache-dir", tmp_path / "cache"], capsys)
    assert status == 1 and err.startswith("error: ") and "Traceback" not in err
    assert f"the Inception weights at {where} are damaged" in err


# ------------------------------------------------------------------------------ MNIST scores

def test_mnist_scores_of_the_real_set_against_itself(tiny, tmp_path, capsys):
    images, labels = load_mnist(tiny, train=False, download=False)
    classifier = mc.load_classifier(tiny, load_mnist, "cpu", progress=False)
    real = mc.classifier_statistics(classifier, images)
    same = mc.mnist_scores(classifier, images, labels, real)
    assert abs(same["mnist_fd"]) < 1e-6 and same["num_images"] == N_TEST
    assert same["precision"] == same["recall"] == 1.0  # every point lies in its own twin's ball
    # A different set is further away, and the wrong labels are read as wrong.
    noisy = (images.float() * 0.5 + 100).to(torch.uint8)
    assert mc.mnist_scores(classifier, noisy, None, real)["mnist_fd"] > 1e-3
    wrong = mc.mnist_scores(classifier, images, (labels + 1) % 10, real)
    assert wrong["class_accuracy"] < same["class_accuracy"]
    with pytest.raises(UserError, match="3 digits are too few to score"):
        mc.mnist_scores(classifier, images[:3], labels[:3], real)  # no 3rd neighbour among 2
    # Recall split by the real digits' labels: a set of the test digits 0-4 alone holds every
    # real 0-4 among the digits it is compared with (distance 0) and none of the 5-9.
    assert same["per_class_recall"] is None  # no real labels given
    low = labels < 5
    split = mc.mnist_scores(classifier, images[low], labels[low], real,
                            real_labels=labels)["per_class_recall"]
    assert [split[k] for k in range(5)] == [1.0] * 5 and max(split[k] for k in range(5, 10)) < 0.5
    # The script scores the exported files exactly as the tensors (labels from the file names).
    folder = tmp_path / "real"
    fc.export_real_images(tiny, folder, progress=False)
    status, out, _ = run_main(["--metric", "mnist", "--data-dir", tiny, "--fake", folder,
                               "--real", folder, "--cache-dir", tmp_path / "cache"], capsys)
    assert status == 0 and abs(score(out, "MNIST-FD")) < 1e-3
    assert score(out, "precision") == score(out, "recall") == 1.0
    assert "recall per digit: " + "  ".join(f"{k}: 1.000" for k in range(10)) in out
    assert score(out, "class accuracy") == pytest.approx(same["class_accuracy"], abs=1e-4)
    assert len(list((tmp_path / "cache").glob("real_mnist128_*.npz"))) == 1


def test_other_classifier_weights_give_another_cache_file(tiny, tmp_path, capsys):
    real = tmp_path / "real"
    fc.export_real_images(tiny, real, progress=False)
    classifier = mc.load_classifier(tiny, load_mnist)
    files = fc.real_image_files(real)
    fc.real_statistics(real, files, classifier, 128, tmp_path / "cache", 500, "cpu")
    with torch.no_grad():
        classifier.fc1.bias.add_(0.1)  # other weights, the same network
    fc.real_statistics(real, files, classifier, 128, tmp_path / "cache", 500, "cpu")
    assert "(cached)" not in capsys.readouterr().out
    assert len(list((tmp_path / "cache").glob("real_mnist128_*.npz"))) == 2


@pytest.mark.slow
@needs_real_mnist
def test_classifier_on_real_mnist():
    """Trains the classifier once if ./data has none (minutes on a CPU), then scores the test set."""
    data_dir = resolve_data_dir()
    model = mc.load_classifier(data_dir, load_mnist, "cpu")
    images, labels = load_mnist(data_dir, train=False, download=False)
    _, preds = mc.classify(model, images)
    assert (preds == labels).float().mean().item() >= 0.99
    real = mc.classifier_statistics(model, images)
    scores = mc.mnist_scores(model, images, labels, real)
    assert abs(scores["mnist_fd"]) < 1e-3 and scores["class_accuracy"] >= 0.99
    assert min(scores["per_class_accuracy"].values()) >= 0.97
    # 10,000 training digits are close to the test set; blurred digits are far.
    train_images, train_labels = load_mnist(data_dir, train=True, download=False)
    near = mc.mnist_scores(model, train_images[:10_000], train_labels[:10_000], real)["mnist_fd"]
    blurred = torch.nn.functional.avg_pool2d(images.unsqueeze(1).float(), 3, 1, 1)[:, 0]
    far = mc.mnist_scores(model, blurred.to(torch.uint8), labels, real)["mnist_fd"]
    assert 0 < near < far


@pytest.mark.slow
@needs_real_mnist
def test_precision_and_recall_tell_fidelity_from_variety_on_real_mnist():
    """1,000 training digits against the test set score high on both; 1,000 training digits of
    the digits 0-4 only (labels right, each digit real) keep their precision but lose recall:
    what they draw is real, but half of what is real they never draw; blurred noise, drawn for
    every digit, loses precision."""
    data_dir = resolve_data_dir()
    model = mc.load_classifier(data_dir, load_mnist, "cpu")
    real = mc.classifier_statistics(model, load_mnist(data_dir, train=False, download=False)[0])
    images, labels = load_mnist(data_dir, train=True, download=False)
    full = mc.mnist_scores(model, images[:1000], labels[:1000], real)
    low = torch.nonzero(labels < 5)[:1000, 0]
    half = mc.mnist_scores(model, images[low], labels[low], real)
    g = torch.Generator().manual_seed(0)
    noise = torch.nn.functional.avg_pool2d(torch.rand(1000, 1, 28, 28, generator=g), 5, 1, 2)
    blurred_noise = mc.mnist_scores(model, (noise[:, 0] * 255).to(torch.uint8), None, real)
    assert full["precision"] > 0.6 and full["recall"] > 0.6, full
    assert abs(half["precision"] - full["precision"]) < 0.1, (half, full)
    assert half["recall"] < 0.7 * full["recall"], (half, full)
    assert half["class_accuracy"] > 0.97  # the labels are right: accuracy cannot see it
    assert blurred_noise["precision"] < 0.2 < full["precision"], blurred_noise


# ------------------------------------------------------------------------------ the real set

def test_real_export_writes_each_file_once(tiny, tmp_path):
    folder = tmp_path / "real"
    assert fc.export_real_images(tiny, folder, progress=False) == N_TEST
    images, labels = load_mnist(tiny, train=False, download=False)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [labelled_file_name(i, k) for i, k in enumerate(labels.tolist())]
    assert np.array_equal(np.asarray(Image.open(folder / names[7])), images[7].numpy())
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert fc.export_real_images(tiny, folder, progress=False) == 0
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    (folder / names[3]).unlink()
    assert fc.export_real_images(tiny, folder, progress=False) == 1  # only the missing one


def test_real_statistics_cache_is_reused_then_invalidated(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default images/real and images/cache land here
    fake = tmp_path / "fake"
    fc.export_real_images(tiny, fake, progress=False)
    argv = ["--metric", "mnist", "--data-dir", tiny, "--fake", fake]

    status, out, err = run_main(argv, capsys)
    assert status == 0, err
    assert f"exported {N_TEST}" in out and "saved to" in out
    # The fakes are a copy of the test set: distance 0, and the classifier's own test accuracy.
    assert abs(score(out, "MNIST-FD")) < 1e-3
    accuracy = torch.load(tiny / mc.CLASSIFIER_FILE, weights_only=True)["test_accuracy"]
    assert score(out, "class accuracy") == pytest.approx(accuracy, abs=1e-4)
    real = tmp_path / fc.REAL_DIR
    mtimes = {p.name: p.stat().st_mtime_ns for p in real.iterdir()}

    status, out, err = run_main(argv, capsys)
    assert status == 0, err
    assert "exported" not in out and "(cached)" in out
    assert {p.name: p.stat().st_mtime_ns for p in real.iterdir()} == mtimes

    # Another image under the same name: the cached statistics must not be served.
    first = sorted(real.iterdir())[0]
    Image.fromarray(np.full((28, 28), 255, dtype=np.uint8)).save(first)
    status, out, err = run_main(argv, capsys)
    assert status == 0, err
    assert "(cached)" not in out and "saved to" in out
    assert len(list((tmp_path / fc.CACHE_DIR).glob("real_mnist128_*.npz"))) == 2


# ------------------------------------------------------------------------------ bad input

@pytest.fixture
def folders(tiny, tmp_path):
    """A real set and a few broken fake folders, each next to the real one."""
    real = tmp_path / "real"
    fc.export_real_images(tiny, real, progress=False)
    (tmp_path / "empty").mkdir()
    write_pngs(tmp_path / "few", 50)
    write_pngs(tmp_path / "text", 140)
    (tmp_path / "text" / "notes.txt").write_text("not an image")
    write_pngs(tmp_path / "mixed", 140)
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "mixed" / "00099_9.png")
    write_pngs(tmp_path / "big", 140, size=32)
    write_pngs(tmp_path / "deep", 140)  # one 16-bit PNG among them, which Pillow would clip
    deep = Image.fromarray(np.full((28, 28), 22000, dtype=np.uint16))
    deep.save(tmp_path / "deep" / "00099_9.png")
    return tmp_path


OTHER_RUN = " (with --checkpoint RUN/model.pth for a run other than runs/default)"


@pytest.mark.parametrize("fake, message", [
    ("missing", "no images in {d}/missing: sample them first with python inference.py "
                "--num-per-class 100 --out-dir {d}/missing" + OTHER_RUN),
    ("empty", "no images in {d}/empty: sample them first with python inference.py "
              "--num-per-class 100 --out-dir {d}/empty" + OTHER_RUN),
    ("few", "{d}/few: 50 images, but the MNIST-FD with 128-dim features needs at least 129: "
            "the covariance of 128-dim features from fewer than 129 images is singular; sample "
            "more: python inference.py --num-per-class 100 --out-dir {d}/few" + OTHER_RUN),
    ("text", "{d}/text/notes.txt is not a readable image"),
    ("mixed", "images of mixed sizes in {d}/mixed"),
    ("big", "are 32 x 32 pixels; the MNIST classifier reads 28 x 28 digits"),
    ("deep", "pixels (16-bit integers or floats), which would be read clipped: save the digits "
             "as 8-bit images"),  # the mode's name (I;16 or I) depends on Pillow's version
])
def test_bad_fake_folder_gives_one_line_error(folders, tiny, fake, message, capsys):
    status, out, err = run_main(["--metric", "mnist", "--data-dir", tiny, "--real", folders / "real",
                                 "--fake", folders / fake, "--cache-dir", folders / "cache"], capsys)
    assert status == 1
    assert err.startswith("error: ") and message.format(d=folders) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_real_folder_and_unknown_flag(folders, tiny, capsys):
    status, out, err = run_main(["--metric", "mnist", "--data-dir", tiny, "--real",
                                 folders / "nowhere", "--fake", folders / "real"], capsys)
    assert status == 1 and "no real folder" in err
    status, out, err = run_main(["--fake", folders / "real", "--batch-size", 0], capsys)
    assert status == 1 and "--batch-size must be positive" in err
    with pytest.raises(SystemExit) as e:
        fc.main(["--metric", "mnist", "--bogus"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        fc.main(["--dims", "100"])  # not one of pytorch-fid's feature sizes


def test_names_without_labels_skip_only_the_class_accuracy(folders, tiny, capsys):
    write_pngs(folders / "unlabelled", 140, labelled=False)
    status, out, err = run_main(["--metric", "mnist", "--data-dir", tiny, "--real",
                                 folders / "real", "--fake", folders / "unlabelled",
                                 "--cache-dir", folders / "cache"], capsys)
    assert status == 0, err
    assert score(out, "MNIST-FD") > 0 and "class accuracy: " not in out
    assert "class accuracy skipped" in err and "img0.png" in err
    # A real folder whose names carry no digits: no recall per digit, the rest as before.
    status, out, err = run_main(["--metric", "mnist", "--data-dir", tiny, "--real",
                                 folders / "unlabelled", "--fake", folders / "real",
                                 "--cache-dir", folders / "cache"], capsys)
    assert status == 0, err
    assert "\nrecall: " in out and "recall per digit" not in out


def test_a_cache_that_cannot_be_written_warns_and_still_scores(folders, tiny, capsys):
    """The real statistics take minutes with Inception: a cache folder that cannot be made (a
    file in its way) costs the cache, not the scores."""
    (folders / "blocked").write_text("a file where the cache folder would go")
    status, out, err = run_main(["--metric", "mnist", "--data-dir", tiny, "--real",
                                 folders / "real", "--fake", folders / "real",
                                 "--cache-dir", folders / "blocked" / "cache"], capsys)
    assert status == 0, err
    assert "warning: could not keep the real statistics" in err and "--cache-dir" in err
    assert abs(score(out, "MNIST-FD")) < 1e-3


def test_labels_come_only_from_names_written_as_labelled_file_name():
    """<index>_<digit>.png, matched whole and in ASCII digits: a name that goes on after .png (even
    by a newline) or writes its digit in another script carries no label."""
    good = [Path(labelled_file_name(i, k)) for i, k in enumerate([7, 0, 3])]
    labels, why = labels_from_names(good)
    assert labels.tolist() == [7, 0, 3] and why == ""
    odd_names = ["00042_7.png\n", "00042_\u0667.png", "00042_7.png.bak", "x00042_7.png",
                 "00042_12.png", "00042_10.png"]  # 10: one past the last digit
    for odd in odd_names:
        labels, why = labels_from_names(good + [Path(odd)])
        assert labels is None and repr(odd) in why, odd


def test_image_files_are_the_visible_files_read_as_grayscale_of_one_size(tmp_path):
    """A folder's images: its files sorted by name, without hidden ones (a write in progress) or
    folders; read as 8-bit grayscale whatever their colour mode, and all of one size."""
    from support.image_files import image_files, read_images

    folder = write_pngs(tmp_path / "digits", 3)
    (folder / ".00003_3.png").write_bytes((folder / "00000_0.png").read_bytes())  # hidden
    (folder / "00004_4.png").mkdir()  # a folder, even one with an image's name
    files = image_files(folder)
    assert [f.name for f in files] == ["00000_0.png", "00001_1.png", "00002_2.png"]
    Image.fromarray(np.full((28, 28, 3), 200, dtype=np.uint8)).save(folder / "00002_2.png")  # RGB
    images = read_images(folder, files)
    assert images.pixels.shape == (3, 28, 28) and images.pixels.dtype == torch.uint8
    assert (images.pixels[2] == 200).all() and images.labels.tolist() == [0, 1, 2]
    Image.fromarray(np.zeros((32, 28), dtype=np.uint8)).save(folder / "00001_1.png")  # taller
    with pytest.raises(UserError, match="00000_0.png is 28 x 28 but 00001_1.png is 28 x 32"):
        read_images(folder, files)


def run_script(argv, cwd):
    """python fid_computer.py argv, as a user runs it: a separate process."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, str(root / "fid_computer.py"), *map(str, argv)],
                          capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})


def test_command_line_error_has_no_traceback(tmp_path):
    """As a user sees it: one line on stderr, exit status 1."""
    fake = write_pngs(tmp_path / "fake", 130)  # enough for MNIST-FD's 128 dims
    proc = run_script(["--metric", "mnist", "--real", tmp_path / "nothing", "--fake", fake],
                      tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: no real folder {tmp_path / 'nothing'}: pass a folder of real digits, or drop "
        f"--real to compare with the MNIST test set ({fc.REAL_DIR})"]


def test_nothing_sampled_yet_names_the_inference_command(tmp_path, capsys):
    """A missing or empty fake folder: the one command that fills it, before any other work."""
    (tmp_path / "empty").mkdir()
    for fake in [tmp_path / "missing", tmp_path / "empty"]:
        proc = run_script(["--metric", "mnist", "--fake", fake], tmp_path)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"error: no images in {fake}: sample them first with python inference.py "
            f"--num-per-class 100 --out-dir {fake}" + OTHER_RUN]
    assert not (tmp_path / fc.REAL_DIR).exists()  # nothing exported before the check
    # The standard FID wants 10,000 images, as many as the test set.
    status, out, err = run_main(["--fake", tmp_path / "missing"], capsys)
    assert status == 1 and "--num-per-class 1000 --out-dir" in err


def test_too_few_images_fail_before_the_real_set_is_exported(tmp_path, monkeypatch, capsys):
    """The count is checked in seconds, before the minute of exporting the test set or training
    the classifier: a folder of 10 is refused with nothing exported."""
    fake = write_pngs(tmp_path / "fake", 10)
    monkeypatch.chdir(tmp_path)  # where the real set (images/real) would be exported
    status, out, err = run_main(["--metric", "mnist", "--fake", fake], capsys)
    assert status == 1 and "10 images, but the MNIST-FD with 128-dim features needs at least 129" \
        in err
    assert not (tmp_path / fc.REAL_DIR).exists()


def test_metric_all_on_too_few_images_for_fid_skips_it_and_scores_mnist(tiny, tmp_path, capsys):
    """1,000 samples suit MNIST-FD's 128 dims but not FID's 2048: the default --metric all warns
    about FID (before loading Inception) and still prints the MNIST scores."""
    fake = write_pngs(tmp_path / "fake", 200)
    status, out, err = run_main(["--data-dir", tiny, "--real", write_pngs(tmp_path / "real", 200),
                                 "--fake", fake, "--cache-dir", tmp_path / "cache"], capsys)
    assert status == 0, err
    warning = [l for l in err.splitlines() if "FID skipped" in l]
    assert len(warning) == 1 and "needs at least 2049" in warning[0]
    assert "FID:" not in out and "MNIST-FD:" in out and "class accuracy:" in out


def test_the_real_statistics_cache_key_covers_the_contents_of_each_file(tmp_path):
    network = torch.nn.Linear(1, 1)
    f = tmp_path / "00000_0.png"
    f.write_bytes(b"\x00" * 10)
    before = fc.cache_path(tmp_path, "mnist128", [f], network)
    f.write_bytes(b"\x01" * 10)  # same name, same size, other bytes
    assert fc.cache_path(tmp_path, "mnist128", [f], network) != before


def test_a_cache_from_before_precision_and_recall_is_computed_again(tmp_path):
    """A cached MNIST-FD file with only mu and sigma (no features) is not served: mnist_scores
    needs the features."""
    real = write_pngs(tmp_path / "real", 130, seed=0)
    files = fc.real_image_files(real)
    torch.manual_seed(0)
    classifier = mc.MnistClassifier().eval()
    path = fc.cache_path(tmp_path / "cache", "mnist128", files, classifier)
    path.parent.mkdir()
    np.savez(path, mu=np.zeros(128), sigma=np.eye(128))  # an old cache file
    stats = fc.real_statistics(real, files, classifier, 128, tmp_path / "cache", 500, "cpu")
    assert stats["features"].shape == (130, 128)
    assert not np.array_equal(stats["mu"], np.zeros(128))


def test_fid_compares_the_fake_gaussian_with_the_real_one(tmp_path, monkeypatch, capsys):
    """The printed FID is the Frechet distance between the fake set's statistics and the real
    set's (its mean and its covariance), here with a stand-in network of 8 features (the mean
    of each of 8 blocks of pixels)."""
    real = write_pngs(tmp_path / "real", 70, seed=0)
    # the same mean grey, a quarter of the spread: the distance is mostly the covariance term
    fake = write_pngs(tmp_path / "fake", 70, seed=1, darkest=96, brightest=159)

    def features(network, images, dims, batch_size, device):  # 8 block means per image
        return images.pixels.double().reshape(len(images.files), 4, 7, 2, 14).mean((2, 4)) \
            .flatten(1).numpy()

    monkeypatch.setattr(fc, "load_inception", lambda dims, device: torch.nn.Identity())
    monkeypatch.setattr(fc, "network_features", features)
    status, out, _ = run_main(["--metric", "inception", "--dims", "64", "--real", real, "--fake",
                               fake, "--cache-dir", tmp_path / "cache", "--device", "cpu"], capsys)
    assert status == 0
    printed = float(next(l for l in out.splitlines() if l.startswith("FID: ")).split(": ")[1])

    def statistics(folder):  # what the script should have compared, computed here directly
        images = fc.read_images(folder, fc.image_files(folder))
        return feature_statistics(features(None, images, 64, 0, "cpu"))

    want = frechet_distance(*statistics(fake), *statistics(real))
    assert want > 100 and printed == pytest.approx(want, rel=1e-6, abs=0.01)
