"""This repository's studies: their arms, seeds, base configs and folders.

`lensrl study NAME` looks NAME up here (`STUDIES`) when run from the repository root; the reports it
writes are under results/. Plain Python over `lensrl.Study` and `lensrl.Arm`: a project of its own
keeps a file like this one and runs `lensrl study NAME --studies FILE`.
"""

from __future__ import annotations

from lensrl import Arm, Study


def _alpha(a: float) -> Arm:
    # alpha only scales negative-group advantages, so alpha = 0 is exactly LENS on mixed groups only
    # (tests/unit/test_advantages.py checks the two are equal): that arm reuses the ablation's runs.
    overrides = ("algo.scope=mixed",) if a == 0 else (f"algo.alpha={a}",)
    return Arm(f"lens_alpha{a:g}", ("algo.advantage=lens", *overrides))


GRPO = Arm("grpo", ("algo.advantage=grpo",))
LENS = Arm("lens", ("algo.advantage=lens",))
MIXED_ONLY = Arm("lens_mixed_only", ("algo.advantage=lens", "algo.scope=mixed"))
NEGATIVE_ONLY = Arm("lens_negative_only", ("algo.advantage=lens", "algo.scope=negative"))
GRPO_FILTERED = Arm("grpo_filtered", ("algo.advantage=grpo", "algo.filter_groups=true"))
UNIFORM_NEGATIVE = Arm("uniform_negative", ("algo.advantage=uniform_negative",))

W_REINFORCE = Arm("w_reinforce", ("algo.advantage=w_reinforce",))
NSR = Arm("nsr", ("algo.advantage=nsr",))
NGRPO = Arm("ngrpo", ("algo.advantage=ngrpo",))
LENS_NORMALIZED = Arm("lens_normalized_negative", ("algo.advantage=lens", "algo.normalize_negative=true"))

UNSEEN_EVAL = "data.eval=[{path: 'testbed:signs', per_level: 100, levels: [3, 4, 5], unseen: true}]"
"""The signs testbed's held-out evaluation: levels 3-5, problems in neither the warm-start stream nor
the run's RL pool (levels 1-2 have none: the warm-start stream holds every level-1 problem and all
but a handful of level 2)."""

SMOLLM2_WARM_START = "results/smollm2/chain_sum/warmstart"
"""The committed LoRA warm start of SmolLM2-135M-Instruct on chain sums (configs/smollm2/sft_chain_sum.yaml)."""
SMOLLM2_LR5E5 = ("optim.lr=5e-5", f"model.adapter={SMOLLM2_WARM_START}")
"""The chain-sum RL config (configs/smollm2/rl_chain_sum.yaml) at lr 5e-5 from the committed warm start."""

GRPO_KEPT_NORM = Arm("grpo_kept_norm", ("algo.advantage=grpo", "algo.normalize_by=kept"))
DYNAMIC = Arm("dynamic", ("algo.advantage=grpo", "rollout.selection={kind: dynamic}"))
GRESO = Arm("greso", ("algo.advantage=grpo", "rollout.selection={kind: greso}"))
KNAPSACK = Arm("knapsack", ("algo.advantage=grpo", "rollout.selection={kind: knapsack}"))
KNAPSACK_LENS = Arm("knapsack_lens", ("algo.advantage=lens", "rollout.selection={kind: knapsack}"))
COMPUTE_ARMS = (GRPO, LENS, GRPO_FILTERED, GRPO_KEPT_NORM, DYNAMIC, GRESO, KNAPSACK, KNAPSACK_LENS)
"""The arms of the compute studies, in the plan's order (results/signs/compute/PLAN.md)."""


def _compute(regime: str, levels: str, tokens: int) -> Study:
    """A compute study on signs (results/signs/compute/PLAN.md): a pool of 256 problems that every arm
    revisits, a budget of generated tokens, the held-out evaluation every 10 steps."""
    return Study(
        "signs-compute" + ("" if regime == "default" else f"-{regime}"),
        f"Negative groups per unit of compute ({regime} regime): which way of spending rollouts does best "
        f"at {tokens:,} generated tokens?",
        COMPUTE_ARMS,
        seeds=(0, 1, 2, 3, 4),
        overrides=(
            f"data.train=[{{path: 'testbed:signs', size: 256{levels}}}]",
            UNSEEN_EVAL,
            f"run.max_tokens={tokens}",
            "run.steps=400",
            "run.eval_every=10",
            "run.diagnostic_every=5",
        ),
        config="testbed:signs",
        results=f"results/signs/compute/{regime}",
        in_overview=False,  # held-out levels 3-5, as signs-negative
    )


MAIN_QUESTION = "Does LENS beat GRPO at pass@1..16, overall and on the hardest levels?"
ABLATION_QUESTION = "Which part of LENS helps: the mixed-group or the negative-group reweighting? (paper Table 2)"
REMEDIES_QUESTION = "What does LENS buy over the simple remedies for all-wrong groups?"


