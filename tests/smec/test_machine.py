import json
import sys

from smec.evaluation.results import write_results
from smec.machine import machine_info


def test_cpu_model_and_widest_simd_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 fma\n\n"
        "processor\t: 1\nmodel name\t: Example CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f\n"
    )
    m = machine_info(info)
    # The first processor's flags count: a mixed listing must not report more than every core has.
    assert m["cpu"] == "Example CPU 9000" and m["simd"] == "avx2"
    assert m["versions"]["numpy"] and m["cores"] >= 1


def test_no_cpuinfo_still_names_a_machine(tmp_path):
    m = machine_info(tmp_path / "absent")
    assert m["simd"] is None and m["cpu"]
    json.dumps(m)


def test_torch_capability_is_the_level_torch_dispatches_to(tmp_path):
    import torch

    assert "torch" in sys.modules
    expected = str(torch.backends.cpu.get_cpu_capability())
    assert expected and machine_info(tmp_path / "absent")["torch_cpu_capability"] == expected


def test_results_json_records_the_machine(tmp_path):
    path = write_results(tmp_path, [], dataset="d", split="test", base_models=[], input_dim=4)
    assert set(json.loads(path.read_text())["metadata"]["machine"]) == {
        "cpu",
        "simd",
        "cores",
        "platform",
        "python",
        "torch_cpu_capability",
        "versions",
    }
