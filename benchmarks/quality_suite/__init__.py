"""The parts of `benchmarks/quality.py`, the reproduction suite on the built-in synthetic sets.

* `grids`: what is run: datasets, methods, label splits, grid sizes, cells, their directories
  and `wss.train` commands;
* `costs`: the measured per-step cost table and the wall-time estimate of a plan;
* `runner`: a cell's state on disk and the runner of the unfinished cells (teachers first);
* `gamma_t`: the gamma x T grid, run through `launch/sweep.py` and read back from it;
* `tables`: the numbers of the report (mean and min-max over seeds, gap closed);
* `orderings`: the paper's orderings (PseudoSeg > supervised, ...) checked on the means;
* `report`: report.md (the paper's tables 5 and 6, ECE, gamma x T, orderings) and cells.md;
* `plots`: miou.png, reliability_<dataset>[_1_8].png and gamma_temperature.png (matplotlib).

Like the command line, nothing here imports TensorFlow: the training runs are subprocesses.
"""
