"""One floor below the lesson: what keeps the scripts robust and measurable, not how a DiT works.

    cli.py             UserError, a script's exit status, the device and precision, train.py's
                       override flags
    checkpoint.py      atomic files, safe checkpoint loading, the training log, RNG states
    distributed.py     torchrun: processes, ranks that agree to stop, an ordered ending
    sampling.py        digits drawn with a config's sampler settings (train, inference, figures)
    pictures.py        drawing: grids, trajectories, plots, the animation
    image_files.py     folders of <index>_<label>.png digits, read back with checks
    frechet.py         the Frechet distance of two feature sets (FID and MNIST-FD)
    manifold.py        improved precision and recall: fidelity and variety, apart
    mnist_classifier.py  the small CNN behind MNIST-FD and class accuracy, and the scores
    schedule.py        the half-cosine learning-rate decay

Nothing here imports a module of the top level: the lesson's files (config.py, diffusion.py,
dit.py, ...) import from here, never the other way round, as DiT's `diffusion/` package serves its
`train.py` and `sample.py`. Where a function needs the model, the diffusion or the config, the
caller passes them in.
"""
