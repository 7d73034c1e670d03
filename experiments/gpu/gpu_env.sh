# Sourced by the GPU scripts: installs wheels found in .whl/ (pure-Python packages missing on a bare
# GPU machine) into /tmp/site, puts lensrl's sources on PYTHONPATH and makes $OUT.
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
