#!/usr/bin/env bash
# PRODIGY binding-affinity job: runs prodigy on the single *.pdb in the
# current folder and writes its report to prodigy.out.
# Set PRODIGY_BIN to the prodigy executable if it is not on PATH.
set -euo pipefail
shopt -s nullglob

pdbs=(*.pdb)
if [[ ${#pdbs[@]} -ne 1 ]]; then
  echo "expected exactly one *.pdb file, found ${#pdbs[@]}" >&2
  exit 2
fi

rc=0
"${PRODIGY_BIN:-prodigy}" "${pdbs[0]}" > prodigy.out 2> prodigy.err || rc=$?
if [[ $rc -ne 0 ]]; then
  cat prodigy.err >&2
  echo "prodigy failed with exit code $rc" >&2
  exit "$rc"
fi
grep -q "Predicted binding affinity" prodigy.out || {
  echo "prodigy produced no binding affinity" >&2
  exit 3
}
