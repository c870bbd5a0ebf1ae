"""The GPU recipe (training/recipes/cifar10_h100.sh) rehearsed at toy size on the CPU: every phase, the
archives the device sends back, and the deadline that keeps packing inside the device's time limit."""
import json
import os
import shutil
import subprocess
import tarfile

from .conftest import ROOT

RECIPE = ROOT / "training" / "recipes" / "cifar10_h100.sh"
STATIC = ["w2", "w3", "w4", "w5", "w6", "w8"]
DYNAMIC = ["dq345_t4", "dq23456_t4", "dq23456_t3", "dq345_t4_div_sens"]
SAME_SCHEDULE = ["w2_cont", "w3_cont", "w4_cont"]  # static runs continued beside the dynamic ones


def recipe(phases, cwd, data, out, **env):
    env = dict(os.environ, SMOKE="1", DATA=str(data), OUT=str(out), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **env)
    return subprocess.run(["bash", str(RECIPE), *phases], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_recipe_runs_every_phase_and_sends_back_at_most_eight_archives(small_binary, tmp_path):
    out = tmp_path / "out"
    r = recipe(["dynamic"], tmp_path, small_binary, out)  # before the static runs exist: skipped, says why
    assert r.returncode == 1 and "skipping dynamic: w3 has not finished" in r.stderr
    shutil.rmtree(out)
    r = recipe(["fp", "static", "dynamic"], tmp_path, small_binary, out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # 14 runs, in launch order, two to an archive
    runs = ["fp"] + STATIC + ["w3_cont", "w4_cont", "w2_cont", "dq345_t4", "dq23456_t4", "dq23456_t3", "dq345_t4_div_sens"]
    archives = [f"{a}-{b}.tar.gz" for a, b in zip(runs[::2], runs[1::2])]
    assert sorted(p.name for p in out.iterdir()) == sorted(archives)
    for archive, pair in zip(archives, zip(runs[::2], runs[1::2])):
        with tarfile.open(out / archive) as t:
            members = set(t.getnames())
        for run in pair:
            # a finished run comes back with its model, config and log, without the resume state
            assert {f"{run}/model.pt", f"{run}/config.json", f"{run}/log.jsonl", f"{run}.log"} <= members
            assert f"{run}/last.pt" not in members
    # a second call does not start finished runs again: nothing trained, nothing sent back, logs untouched
    shutil.rmtree(out)
    r = recipe(["fp", "static", "dynamic"], tmp_path, small_binary, out)
    assert r.returncode == 0 and "w4: finished before this call" in r.stdout
    assert list(out.iterdir()) == [] and len((tmp_path / "runs/gpu/w4/log.jsonl").read_text().splitlines()) == 1
    wide = json.loads((tmp_path / "runs/gpu/dq23456_t3/config.json").read_text())
    assert (wide["model"]["candidates"], wide["target_bits"], wide["init"]) == ([2, 3, 4, 5, 6], 3, "runs/gpu/w3/model.pt")
    w2 = json.loads((tmp_path / "runs/gpu/w2_cont/config.json").read_text())
    assert (w2["precision"], w2["bits"], w2["init"]) == ("static", 2, "runs/gpu/w3/model.pt")
    r = recipe(["export"], tmp_path, small_binary, out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # against the separately trained static runs, and at the same schedule (there the reference is w4_cont)
    docs = tmp_path / "docs/results/gpu"
    rows = json.loads((docs / "results.json").read_text())
    assert [r["run"] for r in rows] == ["fp"] + STATIC + sorted(DYNAMIC)
    same = json.loads((tmp_path / "docs/results/gpu-same-schedule/results.json").read_text())
    assert [r["run"] for r in same] == SAME_SCHEDULE + sorted(DYNAMIC)
    assert {r["vs_static"]["run"] for r in same if r["precision"] == "dynamic"} == {"w4_cont"}
    table = (docs / "results.md").read_text()
    assert "| dq345_t4_div_sens | dynamic {3, 4, 5}, target 4, diversity 0.5, sensitivity 2 |" in table
    # beside the tables, the small files docs/results.md links to: every run's config, log and evaluation, and
    # a dynamic run's figures
    assert (docs / "accuracy_vs_bitflops.png").is_file()
    assert {p.name for p in (docs / "runs").iterdir()} == {"fp", *STATIC, *DYNAMIC, *SAME_SCHEDULE}
    assert {p.name for p in (docs / "runs/w4_cont").iterdir()} == {"config.json", "log.jsonl", "eval.json"}
    assert {p.name for p in (docs / "runs/dq345_t4").iterdir()} == {"config.json", "log.jsonl", "eval.json",
        "bits_per_layer.png", "bitflops_distribution.png", "images_cheapest.png", "images_costliest.png"}
    # a second export evaluates nothing again: the runs' evaluations are kept
    stamp = (tmp_path / "runs/gpu/fp/eval/eval.json").stat().st_mtime_ns
    r = recipe(["export"], tmp_path, small_binary, out)
    assert r.returncode == 0 and (tmp_path / "runs/gpu/fp/eval/eval.json").stat().st_mtime_ns == stamp


def test_recipe_packs_what_it_has_when_the_deadline_cuts_training(small_binary, tmp_path):
    out = tmp_path / "out"
    # past the deadline before training starts (MIN_PHASE_S < 0 lets the phase start anyway): stopped at once
    r = recipe(["fp"], tmp_path, small_binary, out, DEADLINE="1", MIN_PHASE_S="-100")
    assert r.returncode == 0 and "fp: stopped at the deadline; resumes from its last.pt next call" in r.stdout
    with tarfile.open(out / "fp.tar.gz") as t:
        assert "fp.log" in t.getnames() and "fp/model.pt" not in t.getnames()
    # with less than MIN_PHASE_S left, a phase is not started at all
    r = recipe(["fp"], tmp_path, small_binary, out, DEADLINE="1")
    assert r.returncode == 1 and "skipping fp: less than 60 s before the deadline" in r.stderr


ACCURACY = ROOT / "training" / "recipes" / "accuracy.sh"


def accuracy_recipe(phases, cwd, data, out, **env):
    env = dict(os.environ, SMOKE="1", DATA=str(data), OUT=str(out), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               SEEDS="0 1", STATIC_BITS="2 4", KEPT=str(cwd / "kept"), **env)
    return subprocess.run(["bash", str(ACCURACY), *phases], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1200)


def test_accuracy_recipe_rehearsed_every_phase_kept_and_resumed_elsewhere(small_binary, tmp_path):
    out = tmp_path / "out"
    r = accuracy_recipe(["static"], tmp_path, small_binary, out)  # before fp: skipped, says why
    assert r.returncode == 1 and "skipping static: fp_s0 has not finished" in r.stderr
    r = accuracy_recipe(["probe", "fp", "actq", "static", "long", "multi", "dynamic", "export"], tmp_path, small_binary,
                        out, TARGETS="3")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = tmp_path / "runs/gpu-accuracy"
    assert all((runs / f"probe_{p}/log.jsonl").is_file() for p in ("eager", "cl", "b512"))
    assert "s per epoch" in r.stdout
    cl = json.loads((runs / "probe_cl/config.json").read_text())
    b512 = json.loads((runs / "probe_b512/config.json").read_text())
    assert cl["channels_last"] and (b512["batch_size"], b512["channels_last"]) == (128, False)
    trained = ["fp_s0", "fp_s1", *(f"{a}_w{b}" for a in ("dorefa", "pact", "lsq") for b in (4, 2)),
               "w2_s0", "w4_s0", "w2_s1", "w4_s1", "w4_s0_long", "w2_s0_long"]
    assert all((runs / name / "model.pt").is_file() for name in trained)
    w4 = json.loads((runs / "w4_s1/config.json").read_text())
    assert (w4["model"]["act"], w4["seed"], w4["init"]) == ("lsq", 1, "runs/gpu-accuracy/fp_s1/model.pt")
    assert (runs / "w4_s1/calibration.json").is_file()
    pact = json.loads((runs / "pact_w2/config.json").read_text())
    assert (pact["model"]["act"], pact["bits"], pact["init"]) == ("pact", 2, "runs/gpu-accuracy/fp_s0/model.pt")
    multi = json.loads((runs / "multi_s1/config.json").read_text())
    assert (multi["precision"], multi["model"]["switchable_bn"], multi["init"]) == \
        ("multi", True, "runs/gpu-accuracy/fp_s1/model.pt")
    dq = json.loads((runs / "dq_t3_s1/config.json").read_text())
    assert (dq["precision"], dq["cost_scope"], dq["target_bits"], dq["tau_end"], dq["init"]) == \
        ("dynamic", "total", 3, 0.1, "runs/gpu-accuracy/multi_s1/model.pt")
    assert dq["model"]["candidates"] == [2, 3, 4, 5, 6] and dq["model"]["controller_bits"] == 8
    assert len(list(out.iterdir())) <= 8
    # export: all runs with the seeds grouped, and the quantizer comparison
    docs = tmp_path / "docs/results/accuracy"
    groups = {g["configuration"]: g for g in json.loads((docs / "results_seeds.json").read_text())}
    assert groups["w4"]["seeds"] == 2 and groups["fp"]["seeds"] == 2 and groups["w4_s0_long"]["seeds"] == 1
    assert groups["dq_t3"]["seeds"] == 2 and groups["multi"]["what"] == "multi-precision {2, 3, 4, 5, 6}, LSQ activations, switchable BN"
    quant = [r["what"] for r in json.loads((docs / "quantizers/results.json").read_text())]
    assert "static 2-bit, PACT activations" in quant and "static 4-bit" in quant and len(quant) == 7
    # kept here, then a call on a "fresh machine" (another runs folder) trains nothing again
    r = accuracy_recipe(["keep"], tmp_path, small_binary, out)
    assert r.returncode == 0 and (tmp_path / "kept/w4_s1/model.pt").is_file()
    assert not (tmp_path / "kept/w4_s1/last.pt").exists()
    shutil.rmtree(out)
    r = accuracy_recipe(["fp", "static"], tmp_path, small_binary, out, RUNS=str(tmp_path / "fresh"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fp_s1: finished before this call" in r.stdout and "w4_s1: finished before this call" in r.stdout
    assert list(out.iterdir()) == []