def _carry(name: str, question: str, arms: tuple[Arm, ...]) -> Study:
    """A study on the carry testbed (the typed defaults), evaluated every 10 steps, in results/carry/<name>."""
    return Study(name, question, arms, overrides=("run.eval_every=10",), results=f"results/carry/{name}")


def _signs(short: str, question: str, arms: tuple[Arm, ...], seeds: tuple[int, ...] = (0, 1, 2)) -> Study:
    """A study on the signs testbed: its config decides everything the arms do not (eval_every too)."""
    return Study(
        f"signs-{short}", question, arms, seeds, overrides=(), config="testbed:signs", results=f"results/signs/{short}"
    )


STUDIES: dict[str, Study] = {
    s.name: s
    for s in (
        _carry("main", MAIN_QUESTION, (GRPO, LENS)),
        _carry("ablation", ABLATION_QUESTION, (GRPO, LENS, MIXED_ONLY, NEGATIVE_ONLY)),
        _carry(
            "alpha",
            "How does LENS depend on alpha, the weight of negative groups?",
            tuple(_alpha(a) for a in (0.25, 0.0, 0.1, 0.5, 1.0)),
        ),
        _carry(
            "d_estimator",
            "Length-normalised (pibar) or raw sequence probability in D_imp?",
            (Arm("normalized", ("algo.d_estimator=normalized",)), Arm("sequence", ("algo.d_estimator=sequence",))),
        ),
        _carry(
            "group_size",
            "G = 16 or G = 8 at the same number of samples per step?",
            (
                Arm("G16", ("rollout.group_size=16", "rollout.questions_per_step=32")),
                Arm("G8", ("rollout.group_size=8", "rollout.questions_per_step=64")),
            ),
        ),
        _carry("remedies", REMEDIES_QUESTION, (GRPO, GRPO_FILTERED, UNIFORM_NEGATIVE, LENS)),
        _signs("main", MAIN_QUESTION, (GRPO, LENS), seeds=(0, 1, 2, 3, 4)),
        _signs("ablation", ABLATION_QUESTION, (GRPO, LENS, MIXED_ONLY, NEGATIVE_ONLY)),
        # alpha = 0.25 is the default: that arm's resolved config is signs-main's lens, whose runs it reuses
        _signs(
            "alpha",
            "How does LENS depend on alpha, the weight of negative groups, up to large values?",
            tuple(_alpha(a) for a in (0.25, 1.0, 4.0, 16.0)),
        ),
        _signs("remedies", REMEDIES_QUESTION, (GRPO, GRPO_FILTERED, UNIFORM_NEGATIVE, LENS)),
        Study(
            "signs-negative",
            "What should I do with negative groups? Signals strong enough to change the update, against GRPO",
            # the order is the plan's priority (results/signs/negative/PLAN.md): the runs go arm by arm
            (
                GRPO,
                W_REINFORCE,
                NSR,
                LENS_NORMALIZED,
                _alpha(1024.0),
                NGRPO,
                GRPO_FILTERED,
                _alpha(256.0),
                LENS,
            ),
            seeds=(0, 1, 2, 3, 4),
            overrides=(UNSEEN_EVAL,),
            config="testbed:signs",
            results="results/signs/negative",
            in_overview=False,  # its held-out levels 3-5 are not the other signs studies' levels 1-5
        ),
        _compute("hard", ", levels: [5]", 1_500_000),
        _compute("default", "", 1_000_000),
        Study(
            # seed 1 of the follow-up again, from the committed warm start: the follow-up's seed-0 runs
            # and first GRPO seed-1 run started from an earlier copy of it (results/smollm2/chain_sum/lr5e-5)
            "smollm2-lr5e-5",
            "SmolLM2-135M on chain sums at lr 5e-5 (post hoc follow-up): LENS against GRPO, seed 1",
            (GRPO, LENS),
            seeds=(1,),
            overrides=SMOLLM2_LR5E5,
            config="configs/smollm2/rl_chain_sum.yaml",
            results="results/smollm2/chain_sum/lr5e-5",
            in_overview=False,
        ),
        Study(
            "smollm2-powered",
            "SmolLM2-135M on chain sums at lr 5e-5: does LENS beat GRPO, with the seeds to decide? (pre-registered)",
            # the order is the plan's priority (results/smollm2/chain_sum/powered/PLAN.md)
            (GRPO, LENS, GRPO_FILTERED),
            seeds=(2, 3, 4, 5, 6, 7),
            overrides=(*SMOLLM2_LR5E5, "run.eval_every=0", "run.diagnostic_every=10"),
            config="configs/smollm2/rl_chain_sum.yaml",
            results="results/smollm2/chain_sum/powered",
            in_overview=False,
        ),
        _signs(
            "long",
            "Does LENS beat GRPO when both train three times as long?",
            (Arm("grpo", GRPO.overrides, steps_factor=3), Arm("lens", LENS.overrides, steps_factor=3)),
        ),
    )
}
