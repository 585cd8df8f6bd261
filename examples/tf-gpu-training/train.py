"""Trains a small Keras model on synthetic data."""
import argparse

import numpy as np
import tensorflow as tf

from src.model import build_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    print("GPUs:", tf.config.list_physical_devices("GPU"))
    x = np.random.rand(256, 8).astype("float32")
    y = (x.sum(axis=1) > 4).astype("float32")
    model = build_model(8)
    model.fit(x, y, epochs=args.epochs, verbose=2)


if __name__ == "__main__":
    main()
