#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: YAML syntax and every object against the
# Kubernetes schemas (kubernetes-validate from PyPI, installed into a local venv), that the
# kustomization lists files that exist, and that the bundled plan is the repo's plan aimed at
# the in-cluster testbed. (No cluster and no kubectl are needed.)
set -euo pipefail
cd "$(dirname "$0")"
venv="${TMPDIR:-/tmp}/gauntlet-k8s-venv"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q kubernetes-validate
fi
"$venv/bin/kubernetes-validate" --strict --quiet namespace.yaml coordinator.yaml worker.yaml testbed.yaml run-job.yaml
"$venv/bin/python" - <<'PY'
import os, yaml
k = yaml.safe_load(open("kustomization.yaml"))
for f in k["resources"] + [f for g in k.get("configMapGenerator", []) for f in g["files"]]:
    assert os.path.exists(f), f"kustomization.yaml lists {f}, which does not exist"
PY
diff <(sed 's|http://gauntlet-testbed:8080|http://127.0.0.1:8080|' plans/staging-suite.toml) ../../plans/staging-suite.toml \
  || { echo "deploy/k8s/plans/staging-suite.toml differs from plans/staging-suite.toml" >&2; exit 1; }
echo "k8s manifests valid"
