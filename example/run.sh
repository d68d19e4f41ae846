#!/usr/bin/env bash
# Example job for the "example" service: needs only bash + coreutils.
# Summarises every *.pdb in the current folder into output.txt.
set -euo pipefail
shopt -s nullglob

out=output.txt
pdbs=(*.pdb)

{
  echo "Example job started"
  echo "PDB files: ${#pdbs[@]}"
  for f in "${pdbs[@]}"; do
    lines=0; atoms=0; chains=""
    while IFS= read -r line || [[ -n "$line" ]]; do
      lines=$((lines + 1))
      if [[ "$line" == ATOM* || "$line" == HETATM* ]]; then
        atoms=$((atoms + 1))
        c="${line:21:1}"
        if [[ -n "${c// /}" && "$chains" != *"$c"* ]]; then
          chains+="$c"
        fi
      fi
    done < "$f"
    echo "$f: lines=$lines atoms=$atoms chains=${chains:-none}"
  done
  echo "Computation complete!"
} > "$out"
