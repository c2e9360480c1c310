"""``python -m helpers prepare [dataset]``: put a dataset under data/ (Fashion-MNIST by default)."""
import sys

from .data import DatasetNotFoundError, prepare

if len(sys.argv) < 2 or sys.argv[1] != "prepare":
    sys.exit("usage: python -m helpers prepare [fashion-mnist|mnist|cifar10]")
try:
    print(f"data ready under {prepare(*sys.argv[2:3])}")
except (DatasetNotFoundError, ValueError) as error:
    sys.exit(str(error))
