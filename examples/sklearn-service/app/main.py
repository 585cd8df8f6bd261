"""Fits a model on a small frame and prints a prediction (the demo's output)."""
import os
import pwd

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression


def main() -> None:
    frame = pd.DataFrame({"x": np.arange(10.0)})
    frame["y"] = 3 * frame["x"] + 1
    model = LinearRegression().fit(frame[["x"]], frame["y"])
    prediction = model.predict(pd.DataFrame({"x": [20.0]}))[0]
    user = pwd.getpwuid(os.getuid()).pw_name
    print(f"sklearn-service: y(20) = {prediction:.1f} (running as {user} in {os.getcwd()})")


if __name__ == "__main__":
    main()
