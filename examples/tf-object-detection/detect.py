"""Runs an object detector from TensorFlow Hub over an image."""
import argparse

import cv2
import numpy as np
import tensorflow as tf
import tensorflow_hub as hub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("image")
    parser.add_argument("--model", default="https://tfhub.dev/tensorflow/ssd_mobilenet_v2/2")
    args = parser.parse_args()
    image = cv2.cvtColor(cv2.imread(args.image), cv2.COLOR_BGR2RGB)
    detector = hub.load(args.model)
    result = detector(tf.convert_to_tensor(image[np.newaxis, ...], dtype=tf.uint8))
    scores = result["detection_scores"][0].numpy()
    print("detections above 0.5:", int((scores > 0.5).sum()))


if __name__ == "__main__":
    main()
