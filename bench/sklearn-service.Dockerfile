# The hand-written ("seed-style") equivalent of examples/sklearn-service
# (variant cpu), the baseline bench/run.sh measures kiln against. It is
# written the way such files usually are: one stage, apt in the image,
# requirements.txt copied in and installed with a plain `pip install -r`
# (no cache mount, no --no-cache-dir: pip's wheel cache stays in the layer),
# then the app, the user, the command.
#
# The only concession to this machine: pip trusts the CA bundle passed as the
# build secret `ca-bundle` (a TLS-intercepting proxy sits between the build
# and PyPI), exactly as the recipe's `ca-bundle secret="ca-bundle"` does. The
# bundle is mounted for that one step, never copied into a layer.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1

# The recipe names no apt packages; a hand-written file still usually starts
# with an apt step (here: what the service would need at run time, already
# in the base). The lists are removed, as linters and most files do.
RUN apt-get update && \
    apt-get install -y --no-install-recommends ca-certificates && \
    rm -rf /var/lib/apt/lists/*

WORKDIR /app

COPY requirements.txt .
RUN --mount=type=secret,id=ca-bundle \
    PIP_CERT=/run/secrets/ca-bundle pip install -r requirements.txt

COPY app ./app

RUN useradd -m -u 1000 app
USER app

EXPOSE 8080
CMD ["python", "-m", "app.main"]
