"""Which kills run: the scenarios, the phases each aims at, and how N kills split into chains.

A chain is one test: a run directory that lives through several kills in a row (kill,
check, save again, next child, kill...), so leftovers of one crash meet the next save.
Kill i of a scenario aims at its phases in turn, so every phase gets its share.
"""

from __future__ import annotations

import dataclasses

CHAIN_LENGTH = 5


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str
    weight: float
    targets: tuple[str, ...]  # "phase@thread", aimed at in turn


SCENARIOS = (
    # Checkpointer: sync saves of <dir>/<step>.
    Scenario(name="ckpt-sync", weight=2, targets=(
        "staging@main", "writing@main", "merge@main", "finalize@main", "commit@main")),
    # AsyncCheckpointer: staging on the caller's thread, the rest in the background.
    Scenario(name="ckpt-async", weight=2, targets=(
        "staging@main", "writing@bg", "merge@bg", "finalize@bg", "commit@bg")),
    # Checkpointer with force=True over one path: the old checkpoint is moved aside.
    Scenario(name="ckpt-force", weight=1, targets=("commit@main", "writing@main", "commit@main")),
    # Restores only: nothing on disk may change.
    Scenario(name="restore", weight=1, targets=("restore@main",)),
    # CheckpointManager, sync saves, max_to_keep=2, deleting old steps in the save call.
    Scenario(name="manager-sync", weight=2, targets=(
        "delete@main", "writing@main", "commit@main", "delete@main", "staging@main")),
    # CheckpointManager, async saves, max_to_keep=2, background deletion.
    Scenario(name="manager-async", weight=2, targets=(
        "delete@bg", "writing@bg", "commit@bg", "delete@bg", "staging@main")),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Chain:
    scenario: str
    scenario_index: int
    index: int
    targets: tuple[str, ...]


def split_kills(total: int) -> dict[str, int]:
    """`total` kills over the scenarios by weight (largest remainder), at least 1 each."""
    weights = {s.name: s.weight for s in SCENARIOS}
    whole = sum(weights.values())
    shares = {name: max(1.0, total * w / whole) for name, w in weights.items()}
    counts = {name: int(share) for name, share in shares.items()}
    by_remainder = sorted(shares, key=lambda name: shares[name] - counts[name], reverse=True)
    for name in by_remainder[:max(0, total - sum(counts.values()))]:
        counts[name] += 1
    return counts


def plan_chains(total: int, *, seed: int) -> dict[str, list[Chain]]:
    """Chains of at most CHAIN_LENGTH kills per scenario; `seed` rotates the phase order."""
    counts = split_kills(total)
    chains: dict[str, list[Chain]] = {}
    for scenario_index, scenario in enumerate(SCENARIOS):
        offset = seed % len(scenario.targets)
        targets = [scenario.targets[(offset + i) % len(scenario.targets)]
                   for i in range(counts[scenario.name])]
        chains[scenario.name] = [
            Chain(scenario=scenario.name, scenario_index=scenario_index, index=start // CHAIN_LENGTH,
                  targets=tuple(targets[start:start + CHAIN_LENGTH]))
            for start in range(0, len(targets), CHAIN_LENGTH)]
    return chains
