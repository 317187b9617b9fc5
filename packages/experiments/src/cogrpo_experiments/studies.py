"""The six studies: the paper's Table 2 and Tables 5a–5e (and Appendix B's efficiency claim).

Each study trains and evaluates its arms through the :class:`~cogrpo_experiments.lab.Lab` (so arms
shared between studies are trained once), then states each of the paper's claims as a paired
comparison over seeds: the difference's mean and bootstrap 95% CI, next to the paper's number, and
a verdict (reproduced / not reproduced / inconclusive).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cogrpo_experiments.lab import Lab, Measurement, paired_difference, verdict

ALL = ["r", "tau_r", "tau_s", "cfg"]
METRIC = "overall"  # toy-GenEval overall


@dataclass
class Claim:
    text: str
    paper: str  # the paper's numbers for this claim, as text
    a: str  # arm labels: the claim is "b − a has the expected sign"
    b: str
    expected_sign: int = 1
    metric: str = METRIC


@dataclass
class StudyResult:
    name: str
    title: str
    paper_table: str
    description: str
    arms: dict[str, dict[str, Measurement]] = field(default_factory=dict)  # label -> metric -> per-seed values
    paper: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> paper metric -> value
    claims: list[dict[str, Any]] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)  # for line plots
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, label: str, seed: int, metrics: dict[str, float]) -> None:
        arm = self.arms.setdefault(label, {})
        for key, value in metrics.items():
            arm.setdefault(key, Measurement()).values[seed] = float(value)

    def judge(self, claim: Claim) -> None:
        diff = paired_difference(self.arms[claim.a][claim.metric], self.arms[claim.b][claim.metric])
        self.claims.append({
            "claim": claim.text, "paper": claim.paper, "a": claim.a, "b": claim.b, "metric": claim.metric,
            "difference": diff, "verdict": verdict(diff, claim.expected_sign),
        })


def _train_steps(lab: Lab) -> int:
    return lab.config({}, 0).steps


# -- Table 2 --------------------------------------------------------------------------------------------


def schedule_sensitivity(lab: Lab) -> StudyResult:
    low, high = lab.settings.sensitivity_steps
    res = StudyResult(
        "schedule-sensitivity", "Sensitivity of the base model to the mask schedule", "Table 2",
        f"The base model with its default schedule, the re-mask ratio replaced by cos(π(k+1)/2T)^γ; toy-GenEval at "
        f"T={low} and T={high} (the paper: ImageReward at 16 and 48 steps).",
    )
    res.paper = {
        "γ=1.0 @ low T": {"ImageReward": 0.660}, "γ=1.5 @ low T": {"ImageReward": 0.872}, "γ=2.0 @ low T": {"ImageReward": 0.865},
        "γ=1.0 @ high T": {"ImageReward": 0.918}, "γ=1.5 @ high T": {"ImageReward": 0.957}, "γ=2.0 @ high T": {"ImageReward": 0.937},
    }
    for seed in lab.seeds:
        for steps, tag in ((low, "low T"), (high, "high T")):
            for gamma in (1.0, 1.5, 2.0):
                res.record(f"γ={gamma} @ {tag}", seed, lab.evaluate(None, steps=steps, seed=seed, gamma=gamma))
    res.judge(Claim("γ=1.5 beats the default γ=1.0 at few steps", "+0.212 (0.660 → 0.872) at 16 steps", "γ=1.0 @ low T", "γ=1.5 @ low T"))
    res.judge(Claim("γ=1.5 beats the default γ=1.0 at many steps", "+0.039 (0.918 → 0.957) at 48 steps", "γ=1.0 @ high T", "γ=1.5 @ high T"))
    # the schedule matters more at few steps: the spread over γ (max − min) is larger at the lower T
    for seed in lab.seeds:
        for tag in ("low T", "high T"):
            values = [res.arms[f"γ={g} @ {tag}"][METRIC].values[seed] for g in (1.0, 1.5, 2.0)]
            res.record(f"spread over γ @ {tag}", seed, {METRIC: max(values) - min(values)})
    res.judge(Claim("the schedule matters more at few steps (larger spread over γ)", "spread 0.212 at 16 vs 0.039 at 48",
                    "spread over γ @ high T", "spread over γ @ low T"))
    return res


# -- Table 5a -------------------------------------------------------------------------------------------


ACTION_SPACE_ARMS = [
    ("naive GRPO (model only)", {"mode": "naive"}),
    ("+ r", {"schedule_components": ["r"]}),
    ("+ r, τr", {"schedule_components": ["r", "tau_r"]}),
    ("+ r, τr, τs", {"schedule_components": ["r", "tau_r", "tau_s"]}),
    ("+ r, τr, τs, s (Co-GRPO)", {"schedule_components": ALL}),
]


def action_space(lab: Lab) -> StudyResult:
    res = StudyResult(
        "action-space", "Trainable components of the action space", "Table 5a",
        "Naive GRPO (model only, fixed schedule), then Co-GRPO (alternating) with the schedule components made "
        "trainable one at a time; every arm runs the same iterations and rollouts.",
    )
    paper_ir = [0.942, 1.014, 1.037, 1.070, 1.102, 1.122]
    paper_hps = [28.83, 28.86, 28.93, 29.09, 29.21, 29.37]
    labels = ["base model"] + [label for label, _ in ACTION_SPACE_ARMS]
    res.paper = {label: {"ImageReward": ir, "HPSv2": hps} for label, ir, hps in zip(labels, paper_ir, paper_hps)}
    steps = _train_steps(lab)
    for seed in lab.seeds:
        res.record("base model", seed, lab.evaluate(None, steps=steps, seed=seed))
        for label, overrides in ACTION_SPACE_ARMS:
            res.record(label, seed, lab.evaluate(lab.train_arm(overrides, seed), steps=steps, seed=seed))
    res.judge(Claim("naive GRPO improves on the base model (marginally)", "+0.072 ImageReward", "base model", "naive GRPO (model only)"))
    for (a, _), (b, _) in zip(ACTION_SPACE_ARMS, ACTION_SPACE_ARMS[1:]):
        i = labels.index(b)
        res.judge(Claim(f"adding a component helps: {a} → {b}", f"{paper_ir[i] - paper_ir[i - 1]:+.3f} ImageReward", a, b))
    res.judge(Claim("Co-GRPO (all four) beats naive GRPO", "+0.108 ImageReward (1.014 → 1.122)", "naive GRPO (model only)", "+ r, τr, τs, s (Co-GRPO)"))
    return res


# -- Table 5b / Appendix B ----------------------------------------------------------------------------


def steps_transfer(lab: Lab) -> StudyResult:
    train_steps = _train_steps(lab)
    sweep = lab.settings.sweep_steps
    res = StudyResult(
        "steps-transfer", "Transfer across inference steps", "Table 5b, Appendix B",
        f"Co-GRPO trained at T={train_steps}, its schedule transferred by progress k/T and evaluated at T in {sweep}, "
        f"against the base model at the same T.",
    )
    paper = {8: (0.133, 0.874), 16: (0.735, 1.053), 32: (0.902, 1.091), 48: (0.942, 1.122), 64: (0.941, 1.099)}
    for t, (b, o) in paper.items():
        res.paper[f"base @ {t}"] = {"ImageReward": b}
        res.paper[f"Co-GRPO @ {t}"] = {"ImageReward": o}
    for seed in lab.seeds:
        run = lab.train_arm({"schedule_components": ALL}, seed)
        for t in sweep:
            res.record(f"base @ {t}", seed, lab.evaluate(None, steps=t, seed=seed))
            res.record(f"Co-GRPO @ {t}", seed, lab.evaluate(run, steps=t, seed=seed))
    for t in sweep:
        res.judge(Claim(f"Co-GRPO beats the base model at T={t}", "positive at every T (+0.16 … +0.74)", f"base @ {t}", f"Co-GRPO @ {t}"))
    for seed in lab.seeds:
        gain = {t: res.arms[f"Co-GRPO @ {t}"][METRIC].values[seed] - res.arms[f"base @ {t}"][METRIC].values[seed] for t in sweep}
        res.record("gain@fewest", seed, {METRIC: gain[sweep[0]]})
        res.record("gain@most", seed, {METRIC: gain[sweep[-1]]})
    res.judge(Claim(f"the gain is larger at few steps (T={sweep[0]} vs T={sweep[-1]})", "+0.741 at 8 vs +0.158 at 64", "gain@most", "gain@fewest"))
    # efficiency: the fewest base steps that match Co-GRPO at the reference step count
    reference = lab.settings.reference_steps
    target = res.arms[f"Co-GRPO @ {reference}"][METRIC].summary()["mean"]
    base_curve = {t: res.arms[f"base @ {t}"][METRIC].summary()["mean"] for t in sweep}
    matching = [t for t in sweep if base_curve[t] >= target]
    res.series = {"steps": sweep, "base": [base_curve[t] for t in sweep],
                  "trained": [res.arms[f"Co-GRPO @ {t}"][METRIC].summary()["mean"] for t in sweep]}
    if matching:
        res.notes.append(f"Efficiency: the base model needs T={matching[0]} to match Co-GRPO at T={reference} "
                         f"({matching[0] / reference:.1f}x the steps); the paper: 48 vs < 16 steps (4.2x).")
    else:
        res.notes.append(f"Efficiency: the base model does not reach Co-GRPO's T={reference} score ({target:.3f}) at any "
                         f"T up to {sweep[-1]} (> {sweep[-1] / reference:.1f}x the steps); the paper: 4.2x.")
    return res


# -- Table 5c -------------------------------------------------------------------------------------------


def cycles(lab: Lab) -> StudyResult:
    steps = _train_steps(lab)
    base = lab.config({"schedule_components": ALL}, 0)
    per_cycle = base.model_iterations + base.schedule_iterations
    res = StudyResult(
        "cycles", "Number of alternating cycles", "Table 5c",
        f"One alternating run of {base.cycles} cycles (each {base.model_iterations} model + {base.schedule_iterations} "
        f"schedule iterations), evaluated after each cycle.",
    )
    paper_ir = [0.942, 1.067, 1.093, 1.122]
    paper_hps = [28.83, 29.21, 29.22, 29.37]
    res.paper = {f"{c} cycles": {"ImageReward": ir, "HPSv2": hps} for c, (ir, hps) in enumerate(zip(paper_ir, paper_hps))}
    for seed in lab.seeds:
        run = lab.train_arm({"schedule_components": ALL}, seed)
        res.record("0 cycles", seed, lab.evaluate(None, steps=steps, seed=seed))
        from cogrpo_experiments.lab import checkpoints_by_iteration

        ckpts = checkpoints_by_iteration(run)
        for c in range(1, base.cycles + 1):
            res.record(f"{c} cycles", seed, lab.evaluate(ckpts[c * per_cycle], steps=steps, seed=seed))
    res.judge(Claim("the first cycle gives a large gain", "+0.125 ImageReward", "0 cycles", "1 cycles"))
    if base.cycles >= 2:
        res.judge(Claim(f"later cycles add more ({base.cycles} vs 1)", "+0.055 ImageReward (1.067 → 1.122)", "1 cycles", f"{base.cycles} cycles"))
    res.series = {"cycles": list(range(base.cycles + 1)), "mean": [res.arms[f"{c} cycles"][METRIC].summary()["mean"] for c in range(base.cycles + 1)]}
    return res


# -- Table 5d -------------------------------------------------------------------------------------------


def strategy(lab: Lab) -> StudyResult:
    steps = _train_steps(lab)
    res = StudyResult(
        "strategy", "Alternating vs joint optimisation", "Table 5d",
        "The same number of iterations and rollouts: alternating (model and schedule phases), joint (both policies in "
        "every update, eq. 16), and schedule-only (θ frozen; not in the paper).",
    )
    res.paper = {"base model": {"ImageReward": 0.942, "HPSv2": 28.83}, "joint": {"ImageReward": 1.031, "HPSv2": 29.06},
                 "alternating": {"ImageReward": 1.122, "HPSv2": 29.37}}
    for seed in lab.seeds:
        res.record("base model", seed, lab.evaluate(None, steps=steps, seed=seed))
        for label, mode in (("alternating", "alternating"), ("joint", "joint"), ("schedule-only", "schedule-only")):
            overrides = {"schedule_components": ALL} if mode == "alternating" else {"mode": mode, "schedule_components": ALL}
            res.record(label, seed, lab.evaluate(lab.train_arm(overrides, seed), steps=steps, seed=seed))
    res.judge(Claim("joint training improves on the base model", "+0.089 ImageReward", "base model", "joint"))
    res.judge(Claim("alternating beats joint at the same number of iterations", "+0.091 ImageReward (1.031 → 1.122)", "joint", "alternating"))
    return res


# -- Table 5e -------------------------------------------------------------------------------------------


def transfer_rewards(lab: Lab) -> StudyResult:
    steps = _train_steps(lab)
    held_out = lab.settings.held_out_reward
    res = StudyResult(
        "transfer-rewards", "Transfer to a held-out reward", "Table 5e",
        f"Co-GRPO trained on toy-geneval alone; the images of the held-out benchmark prompts scored with {held_out}, "
        f"which training never saw (the paper: trained on ImageReward + HPSv2, scored with MPS and CLIP score).",
    )
    res.paper = {"base model": {"MPS": 13.47, "CLIP": 31.94}, "Co-GRPO": {"MPS": 14.05, "CLIP": 32.35}}
    metric = f"reward/{held_out}"
    for seed in lab.seeds:
        res.record("base model", seed, lab.evaluate(None, steps=steps, seed=seed, held_out=True))
        run = lab.train_arm({"schedule_components": ALL, "reward": ["toy-geneval"], "reward_weights": [1.0]}, seed)
        res.record("Co-GRPO", seed, lab.evaluate(run, steps=steps, seed=seed, held_out=True))
    res.judge(Claim(f"the held-out reward ({held_out}) improves", "+0.58 MPS, +0.41 CLIP score", "base model", "Co-GRPO", metric=metric))
    res.judge(Claim("the trained-for benchmark improves", "(ImageReward +0.18 in the main table)", "base model", "Co-GRPO"))
    return res


STUDIES: dict[str, Callable[[Lab], StudyResult]] = {
    "schedule-sensitivity": schedule_sensitivity,
    "action-space": action_space,
    "steps-transfer": steps_transfer,
    "cycles": cycles,
    "strategy": strategy,
    "transfer-rewards": transfer_rewards,
}


def run_study(name: str, lab: Lab) -> StudyResult:
    t0 = time.perf_counter()
    train0, eval0 = lab.train_seconds, lab.eval_seconds
    result = STUDIES[name](lab)
    result.seconds = time.perf_counter() - t0
    result.notes.append(
        f"Wall time {result.seconds / 60:.1f} min (training {(lab.train_seconds - train0) / 60:.1f} min, evaluation "
        f"{(lab.eval_seconds - eval0) / 60:.1f} min; arms shared with earlier studies were reused)."
    )
    return result
