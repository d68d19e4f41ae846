"""The original's real workload: PRODIGY on 2oob.pdb through server and executor (ΔG −6.2 kcal/mol)."""
from __future__ import annotations

import re

import pytest

from tests.harness import ROOT, results, upload, wait_for_outcome

PDB = ROOT.parent / "shared" / "data" / "2oob.pdb"
PRODIGY = ROOT / ".venv-prodigy" / "bin" / "prodigy"
AFFINITY = re.compile(r"Predicted binding affinity \(kcal\.mol-1\):\s+(-?\d+(?:\.\d+)?)")


@pytest.mark.skipif(not PRODIGY.exists(), reason="PRODIGY is not installed: run `make prodigy`")
@pytest.mark.skipif(not PDB.exists(), reason=f"{PDB} is not available")
def test_prodigy_predicts_the_binding_affinity_of_2oob(cluster):
    # As `make prodigy-executor` runs it: the job may read PRODIGY's venv (and the Python it was made from).
    executor = cluster.executor("prodigy", env={"PRODIGY_BIN": str(PRODIGY)}, pass_env="PRODIGY_BIN",
                                read_only_paths=PRODIGY.parent.parent)
    server = cluster.server({"prodigy": {"clients": executor.url}})

    response = upload(server, {"run.sh": (ROOT / "example" / "prodigy" / "run.sh").read_bytes(),
                               "2oob.pdb": PDB.read_bytes()}, user_id=1, service="prodigy")

    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    assert wait_for_outcome(server, job_id, 120) == 200
    output = results(server, job_id, timeout=30).read("prodigy.out").decode("utf-8")
    assert float(AFFINITY.search(output).group(1)) == pytest.approx(-6.2)
