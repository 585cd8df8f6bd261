# kiln: the two commands of the README, and the steps they are made of.
#
#   make demo   set up what is missing (engine, fixture base images, the
#               frontend image), build an example through the frontend with
#               `docker buildx build`, and run it
#   make test   set up the same, then run every test: unit, golden, CLI and
#               the end-to-end suite against the real engines
#
# Everything is idempotent: a second run reuses the engine, the cached
# fixture rootfs and cargo's build outputs.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

FRONTEND_IMAGE ?= kiln/frontend:dev
DEMO ?= sklearn-service
DEMO_TARGET ?= cpu
DEMO_IMAGE ?= kiln-demo/$(DEMO):$(DEMO_TARGET)
# pip inside build steps trusts this machine's CA bundle, passed as a build
# secret (never baked into an image).
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
OLD_DOCKER_HOST := unix:///var/run/kiln-old-docker.sock

.PHONY: help build engine old-engine fixtures old-fixtures frontend-image demo test test-examples unit e2e lint bench engine-down

help:
	@echo "make demo    build examples/$(DEMO) through the kiln frontend and run it"
	@echo "make test    run the whole test suite (sets up the engines first)"
	@echo "make build   build the kiln CLI (target/release/kiln)"
	@echo "make lint    cargo fmt --check and clippy"
	@echo "make bench   kiln vs a hand-written Dockerfile (bench/)"

build:
	cargo build --release -p kiln

# The docker 26.1.5 engine (BuildKit 0.13) and a loopback registry.
engine:
	scripts/engine-up.sh

# bookworm's docker 20.10 (BuildKit 0.8, no MergeOp) on a second socket.
old-engine: engine
	scripts/old-engine-up.sh

fixtures: engine
	scripts/fixtures.sh

old-fixtures: old-engine fixtures
	DOCKER_HOST=$(OLD_DOCKER_HOST) scripts/fixtures.sh

frontend-image: engine
	frontend/build-image.sh $(FRONTEND_IMAGE)

demo: fixtures frontend-image
	@echo "== building examples/$(DEMO) (--target $(DEMO_TARGET)) through $(FRONTEND_IMAGE)"
	docker buildx build --builder default --load \
		-f examples/$(DEMO)/kiln.kdl --target $(DEMO_TARGET) \
		--secret id=ca-bundle,src=$(CA_BUNDLE) \
		-t $(DEMO_IMAGE) examples/$(DEMO)
	@echo "== docker run --rm $(DEMO_IMAGE)"
	docker run --rm $(DEMO_IMAGE)

unit:
	cargo test --workspace

# The whole suite: set-up first, so the end-to-end tests find their engines;
# KILN_E2E=1 makes them run (and fail, not skip, without an engine in CI).
test: fixtures old-fixtures frontend-image
	KILN_E2E=1 cargo test --workspace -- --test-threads=2

# The TensorFlow examples' CPU variants too (several hundred MB of wheels
# each, so not part of `make test`).
test-examples: fixtures frontend-image
	KILN_E2E=1 KILN_E2E_EXAMPLES=1 cargo test --test examples -- --test-threads=1

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench: fixtures frontend-image
	bench/run.sh

engine-down:
	scripts/engine-down.sh
