"""Recovery from the local tier in fresh processes, with folders lost, old or half-written.

Two set-ups, each one save launch and one restore launch (see local_tier_processes.py):
2 processes x 2 devices (mesh replica=2 x model=2: one replica per process) and 4 x 2
(replica=2 x model=4: two processes per replica, two slots each). Steps 1-3 are saved on
every process; then processes are SIGKILLed just after `save(4)` returned: both of the
2-process launch, and processes 1 and 3 (the same slots of both replicas) of the 4-process
one, while 0 and 2 commit step 4. Between the launches the test copies and wipes folders
to build each scenario; every restore is compared bit for bit with the state built afresh.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from core.emergency import local_tier_processes as work
from jaxpoint.core.testing.multiprocess import ProcessStatus, run_processes_with_outcomes

RUN_TIMEOUT_S = 120
_BATCH = re.compile(r"local-tier broadcast batch (\d+)/(\d+): (\d+) leaves, (\d+) bytes per device")
RAM_DISK = Path("/dev/shm")


def _run(target: Any, *, num_processes: int, args: tuple[Any, ...]) -> list[Any]:
    outcomes = run_processes_with_outcomes(target, num_processes=num_processes,
                                           devices_per_process=2, timeout_s=RUN_TIMEOUT_S,
                                           args=args)
    return outcomes


def _returned(outcomes: list[Any]) -> list[Any]:
    for outcome in outcomes:
        if outcome.status is not ProcessStatus.RETURNED:
            pytest.fail(f"{outcome.describe()}:\n{outcome.traceback or outcome.output}")
    return [o.value for o in outcomes]


def _copy(saved: Path, target: Path, *, without: tuple[int, ...] = ()) -> str:
    shutil.copytree(saved, target)
    for process in without:
        shutil.rmtree(target / f"p{process}")
    return str(target)


def _corrupt_data(step_folder: Path) -> None:
    """Flips bytes in every array data file of a local step."""
    files = [f for f in (step_folder / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files, step_folder
    for data_file in files:
        raw = bytearray(data_file.read_bytes())
        for offset in range(0, len(raw), 7):
            raw[offset] ^= 0xFF
        data_file.write_bytes(bytes(raw))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("local-tier-2")
    ram = Path(tempfile.mkdtemp(dir=RAM_DISK, prefix="jaxpoint-local-tier-test-"))
    try:
        saved = root / "saved"
        mixed = root / "mixed"
        outcomes = _run(work.save_then_die, num_processes=2,
                        args=(str(saved), 2, [0, 1], str(ram), str(mixed)))
        after_save = {p: _names(saved / f"p{p}") for p in (0, 1)}
        older = Path(_copy(saved, root / "older"))
        for step in (2, 3):
            shutil.rmtree(older / "p0" / str(step))
        shutil.rmtree(ram / "p1")
        corrupt = Path(_copy(saved, root / "corrupt", without=(1,)))
        _corrupt_data(corrupt / "p0" / "3")
        scenarios = [
            {"name": "intact", "folder": str(saved)},
            {"name": "wiped", "folder": _copy(saved, root / "wiped", without=(1,))},
            {"name": "older", "folder": str(older)},
            {"name": "none", "folder": str(root / "nothing")},
            {"name": "transposed", "folder": str(saved), "transpose": True},
            {"name": "one_replica", "folder": str(saved), "rows": 4},
            # Failures on one process: every process raises, and all stay in step.
            {"name": "mixed", "folder": str(mixed)},
            {"name": "mixed_forced", "folder": str(mixed), "step": work.MIXED_STEP},
            {"name": "corrupt_reader", "folder": str(corrupt)},
            {"name": "different_steps", "folder": str(saved), "steps": [3, 2]},
            {"name": "folder_became_file", "folder": _copy(saved, root / "file"), "file_on": 1},
            {"name": "ram_wiped", "folder": str(ram), "limit": 200},
        ]
        results = _returned(_run(work.restore_scenarios, num_processes=2,
                                 args=(str(root), 2, scenarios)))
        return {"root": root, "saved": saved, "save_outcomes": outcomes, "results": results,
                "after_save": after_save}
    finally:
        shutil.rmtree(ram, ignore_errors=True)


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory, two: dict[str, Any]) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("local-tier-4")
    saved = root / "saved"
    outcomes = _run(work.save_then_die, num_processes=4, args=(str(saved), 4, [1, 3], None))
    after_save = {p: _names(saved / f"p{p}") for p in range(4)}
    scenarios = [
        {"name": "crashed", "folder": str(saved)},
        {"name": "wiped", "folder": _copy(saved, root / "wiped", without=(2,))},
        {"name": "crossed", "folder": _copy(saved, root / "crossed", without=(0, 3))},
        {"name": "lost_slot", "folder": _copy(saved, root / "lost_slot", without=(0, 2))},
    ]
    results = _returned(_run(work.restore_scenarios, num_processes=4,
                             args=(str(root), 4, scenarios)))
    return {"root": root, "saved": saved, "save_outcomes": outcomes, "results": results,
            "after_save": after_save}


def _restored(results: list[dict[str, Any]], name: str, step: int) -> None:
    for process, result in enumerate(results):
        got = result[name]
        assert got["step"] == step, (process, got)
        assert got["mismatched"] == [], (process, got)
        assert got["shardings_equal"], (process, got)
        assert got["items"] == work.items_of(step), (process, got)


# ------------------------------------------------------------------- 2 processes


def test_killed_save_is_listed_nowhere_and_the_previous_step_restores(two: dict[str, Any]) -> None:
    assert [o.status for o in two["save_outcomes"]] == [ProcessStatus.DIED] * 2
    assert all(o.exit_code == -9 for o in two["save_outcomes"])
    for process in (0, 1):
        names = two["after_save"][process]
        # The save of step 4 was in flight: its work folder exists, uncommitted.
        assert [n for n in names if not n.startswith("4.orbax-checkpoint-tmp-")] == ["1", "2", "3"]
        assert len(names) == 4, names
        # The next LocalTier on the folder removed it (its process is dead).
        assert _names(two["saved"] / f"p{process}") == ["1", "2", "3"]
    for result in two["results"]:
        assert result["intact"]["local_steps"] == [1, 2, 3]
    _restored(two["results"], "intact", 3)


def test_intact_folders_are_read_locally(two: dict[str, Any]) -> None:
    for result in two["results"]:
        assert any("from every process's own folder" in line for line in result["intact"]["log"])


def test_a_wiped_folder_receives_its_shards_from_the_other_replica(two: dict[str, Any]) -> None:
    results = two["results"]
    assert results[1]["wiped"]["local_steps"] == []
    _restored(results, "wiped", 3)
    for result in results:
        assert any("read by processes [0]" in line and "sent to processes [1]" in line
                   for line in result["wiped"]["log"]), result["wiped"]["log"]


def test_a_process_with_only_an_older_step_still_gets_the_newest(two: dict[str, Any]) -> None:
    assert two["results"][0]["older"]["local_steps"] == [1]
    _restored(two["results"], "older", 3)
    assert any("read by processes [1]" in line and "sent to processes [0]" in line
               for line in two["results"][0]["older"]["log"])


def test_no_local_step_anywhere_gives_none(two: dict[str, Any]) -> None:
    for result in two["results"]:
        assert result["none"]["step"] is None
        assert any("no process holds any local step" in line for line in result["none"]["log"])


@pytest.mark.parametrize(("name", "reason"), [
    ("transposed", "saved on mesh (replica=2, model=2) with replica axis 'replica' (2 replicas) "
                   "with devices [0, 1, 2048, 2049], but the current mesh orders its devices "
                   "[0, 2048, 1, 2049]"),
    ("one_replica", "saved on mesh (replica=2, model=2) with replica axis 'replica' (2 replicas), "
                    "but the current one is mesh (replica=1, model=4) with replica axis "
                    "'replica' (1 replicas)"),
])
def test_another_mesh_gives_none_with_the_reason(two: dict[str, Any], name: str,
                                                 reason: str) -> None:
    for result in two["results"]:
        assert result[name]["step"] is None
        lines = [line for line in result[name]["log"] if "no restorable local step" in line]
        assert len(lines) == 1 and reason in lines[0], result[name]["log"]


def test_one_replica_is_warned_about_at_construction(two: dict[str, Any]) -> None:
    for result in two["results"]:
        assert any("has 1 replica along axis 'replica'" in line
                   for line in result["one_replica"]["log"])


def test_a_ram_disk_folder_works_and_broadcasts_in_batches(two: dict[str, Any]) -> None:
    results = two["results"]
    _restored(results, "ram_wiped", 3)
    assert results[1]["ram_wiped"]["local_steps"] == []
    for result in results:
        batches = [tuple(map(int, m.groups())) for line in result["ram_wiped"]["log"]
                   if (m := _BATCH.search(line))]
        assert len(batches) >= 2, result["ram_wiped"]["log"]
        assert sum(leaves for _, _, leaves, _ in batches) == len(work.SPECS)
        assert all(size <= 200 or leaves == 1 for _, _, leaves, size in batches), batches


def test_a_step_saved_with_different_trees_is_skipped_with_a_warning(two: dict[str, Any]) -> None:
    for result in two["results"]:
        assert result["mixed"]["local_steps"] == [3, work.MIXED_STEP]
    _restored(two["results"], "mixed", 3)
    for result in two["results"]:
        lines = [line for line in result["mixed"]["log"] if "newer steps are not restorable" in line]
        assert len(lines) == 1, result["mixed"]["log"]
        assert lines[0].endswith(
            "restoring local step 3; newer steps are not restorable: step 5: its processes [0] "
            "and [1] saved different trees: at tree path ['bias'] process 0 has shape (16,) "
            "bfloat16, process 1 has shape (16,) float32"), lines[0]


def test_restoring_a_step_saved_with_different_trees_raises_everywhere(
        two: dict[str, Any]) -> None:
    for result in two["results"]:
        assert result["mixed_forced"]["step"] == 3
        assert result["mixed_forced"]["error"] == (
            "TreeMismatchError: Expected every process holding local step 5 to have saved the "
            "same tree, but its processes [0] and [1] saved different trees: at tree path "
            "['bias'] process 0 has shape (16,) bfloat16, process 1 has shape (16,) float32. The "
            "step cannot be rebuilt consistently. To fix, restore the step "
            "agree_on_restorable_step() returns (it skips such steps), and make every process "
            "save the same state tree.")


def test_a_failed_read_raises_on_every_process_naming_the_reader(two: dict[str, Any]) -> None:
    # Process 0 alone reads (process 1 lost its folder); process 1 must not wait for it.
    for process, result in enumerate(two["results"]):
        got = result["corrupt_reader"]
        assert got["step"] == 3
        assert re.match(
            r"ProcessFailureError: Expected every process in \[0, 1\] to succeed at agreement "
            r"'local-tier/read', but process\(es\) \[0\] failed \(process 0: CheckpointError: "
            r"reading local step 3 from .*corrupt/p0/3 on process 0 failed: .*Recovery needs "
            r"every process: check that abstract_state matches the saved state; if the step "
            rf"is damaged, delete that folder .*\)\. Process {process} raises this too",
            got["error"]), got["error"]


def test_processes_asked_for_different_steps_raise_before_reading(two: dict[str, Any]) -> None:
    for result in two["results"]:
        assert result["different_steps"]["error"] == (
            "InvalidArgumentError: Expected every process to restore the same local step, got "
            "{0: 3, 1: 2} (process: step). To fix, pass every process the step "
            "agree_on_restorable_step() returned.")


def test_a_folder_that_fails_to_list_raises_on_every_process(two: dict[str, Any]) -> None:
    for process, result in enumerate(two["results"]):
        got = result["folder_became_file"]
        assert "step" not in got
        assert re.match(
            r"ProcessFailureError: Expected every process in \[0, 1\] to succeed at agreement "
            r"'local-tier/listed', but process\(es\) \[1\] failed \(process 1: CheckpointError: "
            r"listing the local steps in .*file/p1 on process 1 failed: StorageError: Expected "
            r"the local directory .*file/p1 to be a folder, found a file.*Recovery needs every "
            r"process: make that folder a readable directory \(or remove it: that process then "
            rf"receives its shards from another replica\).*Process {process} raises this too",
            got["error"]), got["error"]


# ------------------------------------------------------------------- 4 processes


def test_four_processes_skip_a_step_whose_slots_died_mid_save(four: dict[str, Any]) -> None:
    statuses = [o.status for o in four["save_outcomes"]]
    assert statuses[1] is statuses[3] is ProcessStatus.DIED, statuses
    assert [four["save_outcomes"][p].value["steps_after"] for p in (0, 2)] == [[2, 3, 4]] * 2
    for process in (1, 3):
        names = four["after_save"][process]
        assert [n for n in names if not n.startswith("4.orbax-checkpoint-tmp-")] == ["1", "2", "3"]
        assert len(names) == 4, names
    _restored(four["results"], "crashed", 3)
    for result in four["results"]:
        assert any("step 4 is held by processes [0, 2] only, so slots [2, 3]" in line
                   for line in result["crashed"]["log"]), result["crashed"]["log"]


def test_four_processes_one_wiped_host_receives(four: dict[str, Any]) -> None:
    # Replica 0 (processes 0, 1) is the source of every slot: process 3 holds the step
    # too but need not read it, it receives like process 2.
    _restored(four["results"], "wiped", 3)
    assert any("read by processes [0, 1] " in line and "sent to processes [2]" in line
               for line in four["results"][2]["wiped"]["log"])


def test_each_slot_takes_its_shards_from_a_replica_that_has_them(four: dict[str, Any]) -> None:
    # Process 0 (replica 0, slots 0-1) and 3 (replica 1, slots 2-3) lost their folders:
    # slots 0-1 come from replica 1 (process 2), slots 2-3 from replica 0 (process 1).
    _restored(four["results"], "crossed", 3)
    assert any("read by processes [1, 2]" in line and "sent to processes [0, 3]" in line
               for line in four["results"][0]["crossed"]["log"])


def test_a_slot_lost_on_every_replica_gives_none(four: dict[str, Any]) -> None:
    for result in four["results"]:
        assert result["lost_slot"]["step"] is None
        assert any("slots [0, 1]" in line for line in result["lost_slot"]["log"])
